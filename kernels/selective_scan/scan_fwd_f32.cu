// Selective scan forward, float activations (all supported N).
#include "kernels/selective_scan/scan_fwd.cuh"

namespace hylab::kernels {

void selective_scan_fwd_f32(const SelectiveScanParams& p, bool vec, cudaStream_t stream) {
  scan::scan_fwd_dispatch<float>(p, vec, stream);
}

}  // namespace hylab::kernels
