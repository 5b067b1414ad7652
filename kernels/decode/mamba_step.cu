// The fused Mamba decode step (see mamba_step.h): conv update + x_proj, then dt_proj + state
// update + conv-state roll. Both dtypes in this one .cu (the kernels are small).
#include <string>

#include "kernels/common/cuda_check.h"
#include "kernels/common/device_utils.cuh"
#include "kernels/common/launch.cuh"
#include "kernels/decode/decode.h"
#include "kernels/decode/mamba_step.h"

namespace hylab::kernels {
namespace {

constexpr int kWarps = 8;         // kernel 1: one x_proj column per warp
constexpr int kPrefetch = 8;      // kernel 1: 16-byte weight chunks a lane loads before the conv
constexpr int kMaxRows = 8;       // kernel 1: batch rows per block (more go to blockIdx.y)
constexpr int kConvBatch = 8;     // kernel 1: conv channels a thread loads at once
constexpr int kDtBatch = 16;      // kernel 2: dt_proj products a lane loads at once
constexpr int kStateThreads = 128;
constexpr int64_t kMaxSmem = 200 * 1024;  // H100/H200 allow 227 KB per block

// The VecWidth<T> elements of a 16-byte chunk as floats, from registers (a reinterpret_cast
// of the chunk's address would put it on the stack).
__device__ __forceinline__ void unpack(const uint4& raw, float (&out)[4]) {
  out[0] = __uint_as_float(raw.x), out[1] = __uint_as_float(raw.y);
  out[2] = __uint_as_float(raw.z), out[3] = __uint_as_float(raw.w);
}
__device__ __forceinline__ void unpack(const uint4& raw, float (&out)[8]) {
  const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {  // bf16 -> fp32 is a 16-bit shift, exactly
    out[2 * i] = __uint_as_float(w[i] << 16);
    out[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}

// Rows a kernel-1 block holds: B rounded up to a power of two, at most 8.
int rows_per_block(int batch) {
  int r = 1;
  while (r < batch && r < kMaxRows) r *= 2;
  return r;
}

// Kernel 1. Block (bx, by) handles rows [by * kRows, by * kRows + kRows) and x_proj columns
// [bx * 8, bx * 8 + 8). Phase 1: the conv update of all E channels of its rows (the same
// arithmetic as decode.cu's conv_update_kernel, so x_conv is bit-identical to the unfused
// op) into shared memory, rounded to Elem; rows past B are zeros. Phase 2: warp w dots
// column j's weight row with each row of x_conv (16-byte chunks when E is a multiple of
// the vector width, else element by element), lane-strided fp32 sums then a shuffle tree.
// The first kPrefetch weight chunks are loaded before phase 1 so their latency overlaps it.
template <typename Elem, typename State, int kRows>
__global__ void __launch_bounds__(32 * kWarps, 1)
    conv_xproj_kernel(const MambaStepParams p, bool vec) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  Elem* s_x = reinterpret_cast<Elem*>(smem_raw);  // (kRows, E)
  const int E = p.dim, K = p.width, J = p.dt_rank + 2 * p.dstate;
  const int b0 = blockIdx.y * kRows;
  const int rows = min(kRows, p.batch - b0);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int j = blockIdx.x * kWarps + warp;
  const bool active = j < J;
  const Elem* __restrict__ wrow =
      static_cast<const Elem*>(p.x_proj_weight) + static_cast<int64_t>(active ? j : 0) * E;
  constexpr int kVec = VecWidth<Elem>::kValue;
  const int chunks = vec ? E / kVec : 0;

  launch_dependents();  // kernel 2 may take the idle SMs and load its states meanwhile
  uint4 wpre[kPrefetch];
#pragma unroll
  for (int i = 0; i < kPrefetch; ++i) {
    const int c = lane + 32 * i;
    wpre[i] = (active && c < chunks) ? __ldg(reinterpret_cast<const uint4*>(wrow) + c)
                                     : make_uint4(0, 0, 0, 0);
  }

  grid_dependency_wait();  // x is in_proj's output; the weights above did not need it

  // Phase 1: conv update (conv_state is read, never written: kernel 2 rolls it). A thread
  // issues the loads of kConvBatch channels before computing any of them, so the block pays
  // one round trip to L2 per 256 * kConvBatch channels (E = 1536 at batch 1: one) instead
  // of one per channel it handles.
  const Elem* __restrict__ xg = static_cast<const Elem*>(p.x);
  const State* __restrict__ cs = static_cast<const State*>(p.conv_state);
  const float* __restrict__ cw = p.conv_weight;
  Elem* __restrict__ xc_out = static_cast<Elem*>(p.x_conv);
  const int n_real = rows * E;  // rows past B are zeros (below)
  for (int base = threadIdx.x; base < n_real; base += blockDim.x * kConvBatch) {
    float xin[kConvBatch], cb[kConvBatch], w[kConvBatch][3], w_last[kConvBatch], sv[kConvBatch][3];
#pragma unroll
    for (int i = 0; i < kConvBatch; ++i) {
      const int t = base + i * blockDim.x;
      if (t >= n_real) continue;
      const int m = t / E, e = t - m * E;
      const int b = b0 + m;
      const State* st = cs + (static_cast<int64_t>(b) * E + e) * K;
      xin[i] = to_float(__ldg(xg + b * p.x_batch_stride + e));
      cb[i] = p.conv_bias != nullptr ? __ldg(p.conv_bias + e) : 0.f;
#pragma unroll
      for (int k = 0; k < 3; ++k) {
        w[i][k] = k < K - 1 ? __ldg(cw + e * K + k) : 0.f;
        sv[i][k] = k < K - 1 ? to_float(st[k + 1]) : 0.f;
      }
      w_last[i] = __ldg(cw + e * K + K - 1);
    }
#pragma unroll
    for (int i = 0; i < kConvBatch; ++i) {
      const int t = base + i * blockDim.x;
      if (t >= n_real) continue;
      // decode.cu's conv_update_kernel, term for term: bias, the K-1 older inputs in order,
      // then x as the state stores it.
      float acc = cb[i];
#pragma unroll
      for (int k = 0; k < 3; ++k) {
        if (k < K - 1) acc = fmaf(w[i][k], sv[i][k], acc);
      }
      acc = fmaf(w_last[i], to_float(from_float<State>(xin[i])), acc);
      const Elem out = from_float<Elem>(silu(acc));
      s_x[t] = out;
      const int64_t flat = static_cast<int64_t>(b0) * E + t;
      if (flat % gridDim.x == blockIdx.x) xc_out[flat] = out;  // the blocks share the writes
    }
  }
  for (int t = n_real + threadIdx.x; t < kRows * E; t += blockDim.x) s_x[t] = from_float<Elem>(0.f);
  __syncthreads();

  // Phase 2: x_dbl[b, j] = W_x[j] . x_conv[b].
  float acc[kRows];
#pragma unroll
  for (int m = 0; m < kRows; ++m) acc[m] = 0.f;
  if (active) {
    if (vec) {
      auto dot_chunk = [&](const uint4& raw, int c) {
        float wv[kVec];
        unpack(raw, wv);
#pragma unroll
        for (int m = 0; m < kRows; ++m) {
          float xv[kVec];
          unpack(*reinterpret_cast<const uint4*>(s_x + m * E + c * kVec), xv);
#pragma unroll
          for (int i = 0; i < kVec; ++i) acc[m] = fmaf(wv[i], xv[i], acc[m]);
        }
      };
#pragma unroll
      for (int i = 0; i < kPrefetch; ++i) {
        const int c = lane + 32 * i;
        if (c < chunks) dot_chunk(wpre[i], c);
      }
      for (int c = lane + 32 * kPrefetch; c < chunks; c += 32) {
        dot_chunk(__ldg(reinterpret_cast<const uint4*>(wrow) + c), c);
      }
    } else {
      for (int e = lane; e < E; e += 32) {
        const float w = to_float(__ldg(wrow + e));
#pragma unroll
        for (int m = 0; m < kRows; ++m) acc[m] = fmaf(w, to_float(s_x[m * E + e]), acc[m]);
      }
    }
  }
  Elem* __restrict__ xdbl = static_cast<Elem*>(p.x_dbl);
#pragma unroll
  for (int m = 0; m < kRows; ++m) {
    const float s = group_sum<32>(acc[m]);
    if (active && lane == m && m < rows) xdbl[static_cast<int64_t>(b0 + m) * J + j] = from_float<Elem>(s);
  }
}

// Kernel 2: decode.cu's state_update_kernel with delta computed here from x_dbl's dt_low
// and dt_proj's weight, x = x_conv, Bm/Cm read from x_dbl, and the conv-state roll.
template <typename Elem, typename State>
__global__ void __launch_bounds__(kStateThreads) state_kernel(const MambaStepParams p, int tpc) {
  const int64_t gid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t ch = gid / tpc;  // b * E + e
  const int g = static_cast<int>(gid % tpc);
  const bool active = ch < static_cast<int64_t>(p.batch) * p.dim;
  const int b = active ? static_cast<int>(ch / p.dim) : 0;
  const int e = active ? static_cast<int>(ch % p.dim) : 0;
  const int N = p.dstate, R = p.dt_rank, J = R + 2 * N;
  const Elem* __restrict__ xdbl = static_cast<const Elem*>(p.x_dbl) + static_cast<int64_t>(b) * J;
  // out_proj's GEMV may start and load its weights now (it reads nothing else before it
  // waits for this kernel; kernels/common/launch.cuh).
  launch_dependents();

  // Every load first: they do not depend on each other, so they share one round trip to L2
  // (the unfused kernels each paid their own). Those that do not depend on kernel 1 (or on
  // in_proj: x and z) come before grid_dependency_wait(), so with overlap_launches they run
  // while kernel 1 does.
  const int K = p.width;
  const Elem* __restrict__ wr =
      static_cast<const Elem*>(p.dt_proj_weight) + static_cast<int64_t>(active ? e : 0) * R;
  float w_first[kDtBatch];  // the first kDtBatch dt_proj weights of this lane
#pragma unroll
  for (int i = 0; i < kDtBatch; ++i) {
    const int r = g + i * tpc;
    w_first[i] = (active && r < R) ? to_float(__ldg(wr + r)) : 0.f;
  }
  State* cst = static_cast<State*>(p.conv_state) + (active ? ch : 0) * K;
  float4 s = make_float4(0.f, 0.f, 0.f, 0.f);
  float a_n[4] = {0.f, 0.f, 0.f, 0.f}, b_n[4] = {0.f, 0.f, 0.f, 0.f}, c_n[4] = {0.f, 0.f, 0.f, 0.f};
  float xv = 0.f, xin = 0.f, zv = 0.f, d_skip = 0.f, bias = 0.f;
  float roll[3] = {0.f, 0.f, 0.f};  // conv_state[1..K-1], which move down one place
  if (active) {
    s = *reinterpret_cast<const float4*>(p.ssm_state + ch * N + g * 4);
#pragma unroll
    for (int i = 0; i < 4; ++i) a_n[i] = p.A[e * N + g * 4 + i];
    if (p.dt_bias != nullptr) bias = p.dt_bias[e];
    if (g == 0) {
#pragma unroll
      for (int k = 0; k < 3; ++k) {
        if (k < K - 1) roll[k] = to_float(cst[k + 1]);
      }
      if (p.D != nullptr) d_skip = p.D[e];
    }
  }
  grid_dependency_wait();  // x_conv, x_dbl (kernel 1), x, z (in_proj, before kernel 1)
  if (active) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int n = g * 4 + i;
      b_n[i] = to_float(xdbl[R + n]);
      c_n[i] = to_float(xdbl[R + N + n]);
    }
    xv = to_float(static_cast<const Elem*>(p.x_conv)[ch]);
    if (g == 0) {
      xin = to_float(static_cast<const Elem*>(p.x)[b * p.x_batch_stride + e]);
      if (p.z != nullptr) zv = to_float(static_cast<const Elem*>(p.z)[b * p.z_batch_stride + e]);
    }
  }

  // dt_proj: the channel's tpc lanes take every tpc-th of the R products (adjacent lanes read
  // adjacent weights), kDtBatch loads in flight per lane, then a shuffle tree over the group.
  float dp = 0.f;
  if (active) {
    for (int r0 = g; r0 < R; r0 += kDtBatch * tpc) {
      float wv[kDtBatch], lv[kDtBatch];
#pragma unroll
      for (int i = 0; i < kDtBatch; ++i) {
        const int r = r0 + i * tpc;
        wv[i] = r0 == g ? w_first[i] : (r < R ? to_float(__ldg(wr + r)) : 0.f);
        lv[i] = r < R ? to_float(xdbl[r]) : 0.f;
      }
#pragma unroll
      for (int i = 0; i < kDtBatch; ++i) {
        if (r0 + i * tpc < R) dp = fmaf(wv[i], lv[i], dp);
      }
    }
  }
  for (int m = tpc / 2; m > 0; m >>= 1) dp += __shfl_xor_sync(0xffffffffu, dp, m);

  float yp = 0.f;
  if (active) {
    // dt_proj's output as the unfused op returns it (rounded to the activation dtype), then
    // the bias and softplus in fp32 as the state update does.
    float d = to_float(from_float<Elem>(dp));
    if (p.dt_bias != nullptr) d += bias;
    d = softplus(d);
    float sv[4] = {s.x, s.y, s.z, s.w};
    const float du = d * xv;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float a = ex2_approx(d * (a_n[i] * kLog2e));
      sv[i] = fmaf(a, sv[i], du * b_n[i]);
      yp = fmaf(sv[i], c_n[i], yp);
    }
    *reinterpret_cast<float4*>(p.ssm_state + ch * N + g * 4) = make_float4(sv[0], sv[1], sv[2], sv[3]);
    if (g == 0) {  // the conv-state roll kernel 1 left for here
#pragma unroll
      for (int k = 0; k < 3; ++k) {
        if (k < K - 1) cst[k] = from_float<State>(roll[k]);
      }
      cst[K - 1] = from_float<State>(xin);
    }
  }
  for (int m = tpc / 2; m > 0; m >>= 1) yp += __shfl_xor_sync(0xffffffffu, yp, m);
  if (active && g == 0) {
    float y = yp + (p.D != nullptr ? d_skip * xv : 0.f);
    if (p.z != nullptr) y *= silu(zv);
    static_cast<Elem*>(p.out)[ch] = from_float<Elem>(y);
  }
}

template <typename Elem, typename State, int kRows>
void launch_conv_xproj(const MambaStepParams& p, bool vec, cudaStream_t stream) {
  const int J = p.dt_rank + 2 * p.dstate;
  const dim3 grid((J + kWarps - 1) / kWarps, (p.batch + kRows - 1) / kRows);
  const int64_t smem = static_cast<int64_t>(kRows) * p.dim * sizeof(Elem);
  auto kernel = conv_xproj_kernel<Elem, State, kRows>;
  if (smem > 48 * 1024) {
    HYLAB_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(smem)),
                     "mamba_step: cannot raise the conv+x_proj kernel's shared memory");
  }
  launch_kernel(kernel, grid, dim3(32 * kWarps), static_cast<size_t>(smem), stream,
                p.overlap_launches, p, vec);
  HYLAB_CUDA_CHECK_LAUNCH("mamba_step conv+x_proj launch failed");
}

template <typename Elem, typename State>
void launch(const MambaStepParams& p, cudaStream_t stream) {
  constexpr int kVec = VecWidth<Elem>::kValue;
  const bool vec = p.dim % kVec == 0 && is_aligned16(p.x_proj_weight);
  switch (rows_per_block(p.batch)) {
    case 1:
      launch_conv_xproj<Elem, State, 1>(p, vec, stream);
      break;
    case 2:
      launch_conv_xproj<Elem, State, 2>(p, vec, stream);
      break;
    case 4:
      launch_conv_xproj<Elem, State, 4>(p, vec, stream);
      break;
    default:
      launch_conv_xproj<Elem, State, 8>(p, vec, stream);
      break;
  }
  const int tpc = p.dstate / 4;
  const int64_t threads = static_cast<int64_t>(p.batch) * p.dim * tpc;
  const auto blocks = static_cast<unsigned>((threads + kStateThreads - 1) / kStateThreads);
  launch_kernel(state_kernel<Elem, State>, dim3(blocks), dim3(kStateThreads), 0, stream,
                p.overlap_launches, p, tpc);
  HYLAB_CUDA_CHECK_LAUNCH("mamba_step state update launch failed");
}

}  // namespace

int64_t mamba_step_smem_bytes(DType dtype, int batch, int dim) {
  return static_cast<int64_t>(rows_per_block(batch)) * dim * dtype_size(dtype);
}

bool mamba_step_supports(DType dtype, int batch, int dim, int dstate, int width, int dt_rank) {
  return batch >= 1 && dim >= 1 && dt_rank >= 1 && width >= 2 && width <= 4 &&
         selective_state_update_supports_dstate(dstate) &&
         mamba_step_smem_bytes(dtype, batch, dim) <= kMaxSmem &&
         static_cast<int64_t>(batch) * dim * (dstate / 4) < (int64_t{1} << 31);
}

void mamba_step(const MambaStepParams& p, cudaStream_t stream) {
  const std::string w = "mamba_step";
  if (p.batch <= 0 || p.dim <= 0 || p.dt_rank <= 0) {
    throw CudaError(w + ": B, E and R must be positive (got B " + std::to_string(p.batch) +
                    ", E " + std::to_string(p.dim) + ", R " + std::to_string(p.dt_rank) + ")");
  }
  if (p.width < 2 || p.width > 4) {
    throw CudaError(w + ": width K = " + std::to_string(p.width) +
                    " is not supported; allowed: 2, 3, 4");
  }
  if (!selective_state_update_supports_dstate(p.dstate)) {
    throw CudaError(w + ": N = " + std::to_string(p.dstate) +
                    " is not supported; allowed: 4 * a power of two, up to 128");
  }
  if (!mamba_step_supports(p.dtype, p.batch, p.dim, p.dstate, p.width, p.dt_rank)) {
    throw CudaError(w + ": B " + std::to_string(p.batch) + " x E " + std::to_string(p.dim) +
                    " needs " + std::to_string(mamba_step_smem_bytes(p.dtype, p.batch, p.dim)) +
                    " bytes of shared memory, more than " + std::to_string(kMaxSmem));
  }
  if (p.x == nullptr || p.conv_state == nullptr || p.conv_weight == nullptr ||
      p.x_proj_weight == nullptr || p.dt_proj_weight == nullptr || p.A == nullptr ||
      p.ssm_state == nullptr || p.x_conv == nullptr || p.x_dbl == nullptr || p.out == nullptr) {
    throw CudaError(w + ": x, conv_state, conv_weight, x_proj_weight, dt_proj_weight, A, "
                        "ssm_state, x_conv, x_dbl and out must be given");
  }
  if ((reinterpret_cast<uintptr_t>(p.ssm_state) & 15u) != 0) {
    throw CudaError(w + ": ssm_state must be 16-byte aligned");
  }
  if (p.dtype == DType::kFloat32) {
    if (p.state_dtype != DType::kFloat32) {
      throw CudaError(w + ": a float32 x needs a float32 conv_state");
    }
    launch<float, float>(p, stream);
  } else if (p.state_dtype == DType::kFloat32) {
    launch<bf16, float>(p, stream);
  } else {
    launch<bf16, bf16>(p, stream);
  }
}

}  // namespace hylab::kernels
