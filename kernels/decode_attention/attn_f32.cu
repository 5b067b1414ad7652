// Decode attention, fp32 q/k/v.
#include "kernels/decode_attention/attn_kernels.cuh"

namespace hylab::kernels {

void decode_attention_f32(const DecodeAttentionParams& p, cudaStream_t s) {
  attn::launch<float>(p, s);
}

}  // namespace hylab::kernels
