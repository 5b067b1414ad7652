// Small-batch matrix-vector products for decoding: y (M, N) = x (M, K) W (N, K)^T with
// M <= 8 rows (the sequences of a decode batch), bf16 x, W and y, fp32 accumulation.
// Two optional fusions remove the element-wise kernels around a decode step's matmuls:
//   norm_input   x is replaced by rms_norm(x) (weightless, eps norm_eps, fp32 statistics,
//                each normalised element rounded to bf16 as at::rms_norm returns it)
//   epilogue     kRelu2: y = relu(y)^2;  kAddResidual: y = residual + y   (each step rounded
//                to bf16 as the unfused bf16 ops round it)
// At M <= 8 a decode step's matmuls are pure weight streaming: a group of 1-8 warps per
// output column n (more for longer rows) reads W's row n once in 16-byte loads (four in
// flight per lane) and dots it with every row of x, so each weight byte is read once per
// step whatever M is. cuBLAS's kernels for
// these shapes read the weights at about a quarter of the copy bandwidth on an H200
// (docs/BENCHMARKS.md); this one is meant to approach it.
//
//   x: (M, K), row stride x_row_stride (elements), unit stride along K
//   W: (N, K) contiguous        y: (M, N), row stride y_row_stride, unit stride along N
// K a multiple of 8; x, W 16-byte aligned, x_row_stride a multiple of 8.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/common/dtype.h"

namespace hylab::kernels {

enum class GemvEpilogue { kNone, kRelu2, kAddResidual };

struct GemvParams {
  DType dtype = DType::kBFloat16;  // of x, W, y (bf16 only for now)
  int rows = 0;                    // M, 1..8
  int64_t in_features = 0;         // K
  int64_t out_features = 0;        // N
  const void* x = nullptr;
  int64_t x_row_stride = 0;
  const void* w = nullptr;
  void* y = nullptr;
  int64_t y_row_stride = 0;
  bool norm_input = false;  // rms_norm x first
  float norm_eps = 0.f;
  GemvEpilogue epilogue = GemvEpilogue::kNone;
  const void* residual = nullptr;  // (M, N), row stride residual_row_stride (kAddResidual)
  int64_t residual_row_stride = 0;
  int warps_per_row = 0;  // warps sharing one output column: 1, 2, 4, 8; 0 = by shape
  // Hopper programmatic dependent launch (kernels/common/launch.cuh): the kernel may start
  // while the one before it drains and loads its weights meanwhile, so that kernel must not
  // write w. Off: plain stream order (results are the same bit for bit).
  bool overlap_launches = false;
};

constexpr int kGemvMaxRows = 8;

// True when gemv() takes these shapes/dtype (callers fall back to a library GEMM otherwise).
bool gemv_supports(DType dtype, int rows, int64_t in_features);

// Validates (throws CudaError naming the field) and launches.
void gemv(const GemvParams& p, cudaStream_t stream);
void gemv_bf16(const GemvParams& p, cudaStream_t stream);

}  // namespace hylab::kernels
