// The Mamba-2 (M2) mixer: multi-head SSD with a scalar decay per head, as mamba_ssm's Mamba2
// (Dao & Gu, "Transformers are SSMs", 2024), written in plain LibTorch with matrix products.
//
//   zxbcdt = in_proj(u)                       (B, T, 2E + 2GN + H): z | xBC | dt
//   xBC    = silu(causal_conv1d(xBC))         depthwise, width K, with bias, over x, B and C
//   x, Bm, Cm = split(xBC)                    (B, T, H, P), (B, T, G, N), (B, T, G, N)
//   dt     = softplus(dt + dt_bias)           (B, T, H)        A = -exp(A_log) (H)
//   per head h (group g = h / (H/G)), state S (P, N):
//     S_t = exp(dt_t A) S_{t-1} + dt_t x_t Bm_t^T,   y_t = S_t Cm_t + D x_t
//   y      = rmsnorm(y * silu(z)) * norm_weight   per group of E/G channels (eps 1e-5)
//   out    = out_proj(y)                      (B, T, C)
//
// E = mamba2_expand * C, P = mamba2_headdim, H = E / P, G = mamba2_ngroups, N = mamba2_d_state,
// K = mamba2_d_conv. The scan is the chunked SSD algorithm (ssd_chunked, chunks of Q =
// mamba2_chunk_size): within a chunk the output is a masked (Q x Q) matrix product, across
// chunks a recurrence over the chunk-end states. No custom kernels.
//
// Initialisation (mamba_ssm's Mamba2; never touched by the generic init): A = U[1, 16] per
// head, stored as A_log; dt_bias = softplus^-1(dt), dt log-uniform in [0.001, 0.1] floored at
// 1e-4; D = 1; conv ~ U(+-1/sqrt(K)); norm_weight = 1; out_proj = 0 (hylab's rule for every
// residual branch, as Mamba's). in_proj takes the generic fan-in normal init.
//
// Decode state per sequence: conv_state (B, E + 2GN, K) (the last K pre-conv inputs), in the
// activations' dtype, and ssm_state (B, H, P, N) fp32 (fp64 for fp64 models): constant in T.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "common/run_config.h"
#include "model/inference_cache.h"

namespace hylab {

// The chunked SSD scan. x (B, T, H, P); dt (B, T, H) after softplus; A (H) < 0; Bm, Cm
// (B, T, G, N) with G dividing H; initial_state (B, H, P, N) or undefined (zeros); chunk Q
// -> (y (B, T, H, P) without the D term, final state (B, H, P, N)). Any T >= 1 (padded to a
// multiple of Q inside). Decays and states are computed in fp32 (fp64 for fp64 inputs).
// Differentiable.
std::pair<torch::Tensor, torch::Tensor> ssd_chunked(const torch::Tensor& x, const torch::Tensor& dt,
                                                    const torch::Tensor& A, const torch::Tensor& Bm,
                                                    const torch::Tensor& Cm, int64_t chunk,
                                                    const torch::Tensor& initial_state = {});

class Mamba2MixerImpl : public torch::nn::Module {
 public:
  explicit Mamba2MixerImpl(const GPTConfig& cfg);

  // mamba_ssm's init of own_init_parameters() (see above).
  void reset_mamba2_parameters();
  std::vector<torch::Tensor> own_init_parameters() const;
  // The AdamW (scalar_lr) parameters: dt_bias, A_log, D, conv1d_*, norm_weight.
  std::vector<torch::Tensor> scalar_parameters() const;

  // (B, T, C) normed -> (B, T, C). Differentiable.
  torch::Tensor forward(const torch::Tensor& x);

  // Inference over T new tokens continuing the sequence held in `cache` (conv_state,
  // ssm_state; zeros = an empty sequence), which it updates. T == 1 goes through step().
  // No autograd.
  torch::Tensor forward_step(const torch::Tensor& x, LayerCache& cache);

  // One token per sequence: x (B, C) -> (B, C), the recurrence above on the cache. Static
  // shapes, no host sync (CUDA-graph capturable).
  torch::Tensor step(const torch::Tensor& x, LayerCache& cache, bool use_kernels);

  // conv_state (B, E + 2GN, K) in `dtype`, ssm_state (B, H, P, N) fp32 (fp64 if dtype is).
  LayerCache make_cache(int64_t batch, torch::Device device, torch::Dtype dtype) const;

  void set_use_kernels(bool on) { use_kernels_ = on; }

  torch::nn::Linear in_proj{nullptr};   // (2E + 2GN + H, C), no bias
  torch::Tensor conv1d_weight;          // (E + 2GN, K)
  torch::Tensor conv1d_bias;            // (E + 2GN)
  torch::Tensor dt_bias;                // (H) fp32
  torch::Tensor A_log;                  // (H) fp32
  torch::Tensor D;                      // (H) fp32
  torch::Tensor norm_weight;            // (E)
  torch::nn::Linear out_proj{nullptr};  // (C, E), no bias

 private:
  // y (..., E), z (..., E) -> rmsnorm(y * silu(z)) per group of E/G channels, * norm_weight.
  torch::Tensor gated_norm(const torch::Tensor& y, const torch::Tensor& z) const;

  int64_t E_, H_, P_, G_, N_, K_, Q_;
  bool use_kernels_ = true;
};
TORCH_MODULE(Mamba2Mixer);

}  // namespace hylab
