// Host dispatch of the fused Transformer-block kernels (fused_block.h): validation, dtype,
// and the choice of 16-byte accesses (every pointer 16-byte aligned, rows a whole number of
// 16-byte vectors).
#include "kernels/fused_block/fused_block.h"

#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>

namespace hylab::kernels {
namespace {

void require(bool ok, const char* fn, const std::string& what) {
  if (!ok) throw std::invalid_argument(std::string(fn) + ": " + what);
}

// Null pointers (absent optional tensors) do not constrain the choice.
bool aligned16(const void* ptr) {
  return ptr == nullptr || (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0;
}

bool norm_vec(const AddRmsNormParams& p, bool backward) {
  const int per16 = 16 / dtype_size(p.dtype);
  if (p.cols % per16 != 0) return false;
  if (backward) return aligned16(p.y) && aligned16(p.dy) && aligned16(p.dres) && aligned16(p.dx);
  return aligned16(p.x) && aligned16(p.branch) && aligned16(p.sum) && aligned16(p.y);
}

void check_norm(const AddRmsNormParams& p, const char* fn, bool backward) {
  require(p.rows >= 0 && p.rows <= 0x7fffffff, fn,
          "rows must be in [0, 2^31), got " + std::to_string(p.rows));
  require(p.cols >= 1, fn, "cols must be >= 1, got " + std::to_string(p.cols));
  require(p.rstd != nullptr && p.y != nullptr, fn, "y and rstd are required");
  if (backward) {
    require(p.dy != nullptr && p.dx != nullptr, fn, "dy and dx are required");
  } else {
    require(p.x != nullptr, fn, "x is required");
    require(p.branch == nullptr || p.sum != nullptr, fn, "sum is required with branch");
  }
}

void check_rope(const RopeQkNormParams& p, const char* fn, bool backward) {
  require(p.head_dim >= 2 && p.head_dim % 2 == 0 && p.head_dim <= kRopeMaxHeadDim, fn,
          "head_dim must be even and in [2, " + std::to_string(kRopeMaxHeadDim) + "], got " +
              std::to_string(p.head_dim));
  require(p.heads >= 1 && p.seqlen >= 1, fn,
          "heads and seqlen must be >= 1, got " + std::to_string(p.heads) + " and " +
              std::to_string(p.seqlen));
  require(p.rows >= 0 && p.rows % (static_cast<int64_t>(p.heads) * p.seqlen) == 0, fn,
          "rows (" + std::to_string(p.rows) + ") must be a multiple of heads * seqlen");
  require(p.rows / 4 < 0x7fffffff, fn, "too many rows");
  require(p.cos != nullptr && p.sin != nullptr && p.y != nullptr && p.rstd != nullptr, fn,
          "cos, sin, y and rstd are required");
  if (backward) {
    require(p.dy != nullptr && p.dx != nullptr, fn, "dy and dx are required");
  } else {
    require(p.x != nullptr, fn, "x is required");
  }
}

bool elt_vec(const ReluSquareParams& p, std::initializer_list<const void*> ptrs) {
  if (p.n % (16 / dtype_size(p.dtype)) != 0) return false;
  for (const void* q : ptrs) {
    if (!aligned16(q)) return false;
  }
  return true;
}

void check_relu(const ReluSquareParams& p, const char* fn,
                std::initializer_list<const void*> ptrs) {
  require(p.n >= 0, fn, "n must be >= 0");
  for (const void* q : ptrs) require(q != nullptr, fn, "a tensor pointer is null");
}

}  // namespace

void add_rms_norm_fwd(const AddRmsNormParams& p, cudaStream_t stream) {
  check_norm(p, "add_rms_norm_fwd", false);
  if (p.rows == 0) return;
  const bool vec = norm_vec(p, false);
  if (p.dtype == DType::kBFloat16) {
    add_rms_norm_fwd_bf16(p, vec, stream);
  } else {
    add_rms_norm_fwd_f32(p, vec, stream);
  }
}

void add_rms_norm_bwd(const AddRmsNormParams& p, cudaStream_t stream) {
  check_norm(p, "add_rms_norm_bwd", true);
  if (p.rows == 0) return;
  const bool vec = norm_vec(p, true);
  if (p.dtype == DType::kBFloat16) {
    add_rms_norm_bwd_bf16(p, vec, stream);
  } else {
    add_rms_norm_bwd_f32(p, vec, stream);
  }
}

void rope_qk_norm_fwd(const RopeQkNormParams& p, cudaStream_t stream) {
  check_rope(p, "rope_qk_norm_fwd", false);
  if (p.rows == 0) return;
  if (p.dtype == DType::kBFloat16) {
    rope_qk_norm_fwd_bf16(p, stream);
  } else {
    rope_qk_norm_fwd_f32(p, stream);
  }
}

void rope_qk_norm_bwd(const RopeQkNormParams& p, cudaStream_t stream) {
  check_rope(p, "rope_qk_norm_bwd", true);
  if (p.rows == 0) return;
  if (p.dtype == DType::kBFloat16) {
    rope_qk_norm_bwd_bf16(p, stream);
  } else {
    rope_qk_norm_bwd_f32(p, stream);
  }
}

void relu_square_fwd(const ReluSquareParams& p, cudaStream_t stream) {
  check_relu(p, "relu_square_fwd", {p.u, p.h});
  if (p.n == 0) return;
  const bool vec = elt_vec(p, {p.u, p.h});
  if (p.dtype == DType::kBFloat16) {
    relu_square_fwd_bf16(p, vec, stream);
  } else {
    relu_square_fwd_f32(p, vec, stream);
  }
}

void relu_square_bwd(const ReluSquareParams& p, cudaStream_t stream) {
  check_relu(p, "relu_square_bwd", {p.h, p.dh, p.du});
  if (p.n == 0) return;
  const bool vec = elt_vec(p, {p.h, p.dh, p.du});
  if (p.dtype == DType::kBFloat16) {
    relu_square_bwd_bf16(p, vec, stream);
  } else {
    relu_square_bwd_f32(p, vec, stream);
  }
}

}  // namespace hylab::kernels
