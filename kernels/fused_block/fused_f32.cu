// Fused Transformer-block kernels, fp32 activations.
#include "kernels/fused_block/fused_kernels.cuh"

namespace hylab::kernels {

void add_rms_norm_fwd_f32(const AddRmsNormParams& p, bool vec, cudaStream_t s) {
  fused::add_rms_norm_fwd<float>(p, vec, s);
}
void add_rms_norm_bwd_f32(const AddRmsNormParams& p, bool vec, cudaStream_t s) {
  fused::add_rms_norm_bwd<float>(p, vec, s);
}
void rope_qk_norm_fwd_f32(const RopeQkNormParams& p, cudaStream_t s) {
  fused::rope_qk_norm_fwd<float>(p, s);
}
void rope_qk_norm_bwd_f32(const RopeQkNormParams& p, cudaStream_t s) {
  fused::rope_qk_norm_bwd<float>(p, s);
}
void relu_square_fwd_f32(const ReluSquareParams& p, bool vec, cudaStream_t s) {
  fused::relu_square_fwd<float>(p, vec, s);
}
void relu_square_bwd_f32(const ReluSquareParams& p, bool vec, cudaStream_t s) {
  fused::relu_square_bwd<float>(p, vec, s);
}

}  // namespace hylab::kernels
