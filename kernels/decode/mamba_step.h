// The fused Mamba decode step: everything between in_proj and out_proj in two kernels.
//
// The unfused step is conv update -> x_proj GEMV -> dt_proj GEMV -> state update (decode.h,
// gemv.h): four launches, each waiting for the last, for a few microseconds of work. Here:
//
//   1. conv update + x_proj (one launch): the channels are split over the blocks (64 bf16 or
//      32 fp32 channels each, so 24 blocks at E = 1536): a block does the conv update of its
//      channels (writing x_conv and rolling their conv state, which no other block touches)
//      and, for every x_proj output j, the partial dot product over its channels, fp32, into
//      the workspace x_proj_partial (B, R + 2N, S).
//   2. state update (one launch): a block first adds each x_proj output's S partials in
//      order of s (so the sum is the same every run) for the batch rows it touches, rounds
//      them to the activation dtype as the unfused x_proj's output is, then per channel
//      delta = softplus(round(dt_proj_w[e] . dt_low) + dt_bias[e]) (the N/4 lanes of the
//      channel split the R products) and the selective state update with D skip and z gate
//      (as decode.h's).
//
// Rounding: where the unfused ops round, these round the same way (x_conv, x_dbl and the
// dt_proj output to the activation dtype; states fp32 or the conv state's dtype). What
// differs is only the order of the fp32 sums inside the two projections (lanes, a shuffle
// tree, then the blocks' partials in order, instead of the GEMV's or cuBLAS's order), so
// x_dbl and delta may differ from the unfused path in the last fp32 bit, and after rounding
// to bf16 by one bf16 ulp in rare elements. x_conv, the conv state and everything downstream
// of equal inputs is bit-identical.
//
// Shapes (activations = x's dtype, fp32 or bf16):
//   x, z: (B, E) any batch stride, unit channel stride (views of in_proj's output); z or null
//   conv_state (B, E, K) contiguous, x's dtype or fp32; conv_weight (E, K), conv_bias (E) fp32
//   x_proj_weight (R + 2N, E), dt_proj_weight (E, R): contiguous, activation dtype
//   dt_bias, D (E) fp32 or null; A (E, N) fp32; ssm_state (B, E, N) fp32 contiguous
//   x_conv (B, E) activation dtype, x_proj_partial (mamba_step_workspace_floats) fp32:
//   workspaces (kernel 1 -> kernel 2); out (B, E) contiguous
// Supported: K in {2, 3, 4}; N = 4 x a power of two up to 128; any B >= 1 and E >= 1; R + 2N
// with the x_proj outputs of a state block's rows (1-2 rows when E >= 32) fitting in shared
// memory (mamba_step_smem_bytes).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/common/dtype.h"

namespace hylab::kernels {

struct MambaStepParams {
  DType dtype = DType::kFloat32;        // of x, z, the projection weights and the outputs
  DType state_dtype = DType::kFloat32;  // of conv_state
  int batch = 0, dim = 0, dstate = 0, width = 0, dt_rank = 0;  // B, E, N, K, R
  const void* x = nullptr;
  int64_t x_batch_stride = 0;
  const void* z = nullptr;
  int64_t z_batch_stride = 0;
  void* conv_state = nullptr;
  const float* conv_weight = nullptr;
  const float* conv_bias = nullptr;
  const void* x_proj_weight = nullptr;
  const void* dt_proj_weight = nullptr;
  const float* dt_bias = nullptr;
  const float* A = nullptr;
  const float* D = nullptr;
  float* ssm_state = nullptr;
  void* x_conv = nullptr;
  float* x_proj_partial = nullptr;  // mamba_step_workspace_floats() fp32
  void* out = nullptr;
  // Hopper programmatic dependent launch: both kernels are launched so that they may start
  // while the kernel before them drains (kernel 1 behind in_proj's GEMV, kernel 2 behind
  // kernel 1); each loads what does not depend on its predecessor (weights, states, A, ...)
  // and then waits for it (griddepcontrol.wait) before reading its output. Off: plain
  // stream order (the waits are then no-ops).
  bool overlap_launches = false;
};

// Shared memory the state kernel needs for these sizes (bytes); mamba_step_supports() bounds it.
int64_t mamba_step_smem_bytes(int batch, int dim, int dstate, int dt_rank);
// Floats of the x_proj_partial workspace: B x (R + 2N) x (the number of channel blocks).
int64_t mamba_step_workspace_floats(DType dtype, int batch, int dim, int dstate, int dt_rank);
// True when the fused step takes these sizes (callers fall back to the unfused ops).
bool mamba_step_supports(DType dtype, int batch, int dim, int dstate, int width, int dt_rank);

// Validates (throws CudaError naming the field) and launches both kernels on `stream`.
void mamba_step(const MambaStepParams& p, cudaStream_t stream);

}  // namespace hylab::kernels
