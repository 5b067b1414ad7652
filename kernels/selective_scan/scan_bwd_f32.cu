// Selective scan backward, float activations (all supported N).
#include "kernels/selective_scan/scan_bwd.cuh"

namespace hylab::kernels {

void selective_scan_bwd_f32(const SelectiveScanParams& p, bool vec, cudaStream_t stream) {
  scan::scan_bwd_dispatch<float>(p, vec, stream);
}

}  // namespace hylab::kernels
