// Plain-LibTorch reference implementations of the Mamba primitives and the loss: the CPU
// path and the oracle for the CUDA kernels. Exact (no approximations), computed in fp32 (or
// fp64 when given fp64 inputs) whatever the input dtype, and returned in the input dtype of
// u / x (the loss: fp32 per row).
// Same signatures and shapes as model/ops.h. Differentiable through LibTorch autograd.
#pragma once

#include <torch/torch.h>

#include <tuple>

namespace hylab::ref {

// Returns (y, last_state (B, E, N)).
std::tuple<torch::Tensor, torch::Tensor> selective_scan(
    const torch::Tensor& u, const torch::Tensor& delta, const torch::Tensor& A,
    const torch::Tensor& Bm, const torch::Tensor& Cm, const torch::Tensor& D,
    const torch::Tensor& z, const torch::Tensor& delta_bias, bool delta_softplus);

torch::Tensor causal_conv1d(const torch::Tensor& x, const torch::Tensor& weight,
                            const torch::Tensor& bias, bool silu);

torch::Tensor causal_conv1d_update(const torch::Tensor& x, torch::Tensor& conv_state,
                                   const torch::Tensor& weight, const torch::Tensor& bias,
                                   bool silu);

torch::Tensor selective_state_update(torch::Tensor& ssm_state, const torch::Tensor& x,
                                     const torch::Tensor& dt, const torch::Tensor& A,
                                     const torch::Tensor& Bm, const torch::Tensor& Cm,
                                     const torch::Tensor& D, const torch::Tensor& z,
                                     const torch::Tensor& dt_bias, bool dt_softplus);

// One query per sequence over a KV cache with positions on the device (ops::decode_attention):
// q (B, H, Dh), k/v (B, Hkv, L, Dh), pos (1) or (B) int64 -> (B, H, Dh) in q's dtype. Scores
// over all L positions, masked past pos[b], softmax in fp32 (fp64 for fp64 inputs).
torch::Tensor decode_attention(const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, const torch::Tensor& pos);

// The decode step's attention prologue with LibTorch ops (ops::decode_rope_append): the
// rotation as apply_rotary rounds it, compat::rms_norm, index_copy_ into the caches.
torch::Tensor decode_rope_append(const torch::Tensor& qkv, const torch::Tensor& cos_full,
                                 const torch::Tensor& sin_full, const torch::Tensor& pos,
                                 torch::Tensor& k_cache, torch::Tensor& v_cache, int64_t heads);

// Per-row cross-entropy of soft-capped logits (nanochat's loss): logits (rows, width) of any
// float dtype, the first `vocab` columns count; z = softcap * tanh(x / softcap) in fp32 (no
// cap when softcap <= 0); loss_r = logsumexp(z_r) - z_r[t_r], 0 where t_r == -1. -> (rows) fp32.
torch::Tensor softcap_cross_entropy(const torch::Tensor& logits, const torch::Tensor& targets,
                                    int64_t vocab, double softcap);

// ---- The fused Transformer-block ops (ops::add_rms_norm etc., kernels/fused_block): math in
// fp32 (fp64 for fp64 inputs), one rounding to the input dtype at the end, except that the
// residual sum is rounded first (as LibTorch's add rounds it). eps = compat::rms_norm_eps of
// the input dtype (nanochat's norm()).

// s = x + branch (branch undefined: s = x), y = s / sqrt(mean(s^2) + eps) over the last dim.
// Returns (s, y) in s's dtype; s is x itself when branch is undefined. eps < 0:
// compat::rms_norm_eps of that dtype (tests of low-precision kernels pass the kernel's eps with fp64 inputs).
std::tuple<torch::Tensor, torch::Tensor> add_rms_norm(const torch::Tensor& x,
                                                      const torch::Tensor& branch,
                                                      double eps = -1);

// x (B, T, H, Dh), cos/sin (T, Dh/2) -> RMSNorm(rotate(x)) (B, T, H, Dh): apply_rotary's
// split-half rotation with fp32 tables, then the norm over Dh.
torch::Tensor rope_qk_norm(const torch::Tensor& x, const torch::Tensor& cos,
                           const torch::Tensor& sin, double eps = -1);

// relu(u)^2.
torch::Tensor relu_square(const torch::Tensor& u);

}  // namespace hylab::ref
