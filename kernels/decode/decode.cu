// Decode-step kernels (small: one .cu for both dtypes). Launch-bound by nature: the model
// captures the whole step in a CUDA graph.
#include <string>

#include "kernels/common/cuda_check.h"
#include "kernels/common/device_utils.cuh"
#include "kernels/decode/decode.h"

namespace hylab::kernels {
namespace {

// One thread per (b, e).
template <typename Elem, typename State>
__global__ void __launch_bounds__(128) conv_update_kernel(const ConvUpdateParams p) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= static_cast<int64_t>(p.batch) * p.dim) return;
  const int b = static_cast<int>(idx / p.dim), e = static_cast<int>(idx % p.dim);
  const int K = p.width;
  State* st = static_cast<State*>(p.conv_state) + idx * K;
  const float xv = to_float(static_cast<const Elem*>(p.x)[b * p.x_batch_stride + e]);
  float acc = p.bias != nullptr ? p.bias[e] : 0.f;
  for (int k = 0; k < K - 1; ++k) {
    const float s = to_float(st[k + 1]);
    st[k] = from_float<State>(s);
    acc = fmaf(p.weight[e * K + k], s, acc);
  }
  st[K - 1] = from_float<State>(xv);
  // Use x as stored (in the state's dtype), so the output matches what later steps see.
  acc = fmaf(p.weight[e * K + K - 1], to_float(st[K - 1]), acc);
  static_cast<Elem*>(p.out)[idx] = from_float<Elem>(p.silu ? silu(acc) : acc);
}

// Four states per thread; the tpc = N / 4 lanes of a channel combine <state, C> by shuffles.
template <typename Elem>
__global__ void __launch_bounds__(128) state_update_kernel(const StateUpdateParams p, int tpc) {
  const int64_t gid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t ch = gid / tpc;  // b * E + e
  const int g = static_cast<int>(gid % tpc);
  const bool active = ch < static_cast<int64_t>(p.batch) * p.dim;
  const int b = active ? static_cast<int>(ch / p.dim) : 0;
  const int e = active ? static_cast<int>(ch % p.dim) : 0;
  const int N = p.dstate;
  float yp = 0.f, xv = 0.f;
  if (active) {
    xv = to_float(static_cast<const Elem*>(p.x)[b * p.x_batch_stride + e]);
    float d = to_float(static_cast<const Elem*>(p.dt)[b * p.dt_batch_stride + e]);
    if (p.dt_bias != nullptr) d += p.dt_bias[e];
    if (p.dt_softplus) d = softplus(d);
    const Elem* Bm = static_cast<const Elem*>(p.Bm) + b * p.B_batch_stride;
    const Elem* Cm = static_cast<const Elem*>(p.Cm) + b * p.C_batch_stride;
    float4* st = reinterpret_cast<float4*>(p.ssm_state + ch * N + g * 4);
    float4 s = *st;
    float sv[4] = {s.x, s.y, s.z, s.w};
    const float du = d * xv;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int n = g * 4 + i;
      const float a = ex2_approx(d * (p.A[e * N + n] * kLog2e));
      sv[i] = fmaf(a, sv[i], du * to_float(Bm[n]));
      yp = fmaf(sv[i], to_float(Cm[n]), yp);
    }
    *st = make_float4(sv[0], sv[1], sv[2], sv[3]);
  }
  for (int m = tpc / 2; m > 0; m >>= 1) yp += __shfl_xor_sync(0xffffffffu, yp, m);
  if (active && g == 0) {
    float y = yp + (p.D != nullptr ? p.D[e] * xv : 0.f);
    if (p.z != nullptr) y *= silu(to_float(static_cast<const Elem*>(p.z)[b * p.z_batch_stride + e]));
    static_cast<Elem*>(p.out)[ch] = from_float<Elem>(y);
  }
}

}  // namespace

bool selective_state_update_supports_dstate(int n) { return n >= 4 && n <= 128 && n % 4 == 0 && ((n / 4) & (n / 4 - 1)) == 0; }

void causal_conv1d_update(const ConvUpdateParams& p, cudaStream_t stream) {
  if (p.batch <= 0 || p.dim <= 0) throw CudaError("causal_conv1d_update: B and E must be positive");
  if (p.width < 2 || p.width > 4) {
    throw CudaError("causal_conv1d_update: width K = " + std::to_string(p.width) +
                    " is not supported; allowed: 2, 3, 4");
  }
  const int64_t n = static_cast<int64_t>(p.batch) * p.dim;
  const unsigned blocks = static_cast<unsigned>((n + 127) / 128);
  if (p.dtype == DType::kFloat32) {
    if (p.state_dtype != DType::kFloat32) {
      throw CudaError("causal_conv1d_update: a float32 x needs a float32 conv_state");
    }
    conv_update_kernel<float, float><<<blocks, 128, 0, stream>>>(p);
  } else if (p.state_dtype == DType::kFloat32) {
    conv_update_kernel<bf16, float><<<blocks, 128, 0, stream>>>(p);
  } else {
    conv_update_kernel<bf16, bf16><<<blocks, 128, 0, stream>>>(p);
  }
  HYLAB_CUDA_CHECK_LAUNCH("causal_conv1d_update launch failed");
}

void selective_state_update(const StateUpdateParams& p, cudaStream_t stream) {
  if (p.batch <= 0 || p.dim <= 0) throw CudaError("selective_state_update: B and E must be positive");
  if (!selective_state_update_supports_dstate(p.dstate)) {
    throw CudaError("selective_state_update: N = " + std::to_string(p.dstate) +
                    " is not supported; allowed: 4 * a power of two, up to 128");
  }
  const int tpc = p.dstate / 4;
  const int64_t threads = static_cast<int64_t>(p.batch) * p.dim * tpc;
  const unsigned blocks = static_cast<unsigned>((threads + 127) / 128);
  if (p.dtype == DType::kFloat32) {
    state_update_kernel<float><<<blocks, 128, 0, stream>>>(p, tpc);
  } else {
    state_update_kernel<bf16><<<blocks, 128, 0, stream>>>(p, tpc);
  }
  HYLAB_CUDA_CHECK_LAUNCH("selective_state_update launch failed");
}

}  // namespace hylab::kernels
