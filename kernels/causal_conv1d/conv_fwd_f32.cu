// Causal conv1d fwd, float activations, widths 2-4.
#include "kernels/causal_conv1d/conv_kernels.cuh"

namespace hylab::kernels {

void causal_conv1d_fwd_f32(const CausalConv1dParams& p, bool vec, cudaStream_t stream) {
  conv::conv_fwd_dispatch<float>(p, vec, stream);
}

}  // namespace hylab::kernels
