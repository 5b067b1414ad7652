// The split scan's carry pass (docs/KERNELS.md "Split scan"): turns the pre-pass's per-split
// local results into the states (forward) or adjoints (backward) each split starts from.
// One thread per (b, e, n), sequential over the S - 1 slots of ws_split (2, S - 1, B, E, N):
//   forward:  run = 0; for k = 0 .. S-2:  run = P_k run + x_k;  slot k := run = start of split k+1
//   backward: run = 0; for k = S-2 .. 0:  run = P_k run + g_k;  slot k := run = carry into split k
// (backward slot k holds split k+1's local carry and decay). Fixed order: deterministic.
#include <algorithm>

#include "kernels/common/cuda_check.h"
#include "kernels/selective_scan/selective_scan.h"

namespace hylab::kernels {
namespace {

__global__ void __launch_bounds__(256)
    split_carry_kernel(float* __restrict__ ws, int slots, int64_t ben, bool bwd) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const float* decay = ws + static_cast<int64_t>(slots) * ben;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < ben;
       i += step) {
    float run = 0.f;
    if (!bwd) {
      for (int k = 0; k < slots; ++k) {
        const int64_t idx = k * ben + i;
        run = fmaf(decay[idx], run, ws[idx]);
        ws[idx] = run;
      }
    } else {
      for (int k = slots - 1; k >= 0; --k) {
        const int64_t idx = k * ben + i;
        run = fmaf(decay[idx], run, ws[idx]);
        ws[idx] = run;
      }
    }
  }
}

}  // namespace

void selective_scan_split_carry(const SelectiveScanParams& p, bool bwd, cudaStream_t stream) {
  const int splits = selective_scan_splits_of(p);
  if (splits <= 1) return;
  const int64_t ben = static_cast<int64_t>(p.batch) * p.dim * p.dstate;
  const int64_t blocks = std::min<int64_t>((ben + 255) / 256, 132 * 32);
  split_carry_kernel<<<static_cast<int>(blocks), 256, 0, stream>>>(p.ws_split, splits - 1, ben,
                                                                   bwd);
  HYLAB_CUDA_CHECK_LAUNCH("selective_scan split carry launch failed");
}

}  // namespace hylab::kernels
