// The Mamba path's primitive ops and the fused loss, one dispatch point for all of them.
//
// CUDA tensors go to our kernels (model/cuda_ops.h, kernels/) when the build has them and
// `use_kernels` is true; everything else goes to the plain-LibTorch reference
// (model/reference_ops.h), which is also the oracle the kernel tests compare against.
//
// Shapes (channel-major, as the kernels want them):
//   u, delta, z, y: (B, E, T)   A: (E, N) fp32   Bm, Cm: (B, N, T)   D, delta_bias: (E) fp32
//   conv x: (B, E, T)  weight: (E, K)  bias: (E)
// Activations may be fp32 or bf16; states and accumulation are fp32.
#pragma once

#include <torch/torch.h>

#include <tuple>

namespace hylab::ops {

// True when this build has our CUDA kernels (LibTorch with CUDA + nvcc).
bool have_cuda_kernels();

// Selective scan (Mamba v1), differentiable in every input:
//   d = delta (+ delta_bias) (softplus'd if delta_softplus)
//   x_t = exp(d_t * A) * x_{t-1} + d_t * Bm_t * u_t;   y_t = <x_t, Cm_t> + D * u_t
//   y = y * silu(z) if z is defined.
// z and delta_bias may be undefined tensors.
torch::Tensor selective_scan(const torch::Tensor& u, const torch::Tensor& delta,
                             const torch::Tensor& A, const torch::Tensor& Bm,
                             const torch::Tensor& Cm, const torch::Tensor& D,
                             const torch::Tensor& z, const torch::Tensor& delta_bias,
                             bool delta_softplus, bool use_kernels = true);

// Same, no autograd, also returning the final state (B, E, N) fp32: prefill for decoding.
std::tuple<torch::Tensor, torch::Tensor> selective_scan_with_state(
    const torch::Tensor& u, const torch::Tensor& delta, const torch::Tensor& A,
    const torch::Tensor& Bm, const torch::Tensor& Cm, const torch::Tensor& D,
    const torch::Tensor& z, const torch::Tensor& delta_bias, bool delta_softplus,
    bool use_kernels = true);

// Depthwise causal conv1d over T (left zero padding K-1), optional fused SiLU. Differentiable.
torch::Tensor causal_conv1d(const torch::Tensor& x, const torch::Tensor& weight,
                            const torch::Tensor& bias, bool silu, bool use_kernels = true);

// One decode step of the conv: conv_state (B, E, K) holds the last K inputs and is rolled
// in place (drop oldest, append x); x (B, E) -> out (B, E). No autograd.
torch::Tensor causal_conv1d_update(const torch::Tensor& x, torch::Tensor& conv_state,
                                   const torch::Tensor& weight, const torch::Tensor& bias,
                                   bool silu, bool use_kernels = true);

// One decode step of the scan: ssm_state (B, E, N) fp32 updated in place.
// x, dt, z: (B, E)   Bm, Cm: (B, N)   A: (E, N)   D, dt_bias: (E)  -> y (B, E). No autograd.
torch::Tensor selective_state_update(torch::Tensor& ssm_state, const torch::Tensor& x,
                                     const torch::Tensor& dt, const torch::Tensor& A,
                                     const torch::Tensor& Bm, const torch::Tensor& Cm,
                                     const torch::Tensor& D, const torch::Tensor& z,
                                     const torch::Tensor& dt_bias, bool dt_softplus,
                                     bool use_kernels = true);

// One Mamba decode step between in_proj and out_proj, for a token per sequence:
//   xc = causal_conv1d_update(x, conv_state, conv_weight, conv_bias, silu)      (B, E)
//   dt_low, Bm, Cm = split(linear(xc, x_proj_weight), R, N, N)
//   y = selective_state_update(ssm_state, xc, linear(dt_low, dt_proj_weight), A, Bm, Cm, D,
//                              z, dt_bias, softplus)                            (B, E)
// x, z (B, E); conv_state (B, E, K) and ssm_state (B, E, N) fp32 updated in place;
// x_proj_weight (R + 2N, E), dt_proj_weight (E, R). With `fused` on CUDA (and shapes the
// kernels take): two kernels (cuda_ops::mamba_decode_core, kernels/decode/mamba_step.h);
// otherwise the four ops above, one after the other (the twin, and the CPU path). No autograd.
// overlap_launches: the two fused kernels with programmatic dependent launch (see
// cuda_ops::mamba_decode_core for what the kernel launched just before may not write).
torch::Tensor mamba_decode_core(const torch::Tensor& x, const torch::Tensor& z,
                                torch::Tensor& conv_state, torch::Tensor& ssm_state,
                                const torch::Tensor& conv_weight, const torch::Tensor& conv_bias,
                                const torch::Tensor& x_proj_weight,
                                const torch::Tensor& dt_proj_weight, const torch::Tensor& dt_bias,
                                const torch::Tensor& A, const torch::Tensor& D, bool fused = true,
                                bool use_kernels = true, bool overlap_launches = false);

// One decode query per sequence against the KV cache, positions read on the device (so a
// captured CUDA graph serves every step): q (B, H, Dh); k_cache, v_cache (B, Hkv, L, Dh);
// pos (1) or (B) int64: query b attends to cache positions [0, pos[b]]. -> (B, H, Dh) in q's
// dtype. CUDA: the split-K kernel (kernels/decode_attention) when the head dim is supported
// and the cache has q's dtype; otherwise the masked reference over all L positions.
torch::Tensor decode_attention(const torch::Tensor& q, const torch::Tensor& k_cache,
                               const torch::Tensor& v_cache, const torch::Tensor& pos,
                               bool use_kernels = true);

// The decode step's attention prologue: qkv (B, 1, H + 2 Hkv, Dh) -> q (B, H, Dh) =
// RMSNorm(rotate(q)); RMSNorm(rotate(k)) and v are written into k_cache/v_cache (B, Hkv, L,
// Dh) at row pos (1) int64 on the device. rotate(x) = x * cos_full + swap_halves(x) * sin_full
// with cos_full = [cos, cos], sin_full = [sin, -sin] (1, Dh) in qkv's dtype (apply_rotary's
// rotation, bit for bit). CUDA: one kernel (kernels/decode_attention/rope_append.h) when the
// caches have qkv's dtype; otherwise the same with LibTorch ops (the reference).
torch::Tensor decode_rope_append(const torch::Tensor& qkv, const torch::Tensor& cos_full,
                                 const torch::Tensor& sin_full, const torch::Tensor& pos,
                                 torch::Tensor& k_cache, torch::Tensor& v_cache, int64_t heads,
                                 bool use_kernels = true);

// x (..., K) @ weight (N, K)^T without bias, for inference: the small-batch GEMV kernel
// (kernels/gemv) for CUDA bf16 inputs of at most 2 rows, torch::linear otherwise (which
// autocast may cast). No autograd on the kernel path.
torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& weight, bool use_kernels = true);

// The decode step's matmuls with what surrounds them, one kernel each on the GEMV path
// (same conditions as linear()), the unfused ops otherwise (the reference):
//   norm_linear    linear(rms_norm(x), W)
//   norm_mlp_fc    relu(linear(rms_norm(x), W))^2
//   linear_add     residual + linear(x, W)
// overlap_launches (norm_linear, linear_add): on the GEMV path, programmatic dependent launch
// (cuda_ops::GemvFusion), so the kernel launched just before must not write W.
torch::Tensor norm_linear(const torch::Tensor& x, const torch::Tensor& weight,
                          bool use_kernels = true, bool overlap_launches = false);
torch::Tensor norm_mlp_fc(const torch::Tensor& x, const torch::Tensor& weight,
                          bool use_kernels = true);
torch::Tensor linear_add(const torch::Tensor& residual, const torch::Tensor& x,
                         const torch::Tensor& weight, bool use_kernels = true,
                         bool overlap_launches = false);

// The training loss, fused on CUDA (kernels/cross_entropy): per-row cross-entropy of the
// soft-capped logits (see ref::softcap_cross_entropy). logits (rows, width) with the first
// `vocab` columns counting, targets (rows) int64 with -1 = ignore -> (rows) fp32, 0 where
// ignored. Differentiable in logits.
torch::Tensor softcap_cross_entropy(const torch::Tensor& logits, const torch::Tensor& targets,
                                    int64_t vocab, double softcap, bool use_kernels = true);

// ---- The fused Transformer-block ops (kernels/fused_block; the Transformer block's CUDA
// path, docs/KERNELS.md). CUDA: the kernels when fused_block_supports(x); otherwise the
// reference (ref::add_rms_norm etc., which compute in fp32 and round once). eps is
// compat::rms_norm_eps of x's dtype, as compat::rms_norm.

// True when the kernels take x: a build with them, use_kernels, x on CUDA, fp32 or bf16.
bool fused_block_supports(const torch::Tensor& x, bool use_kernels = true);

// x, branch (..., C) -> (s = x + branch, RMSNorm(s)). Differentiable in both.
std::tuple<torch::Tensor, torch::Tensor> add_rms_norm(const torch::Tensor& x,
                                                      const torch::Tensor& branch,
                                                      bool use_kernels = true);

// RMSNorm(x) over the last dim (nanochat's norm()). Differentiable.
torch::Tensor rms_norm(const torch::Tensor& x, bool use_kernels = true);

// x (B, T, H, Dh), cos/sin (T, Dh/2) fp32 -> RMSNorm(rotate(x)) (B, T, H, Dh) contiguous: its
// (B, H, T, Dh) transpose is attention's input without a copy. Differentiable in x.
torch::Tensor rope_qk_norm(const torch::Tensor& x, const torch::Tensor& cos,
                           const torch::Tensor& sin, bool use_kernels = true);

// relu(u)^2 (the MLP activation). Differentiable.
torch::Tensor relu_square(const torch::Tensor& u, bool use_kernels = true);

}  // namespace hylab::ops
