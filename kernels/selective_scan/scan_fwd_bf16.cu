// Selective scan forward, bf16 activations (all supported N).
#include "kernels/selective_scan/scan_fwd.cuh"

namespace hylab::kernels {

void selective_scan_fwd_bf16(const SelectiveScanParams& p, bool vec, cudaStream_t stream) {
  scan::scan_fwd_dispatch<bf16>(p, vec, stream);
}

}  // namespace hylab::kernels
