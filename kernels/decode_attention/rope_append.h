// The decode step's attention prologue in one kernel: for each sequence b and each of the
// H + 2 Hkv head rows of its fused q/k/v projection,
//   q, k heads: y = RMSNorm(rotate(x)), rotate(x) = x * cos_full + swap_halves(x) * sin_full
//               (cos_full = [cos, cos], sin_full = [sin, -sin] of the position, x's dtype),
//               each product and the sum rounded to x's dtype as LibTorch's element-wise ops
//               round them, the norm in fp32 (eps as compat::rms_norm's) -> q_out or the K cache
//   v heads:    copied into the V cache
// at cache row pos[0] (read on the device). Replaces seven small kernels per layer (roll,
// two products, a sum, the norm, two index_copy_) with one; model/ops.h's
// decode_rope_append has the unfused reference.
//
//   qkv: (B, (H + 2 Hkv) * Dh), batch stride qkv_batch_stride, unit stride within a row
//   q_out: (B, H, Dh) contiguous; k_cache, v_cache: (B, Hkv, max_len, Dh) strides as given
// Head dims up to 256, even.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/common/dtype.h"

namespace hylab::kernels {

struct RopeAppendParams {
  DType dtype = DType::kBFloat16;  // of qkv, the tables, q_out and the caches
  int batch = 0, heads = 0, kv_heads = 0, head_dim = 0;
  int64_t max_len = 0;
  const void* qkv = nullptr;
  int64_t qkv_batch_stride = 0;
  const void* cos_full = nullptr;  // (Dh)
  const void* sin_full = nullptr;  // (Dh)
  const int64_t* pos = nullptr;    // (1)
  float eps = 0.f;
  void* q_out = nullptr;
  void* k_cache = nullptr;
  void* v_cache = nullptr;
  int64_t kv_batch_stride = 0, kv_head_stride = 0, kv_row_stride = 0;
};

bool rope_append_supports_head_dim(int head_dim);

// Validates (throws CudaError naming the field) and launches.
void rope_append(const RopeAppendParams& p, cudaStream_t stream);

}  // namespace hylab::kernels
