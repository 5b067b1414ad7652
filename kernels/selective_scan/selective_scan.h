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
// Split scan (docs/KERNELS.md "Split scan"): when B x channel blocks is too small to fill the
// GPU (long context, small batch), T is cut into S splits of split_len timesteps and the
// splits run in parallel (grid.z). Forward: a lean pass computes each split's local end state
// from a zero start and its decay product, a carry pass turns them into true start states,
// then the forward kernel runs every split from its start state. Backward: the same with the
// adjoint, carried from the last split to the first. S = 1 runs exactly the unsplit kernels.
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
  // Splits of T: 0 = automatic (the environment variable HYLAB_SCAN_SPLITS, read once, may
  // override it the same way), 1 = never split, > 1 = that many (fewer when T is short:
  // splits hold a multiple of kSplitAlign timesteps).
  int force_splits = 0;

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
  // With S > 1 splits (selective_scan_num_splits) ws_dA, ws_dD and ws_ddelta_bias get a
  // leading split dimension: (S, B, E, N), (S, B, E), (S, B, E).

  // Split scan workspace, (2, S - 1, B, E, N) fp32 (selective_scan_split_ws_floats): local
  // end states (carried in place into start states / incoming adjoints), decay products.
  // Required when S > 1, for the forward and the backward (one each).
  float* ws_split = nullptr;
  // Set by selective_scan_fwd/bwd for the kernels (callers leave it 0): timesteps per split,
  // 0 when not split.
  int split_len = 0;

  // Backward kernel variant (below), -1: selective_scan_bwd_default_variant. All variants
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
//   1: scan_bwd_v2.cuh with 16-step segments, per-channel sums deferred through shared
//      memory (v2_seg16_defer);
//   2: scan_bwd_v2.cuh with 8-step segments (checkpointed recompute) sized for 24 warps/SM,
//      sums deferred (v2_seg8_defer).
// (Until session 7 these were variants 4 and 5; variants 1-3, the v2 kernels without the
// deferred sums, were never the fastest at any measured shape and were removed.)
constexpr int kScanBwdVariants = 3;
// The default (bwd_variant = -1), from the H200 measurements (docs/KERNELS.md, tuning log
// round 4): unsplit, 2 (v2_seg8_defer: 24 warps/SM) when the backward grid (B x channel
// blocks) is larger than 2 blocks per SM, else 1 (v2_seg16_defer: the SMs hold at most ~2
// blocks each then, so the registers of 16-step segments cost no occupancy and save the
// recompute); with the split scan on, 1 (measured split, fwd+bwd: 7.38 ms vs 8.19 for v1 and
// 7.95 for 2 at (2, 1536, 32768, 16); 12.26 vs 13.73 and 12.96 at (1, 2560, 65536, 16)).
// Uses the SM count of the device current at the first call.
int selective_scan_bwd_default_variant(const SelectiveScanParams& p);
// "v1", "v2_seg16_defer", "v2_seg8_defer"; throws CudaError for an unknown variant.
const char* selective_scan_bwd_variant_name(int variant);

// Timesteps between saved states.
constexpr int kScanChunk = 16;
inline int selective_scan_nchunks(int seqlen) { return (seqlen + kScanChunk - 1) / kScanChunk; }

// Splits hold a multiple of this many timesteps (the forward tile, a multiple of kScanChunk).
constexpr int kSplitAlign = 64;

bool selective_scan_supports_dstate(int dstate);

// Splits of T the forward (bwd = false) or backward will use for these sizes and
// p.force_splits (1 = not split). Automatic: split only when B x channel blocks is below
// ~2 waves of the GPU (SM count of the current device, queried once), with splits of at
// least kMinAutoSplitLen timesteps.
constexpr int kMinAutoSplitLen = 1024;
int selective_scan_num_splits(const SelectiveScanParams& p, bool bwd);
// Timesteps per split for S splits (a multiple of kSplitAlign; the last split is ragged).
int selective_scan_split_len(int seqlen, int splits);
// Splits a params struct with split_len set stands for (1 when split_len is 0).
inline int selective_scan_splits_of(const SelectiveScanParams& p) {
  return p.split_len > 0 ? (p.seqlen + p.split_len - 1) / p.split_len : 1;
}
// Floats of ws_split for the forward (bwd = false) or backward: 0 when not split.
int64_t selective_scan_split_ws_floats(const SelectiveScanParams& p, bool bwd);
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
// Fixed-order sums of the backward's partials into dB, dC, dA, dD, ddelta_bias (dA, dD,
// ddelta_bias over S x B partials, split-major, S = selective_scan_splits_of(p)).
void selective_scan_bwd_reduce(const SelectiveScanParams& p, cudaStream_t stream);

// Split scan passes (scan_split_{f32,bf16}.cu; p.split_len and p.ws_split set, S > 1):
// the forward's local end states + decay products (splits 0 .. S-2) and the carry to start
// states; the backward's local outgoing adjoints + decay products (splits 1 .. S-1) and the
// carry from the last split to the first (scan_split.cu).
void selective_scan_split_fwd_f32(const SelectiveScanParams& p, bool vec, cudaStream_t stream);
void selective_scan_split_fwd_bf16(const SelectiveScanParams& p, bool vec, cudaStream_t stream);
void selective_scan_split_bwd_f32(const SelectiveScanParams& p, bool vec, cudaStream_t stream);
void selective_scan_split_bwd_bf16(const SelectiveScanParams& p, bool vec, cudaStream_t stream);
void selective_scan_split_carry(const SelectiveScanParams& p, bool bwd, cudaStream_t stream);

}  // namespace hylab::kernels
