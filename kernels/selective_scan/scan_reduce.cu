// Fixed-order sums of the selective-scan backward's partials (deterministic: every output
// element is summed by one thread over its partials in index order: dB/dC over channel
// blocks, dA/dD/ddelta_bias over (split, batch)).
#include <algorithm>

#include "kernels/common/cuda_check.h"
#include "kernels/common/device_utils.cuh"
#include "kernels/selective_scan/selective_scan.h"

namespace hylab::kernels {
namespace {

// out[bb][j] = sum_k in[bb][k][j] for bb < batches, j < J; j < split goes to out0
// (bb * split + j), the rest to out1 (bb * (J - split) + j - split).
template <typename Out>
__global__ void __launch_bounds__(256)
    sum_partials_kernel(const float* __restrict__ in, int K, int64_t J, int64_t total,
                        int64_t split, Out* __restrict__ out0, Out* __restrict__ out1) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += step) {
    const int64_t bb = idx / J, j = idx % J;
    const float* src = in + bb * K * J + j;
    float s = 0.f;
#pragma unroll 4
    for (int k = 0; k < K; ++k) s += src[k * J];
    if (j < split) {
      out0[bb * split + j] = from_float<Out>(s);
    } else {
      out1[bb * (J - split) + (j - split)] = from_float<Out>(s);
    }
  }
}

template <typename Out>
void sum_partials(const float* in, int K, int64_t J, int batches, int64_t split, Out* out0,
                  Out* out1, cudaStream_t stream) {
  const int64_t total = static_cast<int64_t>(batches) * J;
  if (total == 0) return;
  const int64_t blocks = std::min<int64_t>((total + 255) / 256, 132 * 32);
  sum_partials_kernel<Out><<<static_cast<int>(blocks), 256, 0, stream>>>(in, K, J, total, split,
                                                                         out0, out1);
  HYLAB_CUDA_CHECK_LAUNCH("selective_scan bwd: partial-sum launch failed");
}

}  // namespace

void selective_scan_bwd_reduce(const SelectiveScanParams& p, cudaStream_t stream) {
  const int nblk = selective_scan_bwd_blocks_per_batch(p.dim, p.dstate);
  const int64_t NT = static_cast<int64_t>(p.dstate) * p.seqlen;
  if (p.dtype == DType::kFloat32) {
    sum_partials<float>(p.ws_dBC, nblk, 2 * NT, p.batch, NT, static_cast<float*>(p.dB),
                        static_cast<float*>(p.dC), stream);
  } else {
    sum_partials<bf16>(p.ws_dBC, nblk, 2 * NT, p.batch, NT, static_cast<bf16*>(p.dB),
                       static_cast<bf16*>(p.dC), stream);
  }
  // dA, dD, ddelta_bias: over the (split, batch) partials, split-major (S = 1 unsplit).
  const int parts = selective_scan_splits_of(p) * p.batch;
  const int64_t EN = static_cast<int64_t>(p.dim) * p.dstate;
  sum_partials<float>(p.ws_dA, parts, EN, 1, EN, p.dA, nullptr, stream);
  if (p.dD != nullptr) sum_partials<float>(p.ws_dD, parts, p.dim, 1, p.dim, p.dD, nullptr, stream);
  if (p.ddelta_bias != nullptr) {
    sum_partials<float>(p.ws_ddelta_bias, parts, p.dim, 1, p.dim, p.ddelta_bias, nullptr,
                        stream);
  }
}

}  // namespace hylab::kernels
