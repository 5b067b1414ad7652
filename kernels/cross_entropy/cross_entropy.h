// Cross-entropy of soft-capped logits, fused: torch-free host entry points.
//
// For each row r of logits x (rows, width), over its first `vocab` columns:
//   z_i = cap * tanh(x_i / cap)        (z = x when cap <= 0)
//   lse_r = log sum_i exp(z_i)
//   loss_r = lse_r - z_{t_r}           (t_r = targets[r]; 0 where t_r == -1, ignored)
// Backward, given dloss_r:
//   dx_i = dloss_r * (exp(z_i - lse_r) - [i == t_r]) * (1 - (z_i / cap)^2),   0 for i >= vocab
//
// This is nanochat's `logits.float(); softcap * tanh(logits / softcap); F.cross_entropy` in
// two passes over the bf16 logits instead of about ten over fp32 copies, and without the
// fp32 (rows, vocab) tensors that chain keeps for backward (8.6 GB at 65k rows x 32k vocab).
// Accumulation is fp32; exp uses the MUFU form (relative error ~1e-6). A target outside
// [0, vocab) other than -1 gives a NaN loss for that row (the kernel cannot throw).
//
// logits: (rows, width) x's dtype (fp32 or bf16), columns stride 1, rows `row_stride` apart.
// targets: (rows) int64. loss, lse: (rows) fp32. dloss: (rows) fp32, dlogits: (rows, width)
// contiguous, x's dtype. Deterministic (each row is reduced by one block in a fixed order).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/common/dtype.h"

namespace hylab::kernels {

struct SoftcapCrossEntropyParams {
  DType dtype = DType::kFloat32;
  int64_t rows = 0;
  int width = 0, vocab = 0;  // columns in memory (>= vocab) and columns that count
  int64_t row_stride = 0;    // elements between rows of logits
  float softcap = 0.f;       // <= 0: no cap
  const void* logits = nullptr;
  const int64_t* targets = nullptr;
  float* loss = nullptr;   // fwd out
  float* lse = nullptr;    // fwd out, bwd in
  const float* dloss = nullptr;  // bwd in
  void* dlogits = nullptr;       // bwd out
};

void softcap_cross_entropy_fwd(const SoftcapCrossEntropyParams& p, cudaStream_t stream);
void softcap_cross_entropy_bwd(const SoftcapCrossEntropyParams& p, cudaStream_t stream);

// Per-dtype instantiations (one .cu each); vec = 16-byte accesses are allowed.
void softcap_cross_entropy_fwd_f32(const SoftcapCrossEntropyParams& p, bool vec, cudaStream_t s);
void softcap_cross_entropy_fwd_bf16(const SoftcapCrossEntropyParams& p, bool vec, cudaStream_t s);
void softcap_cross_entropy_bwd_f32(const SoftcapCrossEntropyParams& p, bool vec, cudaStream_t s);
void softcap_cross_entropy_bwd_bf16(const SoftcapCrossEntropyParams& p, bool vec, cudaStream_t s);

}  // namespace hylab::kernels
