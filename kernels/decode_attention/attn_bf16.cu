// Decode attention, bf16 q/k/v.
#include "kernels/decode_attention/attn_kernels.cuh"

namespace hylab::kernels {

void decode_attention_bf16(const DecodeAttentionParams& p, cudaStream_t s) {
  attn::launch<bf16>(p, s);
}

}  // namespace hylab::kernels
