// The Transformer block's parts, as in nanochat's gpt.py: rotary embeddings, causal
// self-attention (rotary, then QK-norm, GQA/MQA, no biases) and the ReLU^2 MLP (4x, no bias).
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "common/run_config.h"
#include "model/inference_cache.h"

namespace hylab {

// cos and sin of the rotary angles for positions [0, T): (T, Dh/2) fp32 each.
// Channel pair i rotates with frequency base^(-2i/Dh).
std::pair<torch::Tensor, torch::Tensor> rotary_tables(int64_t T, int64_t head_dim, double base);

// Rotates the two halves of the last dim of x (B, T, H, Dh) by the angles of cos/sin (T, Dh/2)
// (nanochat's split-half convention). Returns x's dtype.
torch::Tensor apply_rotary(const torch::Tensor& x, const torch::Tensor& cos,
                           const torch::Tensor& sin);

class CausalSelfAttentionImpl : public torch::nn::Module {
 public:
  explicit CausalSelfAttentionImpl(const GPTConfig& cfg);

  // x (B, T, C) normed; cos/sin (T, Dh/2) for positions [pos, pos+T) -> (B, T, C).
  // With a cache, k/v of these T positions are written at [pos, pos+T) and the queries
  // attend to all cached positions [0, pos+T); without one, plain causal attention (pos 0).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos,
                        const torch::Tensor& sin, LayerCache* cache = nullptr, int64_t pos = 0);

  // One decode token per sequence with its position on the device: x (B, 1, C) normed;
  // cos_full = [cos, cos], sin_full = [sin, -sin] (1, Dh) (ops::decode_rope_append); pos (1)
  // int64. Writes k/v at cache position pos and attends to [0, pos] (ops::decode_attention).
  // With fuse_qkv() the three projections are one GEMM. Static shapes, no host sync:
  // CUDA-graph capturable.
  torch::Tensor decode(const torch::Tensor& x, const torch::Tensor& cos_full,
                       const torch::Tensor& sin_full, LayerCache& cache, const torch::Tensor& pos,
                       bool use_kernels);

  // (Re)builds qkv_weight = [c_q; c_k; c_v] ((H + 2 Hkv) * Dh, C) for decode(): in place when
  // it exists already (captured graphs keep reading it). Not a parameter, not saved.
  void fuse_qkv();

  // Training forward of the fused path (Block's, on CUDA): q and k through ops::rope_qk_norm
  // (rotary + QK-norm in one kernel, written in the (B, T, H, Dh) layout whose transpose
  // attention reads without a copy). Same math as forward(x, cos, sin) without a cache.
  torch::Tensor forward_fused(const torch::Tensor& x, const torch::Tensor& cos,
                              const torch::Tensor& sin);

  torch::nn::Linear c_q{nullptr};     // (H*Dh, C)
  torch::nn::Linear c_k{nullptr};     // (Hkv*Dh, C)
  torch::nn::Linear c_v{nullptr};     // (Hkv*Dh, C)
  torch::nn::Linear c_proj{nullptr};  // (C, C), zero-initialised

 private:
  int64_t n_head_, n_kv_head_, head_dim_;
  torch::Tensor qkv_weight_;  // fuse_qkv()
};
TORCH_MODULE(CausalSelfAttention);

class MLPImpl : public torch::nn::Module {
 public:
  explicit MLPImpl(const GPTConfig& cfg);
  torch::Tensor forward(const torch::Tensor& x);  // (B, T, C) -> (B, T, C): c_proj(relu(c_fc x)^2)
  // A decode step on the residual stream x (B, 1, C): x + forward(rms_norm(x)), in two
  // kernels on the GEMV path (ops::norm_mlp_fc, ops::linear_add).
  torch::Tensor decode(const torch::Tensor& x, bool use_kernels);
  // The fused path's forward: ops::relu_square (one kernel; saves only its output).
  torch::Tensor forward_fused(const torch::Tensor& x);

  torch::nn::Linear c_fc{nullptr};    // (4C, C)
  torch::nn::Linear c_proj{nullptr};  // (C, 4C), zero-initialised
};
TORCH_MODULE(MLP);

}  // namespace hylab
