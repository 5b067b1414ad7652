// Split-scan pre-passes, bfloat16 activations (all supported N).
#include "kernels/selective_scan/scan_split.cuh"

namespace hylab::kernels {

void selective_scan_split_fwd_bf16(const SelectiveScanParams& p, bool vec, cudaStream_t stream) {
  scan::split_local_dispatch<bf16, false>(p, vec, stream);
}

void selective_scan_split_bwd_bf16(const SelectiveScanParams& p, bool vec, cudaStream_t stream) {
  scan::split_local_dispatch<bf16, true>(p, vec, stream);
}

}  // namespace hylab::kernels
