// Selective scan backward variants 1 and 2 (scan_bwd_v2.cuh), bf16 activations (all supported N).
#include "kernels/selective_scan/scan_bwd_v2.cuh"

namespace hylab::kernels {

void selective_scan_bwd_v2_bf16(const SelectiveScanParams& p, int variant, bool vec,
                               cudaStream_t stream) {
  scan::scan_bwd_v2_dispatch<bf16>(p, variant, vec, stream);
}

}  // namespace hylab::kernels
