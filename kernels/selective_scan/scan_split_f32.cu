// Split-scan pre-passes, float activations (all supported N).
#include "kernels/selective_scan/scan_split.cuh"

namespace hylab::kernels {

void selective_scan_split_fwd_f32(const SelectiveScanParams& p, bool vec, cudaStream_t stream) {
  scan::split_local_dispatch<float, false>(p, vec, stream);
}

void selective_scan_split_bwd_f32(const SelectiveScanParams& p, bool vec, cudaStream_t stream) {
  scan::split_local_dispatch<float, true>(p, vec, stream);
}

}  // namespace hylab::kernels
