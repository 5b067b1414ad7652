// Selective scan forward variant 1 (scan_fwd_v2.cuh), bf16 activations (all supported N).
#include "kernels/selective_scan/scan_fwd_v2.cuh"

namespace hylab::kernels {

void selective_scan_fwd_v2_bf16(const SelectiveScanParams& p, bool vec, cudaStream_t stream) {
  scan::scan_fwd_v2_dispatch<bf16>(p, vec, stream);
}

}  // namespace hylab::kernels
