// Soft-capped cross-entropy, bf16 logits.
#include "kernels/cross_entropy/ce_kernels.cuh"

namespace hylab::kernels {

void softcap_cross_entropy_fwd_bf16(const SoftcapCrossEntropyParams& p, bool vec, cudaStream_t s) {
  ce::fwd<bf16>(p, vec, s);
}
void softcap_cross_entropy_bwd_bf16(const SoftcapCrossEntropyParams& p, bool vec, cudaStream_t s) {
  ce::bwd<bf16>(p, vec, s);
}

}  // namespace hylab::kernels
