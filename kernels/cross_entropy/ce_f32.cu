// Soft-capped cross-entropy, fp32 logits.
#include "kernels/cross_entropy/ce_kernels.cuh"

namespace hylab::kernels {

void softcap_cross_entropy_fwd_f32(const SoftcapCrossEntropyParams& p, bool vec, cudaStream_t s) {
  ce::fwd<float>(p, vec, s);
}
void softcap_cross_entropy_bwd_f32(const SoftcapCrossEntropyParams& p, bool vec, cudaStream_t s) {
  ce::bwd<float>(p, vec, s);
}

}  // namespace hylab::kernels
