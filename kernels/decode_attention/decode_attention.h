// Attention of one new query per sequence over a long KV cache (flash-decoding style): the
// cache length is split into `num_splits` chunks, one block per (split, batch, head)
// computes a partial softmax-weighted sum over its chunk (its own max and denominator), and a
// second kernel combines the splits. Memory-bound by design: every key and value of the
// cache is read once per query head group, in 16-byte loads.
//
//   q:      (B, H, Dh)           unit stride along Dh; q_batch_stride, q_head_stride
//   k, v:   (B, Hkv, max_len, Dh) unit stride along Dh; the same strides for k and v
//   pos:    int64 on the device, pos[b * pos_batch_stride]: the new token's position; the
//           query attends to keys [0, pos[b]] (pos_batch_stride 0: one position for all)
//   out:    (B, H, Dh) contiguous, q's dtype
// Query head h reads kv head h / (H / Hkv) (GQA/MQA). Scores are scaled by `scale`, the
// softmax and the accumulation are fp32. Positions are read on the device, so one launch
// (and one captured CUDA graph) serves every decode step; keys past max_len are never read.
// Head dims: 16, 32, 64, 128, 256. All pointers 16-byte aligned, strides multiples of 8.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/common/dtype.h"

namespace hylab::kernels {

struct DecodeAttentionParams {
  DType dtype = DType::kBFloat16;  // of q, k, v, out
  int batch = 0, heads = 0, kv_heads = 0, head_dim = 0;
  int64_t max_len = 0;
  const void* q = nullptr;
  int64_t q_batch_stride = 0, q_head_stride = 0;
  const void* k = nullptr;
  const void* v = nullptr;
  int64_t kv_batch_stride = 0, kv_head_stride = 0, kv_row_stride = 0;
  const int64_t* pos = nullptr;
  int64_t pos_batch_stride = 0;
  float scale = 1.f;
  int num_splits = 1;            // decode_attention_num_splits
  int64_t split_len = 0;         // keys per split: ceil(max_len / num_splits)
  float* partial_acc = nullptr;  // (num_splits, B*H, Dh) workspace
  float* partial_ml = nullptr;   // (num_splits, B*H, 2) workspace: running max (log2), sum
  void* out = nullptr;
};

bool decode_attention_supports_head_dim(int head_dim);

// Splits for a cache of max_len positions: enough blocks to fill the device several times
// over (about 32 per multiprocessor) but at least 64 keys per split. Depends on max_len, not on the
// current length, so a captured graph keeps its launch shape.
int decode_attention_num_splits(int batch, int heads, int64_t max_len);

// Validates the parameters (throws CudaError naming the field) and launches both kernels.
void decode_attention(const DecodeAttentionParams& p, cudaStream_t stream);

void decode_attention_f32(const DecodeAttentionParams& p, cudaStream_t stream);
void decode_attention_bf16(const DecodeAttentionParams& p, cudaStream_t stream);

}  // namespace hylab::kernels
