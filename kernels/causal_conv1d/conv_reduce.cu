// Host entry points of the causal conv1d, and the fixed-order reduction of the backward's
// per-block (dweight, dbias) partials.
#include <string>

#include "kernels/causal_conv1d/causal_conv1d.h"
#include "kernels/common/cuda_check.h"

namespace hylab::kernels {
namespace {

// One thread per (e, k), k <= K (k == K: dbias): sums ws[b][e][tc][k] over b, then tc.
__global__ void __launch_bounds__(256)
    conv_weight_reduce_kernel(const float* __restrict__ ws, int batch, int dim, int nT, int K,
                              float* __restrict__ dweight, float* __restrict__ dbias) {
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= dim * (K + 1)) return;
  const int e = idx / (K + 1), k = idx % (K + 1);
  float s = 0.f;
  for (int b = 0; b < batch; ++b) {
    const float* src = ws + ((static_cast<int64_t>(b) * dim + e) * nT) * (K + 1) + k;
    for (int tc = 0; tc < nT; ++tc) s += src[tc * (K + 1)];
  }
  if (k < K) {
    dweight[e * K + k] = s;
  } else if (dbias != nullptr) {
    dbias[e] = s;
  }
}

bool aligned(const void* p) { return p == nullptr || (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

bool vectorizable(const CausalConv1dParams& p) {
  const int64_t v = p.dtype == DType::kFloat32 ? 4 : 8;
  return p.seqlen % v == 0 && p.x_batch_stride % v == 0 && p.x_dim_stride % v == 0 &&
         aligned(p.x) && aligned(p.out) && aligned(p.dout) && aligned(p.dx);
}

void check(const CausalConv1dParams& p, const char* who) {
  const std::string w = who;
  if (p.batch <= 0 || p.dim <= 0 || p.seqlen <= 0) {
    throw CudaError(w + ": B, E, T must be positive");
  }
  if (p.width < 2 || p.width > 4) {
    throw CudaError(w + ": width K = " + std::to_string(p.width) + " is not supported; allowed: 2, 3, 4");
  }
  if (static_cast<int64_t>(p.batch) * p.dim > 2147483647LL) {
    throw CudaError(w + ": B * E too large for the grid");
  }
}

}  // namespace

void causal_conv1d_fwd(const CausalConv1dParams& p, cudaStream_t stream) {
  check(p, "causal_conv1d fwd");
  const bool vec = vectorizable(p);
  if (p.dtype == DType::kFloat32) {
    causal_conv1d_fwd_f32(p, vec, stream);
  } else {
    causal_conv1d_fwd_bf16(p, vec, stream);
  }
}

void causal_conv1d_bwd(const CausalConv1dParams& p, cudaStream_t stream) {
  check(p, "causal_conv1d bwd");
  if (p.dout == nullptr || p.dx == nullptr || p.dweight == nullptr || p.ws == nullptr) {
    throw CudaError("causal_conv1d bwd: dout, dx, dweight and the workspace must be given");
  }
  const bool vec = vectorizable(p);
  if (p.dtype == DType::kFloat32) {
    causal_conv1d_bwd_f32(p, vec, stream);
  } else {
    causal_conv1d_bwd_bf16(p, vec, stream);
  }
  const int n = p.dim * (p.width + 1);
  conv_weight_reduce_kernel<<<(n + 255) / 256, 256, 0, stream>>>(
      p.ws, p.batch, p.dim, causal_conv1d_tchunks(p.seqlen), p.width, p.dweight, p.dbias);
  HYLAB_CUDA_CHECK_LAUNCH("causal_conv1d bwd: weight-gradient reduction launch failed");
}

}  // namespace hylab::kernels
