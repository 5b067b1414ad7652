// Host entry of the small-batch GEMV: checks and dispatch.
#include "kernels/gemv/gemv.h"

#include <string>

#include "kernels/common/cuda_check.h"

namespace hylab::kernels {

bool gemv_supports(DType dtype, int rows, int64_t in_features) {
  return dtype == DType::kBFloat16 && rows >= 1 && rows <= kGemvMaxRows && in_features > 0 &&
         in_features % 8 == 0;
}

void gemv(const GemvParams& p, cudaStream_t stream) {
  const std::string w = "gemv";
  if (!gemv_supports(p.dtype, p.rows, p.in_features)) {
    throw CudaError(w +
                    ": needs bf16, 1 <= rows <= 8 and in_features a positive multiple of 8 "
                    "(got " +
                    dtype_name(p.dtype) + ", rows " + std::to_string(p.rows) + ", in_features " +
                    std::to_string(p.in_features) + ")");
  }
  if (p.out_features <= 0) {
    throw CudaError(w + ": out_features must be positive, got " + std::to_string(p.out_features));
  }
  if (p.x == nullptr || p.w == nullptr || p.y == nullptr) {
    throw CudaError(w + ": x, w and y must be given");
  }
  const auto aligned = [](const void* q) { return (reinterpret_cast<uintptr_t>(q) & 15u) == 0; };
  if (!aligned(p.x) || !aligned(p.w) || p.x_row_stride % 8 != 0) {
    throw CudaError(w + ": x and w must be 16-byte aligned and x_row_stride a multiple of 8");
  }
  if (p.epilogue == GemvEpilogue::kAddResidual && p.residual == nullptr) {
    throw CudaError(w + ": the kAddResidual epilogue needs residual");
  }
  if (p.norm_input && !(p.norm_eps > 0.f)) {
    throw CudaError(w + ": norm_input needs norm_eps > 0, got " + std::to_string(p.norm_eps));
  }
  const int wpr = p.warps_per_row;
  if (wpr != 0 && wpr != 1 && wpr != 2 && wpr != 4 && wpr != 8) {
    throw CudaError(w + ": warps_per_row must be 0 (default), 1, 2, 4 or 8, got " +
                    std::to_string(wpr));
  }
  gemv_bf16(p, stream);
}

}  // namespace hylab::kernels
