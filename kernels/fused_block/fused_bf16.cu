// Fused Transformer-block kernels, bf16 activations.
#include "kernels/fused_block/fused_kernels.cuh"

namespace hylab::kernels {

void add_rms_norm_fwd_bf16(const AddRmsNormParams& p, bool vec, cudaStream_t s) {
  fused::add_rms_norm_fwd<bf16>(p, vec, s);
}
void add_rms_norm_bwd_bf16(const AddRmsNormParams& p, bool vec, cudaStream_t s) {
  fused::add_rms_norm_bwd<bf16>(p, vec, s);
}
void rope_qk_norm_fwd_bf16(const RopeQkNormParams& p, cudaStream_t s) {
  fused::rope_qk_norm_fwd<bf16>(p, s);
}
void rope_qk_norm_bwd_bf16(const RopeQkNormParams& p, cudaStream_t s) {
  fused::rope_qk_norm_bwd<bf16>(p, s);
}
void relu_square_fwd_bf16(const ReluSquareParams& p, bool vec, cudaStream_t s) {
  fused::relu_square_fwd<bf16>(p, vec, s);
}
void relu_square_bwd_bf16(const ReluSquareParams& p, bool vec, cudaStream_t s) {
  fused::relu_square_bwd<bf16>(p, vec, s);
}

}  // namespace hylab::kernels
