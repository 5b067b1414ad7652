// Decode-step kernels for batched generation: one new token per sequence.
//
// causal_conv1d_update: conv_state (B, E, K) holds the last K conv inputs; it is rolled in
//   place (drop the oldest, append x) and out = act(bias + sum_k w[k] * state[k]).
//   x: (B, E) any batch stride, unit channel stride; out: (B, E) contiguous, x's dtype;
//   conv_state: contiguous, x's dtype or fp32; weight (E, K) fp32, bias (E) fp32 or null.
// selective_state_update: ssm_state (B, E, N) fp32 contiguous, updated in place:
//   d = softplus(dt + dt_bias); state = exp(d A) * state + d * B * x;
//   y = <state, C> + D x; y *= silu(z).  x, dt, z: (B, E) (any batch stride, unit channel
//   stride); Bm, Cm: (B, N) (any batch stride); A (E, N), D, dt_bias (E): fp32.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/common/dtype.h"

namespace hylab::kernels {

struct ConvUpdateParams {
  DType dtype = DType::kFloat32;        // of x and out
  DType state_dtype = DType::kFloat32;  // of conv_state
  int batch = 0, dim = 0, width = 0;
  bool silu = false;
  const void* x = nullptr;
  int64_t x_batch_stride = 0;
  void* conv_state = nullptr;  // (B, E, K) contiguous
  const float* weight = nullptr;
  const float* bias = nullptr;
  void* out = nullptr;         // (B, E) contiguous
};

struct StateUpdateParams {
  DType dtype = DType::kFloat32;  // of x, dt, z, Bm, Cm, out
  int batch = 0, dim = 0, dstate = 0;
  bool dt_softplus = false;
  float* ssm_state = nullptr;  // (B, E, N)
  const void* x = nullptr;
  int64_t x_batch_stride = 0;
  const void* dt = nullptr;
  int64_t dt_batch_stride = 0;
  const void* z = nullptr;  // or null
  int64_t z_batch_stride = 0;
  const void* Bm = nullptr;
  int64_t B_batch_stride = 0;
  const void* Cm = nullptr;
  int64_t C_batch_stride = 0;
  const float* A = nullptr;
  const float* D = nullptr;        // or null
  const float* dt_bias = nullptr;  // or null
  void* out = nullptr;             // (B, E) contiguous
};

// N for the state update: a multiple of 4, at most 128.
bool selective_state_update_supports_dstate(int dstate);

void causal_conv1d_update(const ConvUpdateParams& p, cudaStream_t stream);
void selective_state_update(const StateUpdateParams& p, cudaStream_t stream);

}  // namespace hylab::kernels
