// Selective scan backward, bf16 activations (all supported N).
#include "kernels/selective_scan/scan_bwd.cuh"

namespace hylab::kernels {

void selective_scan_bwd_bf16(const SelectiveScanParams& p, bool vec, cudaStream_t stream) {
  scan::scan_bwd_dispatch<bf16>(p, vec, stream);
}

}  // namespace hylab::kernels
