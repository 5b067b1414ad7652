// Fused element-wise kernels of the Transformer block (issue 11): torch-free host entry
// points. Every kernel reads and writes contiguous tensors of one activation dtype (fp32 or
// bf16) and accumulates in fp32; every reduction has a fixed order (deterministic).
//
// RMSNorm with the residual add (one block per row of `cols` elements):
//   forward   s = x + branch (rounded to the dtype; no add when branch is null: s = x)
//             rstd = 1 / sqrt(mean(s^2) + eps)   (fp32, saved)
//             y = s * rstd                       (rounded to the dtype)
//   backward  from the output, not the input (y is saved by the next matmul anyway):
//             dx = rstd * (dy - y * mean(dy * y)) + dres
//             (exact: s = y / rstd), dres = the gradient reaching s along the residual
//             stream (null: none). dx is the gradient of both x and branch.
//
// Rotary + QK-norm (one warp per head vector of `head_dim` elements, rows = B*T*H vectors
// of a (B, T, H, Dh) tensor, token t = (row / heads) % seqlen):
//   forward   r1 = x1 c + x2 s,  r2 = x2 c - x1 s   (x1, x2 the halves; c, s = cos/sin[t])
//             rstd = 1 / sqrt(mean(r^2) + eps),  y = r * rstd  (one rounding, at the end)
//   backward  dr = rstd * (dy - y * mean(dy * y));  dx1 = dr1 c - dr2 s,  dx2 = dr1 s + dr2 c
// The output keeps the (B, T, H, Dh) layout: its (B, H, T, Dh) transposed view is what
// scaled_dot_product_attention's flash path reads without a copy.
//
// ReLU^2 (element-wise):
//   forward   h = relu(u)^2
//   backward  du = 2 dh sqrt(h)  (= 2 dh relu(u); from the output, which the next matmul
//             saves anyway, so u need not be kept: relative error <= 2^-9 in bf16)
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/common/dtype.h"

namespace hylab::kernels {

struct AddRmsNormParams {
  DType dtype = DType::kFloat32;
  int64_t rows = 0;
  int cols = 0;
  float eps = 0.f;
  // forward
  const void* x = nullptr;       // (rows, cols)
  const void* branch = nullptr;  // (rows, cols) or null (plain RMSNorm)
  void* sum = nullptr;           // (rows, cols) out: x + branch; null when branch is null
  void* y = nullptr;             // (rows, cols) out (fwd), in (bwd)
  float* rstd = nullptr;         // (rows) out (fwd), in (bwd)
  // backward
  const void* dy = nullptr;    // (rows, cols)
  const void* dres = nullptr;  // (rows, cols) or null
  void* dx = nullptr;          // (rows, cols) out
};

struct RopeQkNormParams {
  DType dtype = DType::kFloat32;
  int64_t rows = 0;                         // B * T * heads head vectors
  int heads = 0, seqlen = 0, head_dim = 0;  // head_dim even, <= kRopeMaxHeadDim
  float eps = 0.f;
  const float* cos = nullptr;  // (seqlen, head_dim / 2) fp32, contiguous
  const float* sin = nullptr;
  // forward
  const void* x = nullptr;  // (rows, head_dim)
  void* y = nullptr;        // (rows, head_dim) out (fwd), in (bwd)
  float* rstd = nullptr;    // (rows) out (fwd), in (bwd)
  // backward
  const void* dy = nullptr;  // (rows, head_dim)
  void* dx = nullptr;        // (rows, head_dim) out
};
constexpr int kRopeMaxHeadDim = 256;

struct ReluSquareParams {
  DType dtype = DType::kFloat32;
  int64_t n = 0;
  const void* u = nullptr;   // fwd in
  void* h = nullptr;         // fwd out, bwd in
  const void* dh = nullptr;  // bwd in
  void* du = nullptr;        // bwd out
};

// Validate (std::invalid_argument naming the field) and launch on `stream`.
void add_rms_norm_fwd(const AddRmsNormParams& p, cudaStream_t stream);
void add_rms_norm_bwd(const AddRmsNormParams& p, cudaStream_t stream);
void rope_qk_norm_fwd(const RopeQkNormParams& p, cudaStream_t stream);
void rope_qk_norm_bwd(const RopeQkNormParams& p, cudaStream_t stream);
void relu_square_fwd(const ReluSquareParams& p, cudaStream_t stream);
void relu_square_bwd(const ReluSquareParams& p, cudaStream_t stream);

// Per-dtype instantiations (fused_{f32,bf16}.cu); vec = 16-byte accesses are allowed.
#define HYLAB_FUSED_BLOCK_DECLARE(suffix)                                              \
  void add_rms_norm_fwd_##suffix(const AddRmsNormParams& p, bool vec, cudaStream_t s); \
  void add_rms_norm_bwd_##suffix(const AddRmsNormParams& p, bool vec, cudaStream_t s); \
  void rope_qk_norm_fwd_##suffix(const RopeQkNormParams& p, cudaStream_t s);           \
  void rope_qk_norm_bwd_##suffix(const RopeQkNormParams& p, cudaStream_t s);           \
  void relu_square_fwd_##suffix(const ReluSquareParams& p, bool vec, cudaStream_t s);  \
  void relu_square_bwd_##suffix(const ReluSquareParams& p, bool vec, cudaStream_t s);
HYLAB_FUSED_BLOCK_DECLARE(f32)
HYLAB_FUSED_BLOCK_DECLARE(bf16)
#undef HYLAB_FUSED_BLOCK_DECLARE

}  // namespace hylab::kernels
