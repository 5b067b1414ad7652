// Depthwise causal conv1d over T with optional fused SiLU: torch-free host entry points.
//
//   pre[b,e,t] = bias[e] + sum_{k<K} w[e,k] * x[b,e,t-(K-1)+k]   (x = 0 for t < 0)
//   out = silu(pre) if silu else pre
//
// x: (B, E, T), any batch/channel strides, T stride 1. weight: (E, K) fp32 contiguous,
// bias: (E) fp32 or null. out, dout, dx: (B, E, T) contiguous, x's dtype (fp32 or bf16).
// K in 2..4. Backward: dx, and dweight (E, K) / dbias (E) fp32, reduced through per-block
// partials summed in a fixed order (deterministic, no atomics).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/common/dtype.h"

namespace hylab::kernels {

struct CausalConv1dParams {
  DType dtype = DType::kFloat32;
  int batch = 0, dim = 0, seqlen = 0, width = 0;  // B, E, T, K
  bool silu = false;
  const void* x = nullptr;
  int64_t x_batch_stride = 0, x_dim_stride = 0;
  const float* weight = nullptr;  // (E, K)
  const float* bias = nullptr;    // (E) or null
  void* out = nullptr;            // fwd: (B, E, T)
  // Backward.
  const void* dout = nullptr;     // (B, E, T) contiguous
  void* dx = nullptr;             // (B, E, T) contiguous
  float* dweight = nullptr;       // (E, K)
  float* dbias = nullptr;         // (E) or null
  float* ws = nullptr;            // (B, E, causal_conv1d_tchunks(T), K + 1) workspace
};

// Timesteps one block covers (128 threads x 8); sizes the backward workspace.
constexpr int kConvBlockT = 1024;
inline int causal_conv1d_tchunks(int seqlen) { return (seqlen + kConvBlockT - 1) / kConvBlockT; }

void causal_conv1d_fwd(const CausalConv1dParams& p, cudaStream_t stream);
void causal_conv1d_bwd(const CausalConv1dParams& p, cudaStream_t stream);

// Per-dtype instantiations (one .cu each).
void causal_conv1d_fwd_f32(const CausalConv1dParams& p, bool vec, cudaStream_t stream);
void causal_conv1d_fwd_bf16(const CausalConv1dParams& p, bool vec, cudaStream_t stream);
void causal_conv1d_bwd_f32(const CausalConv1dParams& p, bool vec, cudaStream_t stream);
void causal_conv1d_bwd_bf16(const CausalConv1dParams& p, bool vec, cudaStream_t stream);

}  // namespace hylab::kernels
