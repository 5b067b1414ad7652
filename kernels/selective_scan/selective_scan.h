// Selective scan (Mamba v1) forward and backward: torch-free host entry points.
//
//   d_t  = softplus(delta_t + delta_bias)        (softplus optional, bias optional)
//   x_t  = exp(d_t * A) * x_{t-1} + d_t * B_t * u_t            x: (N) fp32 per channel
//   y_t  = <x_t, C_t> + D * u_t;   out_t = y_t * silu(z_t)     (z optional)
//
// Shapes (T is always the innermost, stride-1 dimension):
//   u, delta, z: (B, E, T) with any batch/channel strides     A: (E, N) fp32 contiguous
//   Bm, Cm: (B, N, T) with any batch/state strides            D, delta_bias: (E) fp32
//   out, du, ddelta, dz, dout: (B, E, T) contiguous           dB, dC: (B, N, T) contiguous
// u, delta, z, Bm, Cm, out and the activation grads share one dtype (fp32 or bf16).
//
// The forward saves the state at the end of every kChunk timesteps, (B, nchunks, E, N) fp32,
// for the backward, which recomputes each chunk from its saved start state. The backward
// is deterministic: dB/dC are reduced across channels inside a block and the per-block
// partials are summed in a fixed order by a second kernel; dA/dD/ddelta_bias likewise
// (per-batch partials, summed over the batch in order). No atomics anywhere.
//
// Supported N: 4, 8, 16, 32, 64 (selective_scan_supports_dstate).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/common/dtype.h"

namespace hylab::kernels {

struct SelectiveScanParams {
  DType dtype = DType::kFloat32;
  int batch = 0, dim = 0, seqlen = 0, dstate = 0;  // B, E, T, N
  bool delta_softplus = false;

  // Inputs. Strides in elements; the T stride is 1.
  const void* u = nullptr;
  int64_t u_batch_stride = 0, u_dim_stride = 0;
  const void* delta = nullptr;
  int64_t delta_batch_stride = 0, delta_dim_stride = 0;
  const float* A = nullptr;  // (E, N)
  const void* Bm = nullptr;
  int64_t B_batch_stride = 0, B_dstate_stride = 0;
  const void* Cm = nullptr;
  int64_t C_batch_stride = 0, C_dstate_stride = 0;
  const float* D = nullptr;           // (E) or null
  const void* z = nullptr;            // (B, E, T) or null
  int64_t z_batch_stride = 0, z_dim_stride = 0;
  const float* delta_bias = nullptr;  // (E) or null

  // Forward outputs.
  void* out = nullptr;              // (B, E, T) contiguous
  float* chunk_states = nullptr;    // (B, nchunks, E, N) or null (no backward to follow)
  float* last_state = nullptr;      // (B, E, N) or null (prefill hands it to decoding)

  // Backward: dout in; grads and workspaces out (all contiguous).
  const void* dout = nullptr;       // (B, E, T)
  void* du = nullptr;               // (B, E, T)
  void* ddelta = nullptr;           // (B, E, T)
  void* dz = nullptr;               // (B, E, T), required when z is given
  void* dB = nullptr;               // (B, N, T), dtype of Bm (= dtype)
  void* dC = nullptr;               // (B, N, T)
  float* dA = nullptr;              // (E, N)
  float* dD = nullptr;              // (E), required when D is given
  float* ddelta_bias = nullptr;     // (E), required when delta_bias is given
  float* ws_dBC = nullptr;          // (B, bwd_blocks_per_batch, 2, N, T) workspace
  float* ws_dA = nullptr;           // (B, E, N) workspace
  float* ws_dD = nullptr;           // (B, E) workspace
  float* ws_ddelta_bias = nullptr;  // (B, E) workspace

  // Backward kernel variant (below), -1: kScanBwdDefaultVariant. All variants
  // compute the same gradients under the same contract (fp32 state and sums, deterministic)
  // and share the workspace layout above; they differ in speed and in the last bits.
  int bwd_variant = -1;
  // Forward kernel variant (kScanFwdVariants), -1: kScanFwdDefaultVariant. Same contract.
  int fwd_variant = -1;
};

// Forward kernel variants: 0: scan_fwd.cuh (64-step tiles, y summed over a channel's lanes
// by shuffles every step); 1: scan_fwd_v2.cuh (16-step tiles, 4 blocks per SM, y summed from
// per-lane partials in shared memory when written).
constexpr int kScanFwdVariants = 2;
constexpr int kScanFwdDefaultVariant = 0;
// "v1", "v2_tile16"; throws CudaError for an unknown variant.
const char* selective_scan_fwd_variant_name(int variant);

// Backward kernel variants (docs/KERNELS.md, "Selective scan backward"):
//   0: scan_bwd.cuh: a chunk's 16 recomputed states in registers (the first version);
//   1: scan_bwd_v2.cuh with 16-step segments: variant 0's occupancy, fewer instructions;
//   2: scan_bwd_v2.cuh with 8-step segments (checkpointed recompute), sized for 24 warps/SM;
//   3: scan_bwd_v2.cuh with 4-step segments, sized for 32 warps/SM;
//   4: as 1, with the per-channel sums (y; du, ddelta) deferred through shared memory;
//   5: as 2, with the per-channel sums deferred.
constexpr int kScanBwdVariants = 6;
constexpr int kScanBwdDefaultVariant = 0;
// "v1", "v2_seg16", "v2_seg8", "v2_seg4", "v2_seg16_defer", "v2_seg8_defer"; throws CudaError for an unknown variant.
const char* selective_scan_bwd_variant_name(int variant);

// Timesteps between saved states.
constexpr int kScanChunk = 16;
inline int selective_scan_nchunks(int seqlen) { return (seqlen + kScanChunk - 1) / kScanChunk; }

bool selective_scan_supports_dstate(int dstate);
// Channels one backward block covers, and blocks per batch row: sizes ws_dBC.
int selective_scan_bwd_channels_per_block(int dstate);
int selective_scan_bwd_blocks_per_batch(int dim, int dstate);

// True when every (B,E,T) and (B,N,T) tensor allows 16-byte vector access (aligned pointers,
// strides and T multiples of the vector width); the kernels fall back to scalar otherwise.
bool selective_scan_vectorizable(const SelectiveScanParams& p);

// Launch on `stream` (asynchronous). Throw CudaError on a launch failure.
void selective_scan_fwd(const SelectiveScanParams& p, cudaStream_t stream);
void selective_scan_bwd(const SelectiveScanParams& p, cudaStream_t stream);

// Per-dtype instantiations (one .cu each); selective_scan_fwd/bwd dispatch to them.
void selective_scan_fwd_f32(const SelectiveScanParams& p, bool vec, cudaStream_t stream);
void selective_scan_fwd_bf16(const SelectiveScanParams& p, bool vec, cudaStream_t stream);
void selective_scan_fwd_v2_f32(const SelectiveScanParams& p, bool vec, cudaStream_t stream);
void selective_scan_fwd_v2_bf16(const SelectiveScanParams& p, bool vec, cudaStream_t stream);
void selective_scan_bwd_f32(const SelectiveScanParams& p, bool vec, cudaStream_t stream);
void selective_scan_bwd_bf16(const SelectiveScanParams& p, bool vec, cudaStream_t stream);
void selective_scan_bwd_v2_f32(const SelectiveScanParams& p, int variant, bool vec,
                             cudaStream_t stream);
void selective_scan_bwd_v2_bf16(const SelectiveScanParams& p, int variant, bool vec,
                              cudaStream_t stream);
// Fixed-order sums of the backward's partials into dB, dC, dA, dD, ddelta_bias.
void selective_scan_bwd_reduce(const SelectiveScanParams& p, cudaStream_t stream);

}  // namespace hylab::kernels
