// The hybrid GPT: nanochat's Transformer with any layer swappable for a Mamba block.
//
// Design (mirrors nanochat/gpt.py, plus Mamba):
//   - token embedding wte (V padded to a multiple of 64), RMSNorm right after it;
//   - n_layer blocks, each Transformer (T), Mamba (M) or Mamba-2 (M2) by block_pattern
//     (model/block.h; the kinds are rows of the mixer table, model/mixer.h);
//   - RMSNorm without weights everywhere (eps = machine epsilon, like F.rms_norm);
//   - rotary embeddings (base rope_base, tables for 10 * sequence_len positions) for
//     attention only (rope: false makes them the identity); Mamba blocks get no positional
//     information;
//   - final RMSNorm, untied lm_head, logits cropped to vocab_size and soft-capped in fp32:
//     softcap * tanh(logits / softcap) (off when logit_softcap = 0);
//   - init (init_weights): wte ~ N(0, 1); lm_head, every c_proj and Mamba's out_proj = 0;
//     other matrices ~ N(0, std) with std = min(1, sqrt(fan_out/fan_in)) / sqrt(fan_in);
//     the mixers' own-init parameters (Mamba's A_log, D, dt_proj, conv1d, model/mamba.h;
//     Mamba-2's, model/mamba2.h) keep their own init.
//
// Mixed precision: parameters stay fp32; on CUDA wrap calls in compat::AutocastGuard for bf16.
// The model is constructed initialised (the constructor calls init_weights()).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/run_config.h"
#include "model/block.h"
#include "model/inference_cache.h"

namespace hylab {

class GPTImpl : public torch::nn::Module {
 public:
  explicit GPTImpl(const GPTConfig& cfg) : GPTImpl(cfg, /*init=*/true) {}
  // init = false skips init_weights() (the parameters hold LibTorch's default init): for
  // copies whose weights are loaded right after (model/decoder.h).
  GPTImpl(const GPTConfig& cfg, bool init);

  // nanochat's init plus Mamba's own init (never overwritten by the generic rules).
  // Draws from the global torch generator: seed with torch::manual_seed first.
  void init_weights();

  // idx (B, T) int64, any T (rotary tables extend) -> logits (B, T, vocab_size) fp32, soft-capped.
  torch::Tensor forward(const torch::Tensor& idx);

  // Mean cross-entropy of the soft-capped logits over positions whose target is not -1, or
  // per-token losses (B, T) (0 where the target is -1) when per_token. On CUDA with kernels
  // on, the softcap and the cross-entropy are one fused kernel (kernels/cross_entropy).
  torch::Tensor loss(const torch::Tensor& idx, const torch::Tensor& targets, bool per_token = false);

  struct ParamGroups {
    std::vector<torch::Tensor> matrix;     // Muon: 2-D weights inside blocks (attn, mlp,
                                           //   mamba in_proj/x_proj/dt_proj.weight/out_proj,
                                           //   mamba2 in_proj/out_proj)
    std::vector<torch::Tensor> embedding;  // AdamW: wte
    std::vector<torch::Tensor> lm_head;    // AdamW: lm_head
    std::vector<torch::Tensor> scalar;     // AdamW: Mixer::scalar_parameters() (mamba A_log,
                                           //   D, dt_proj.bias, conv1d_*; mamba2's likewise)
  };
  // Every parameter in exactly one group, in named_parameters() order.
  ParamGroups param_groups();

  const GPTConfig& config() const { return cfg_; }

  // false = the reference ops everywhere (config `kernels: reference`); true = our CUDA
  // kernels for CUDA tensors when the build has them.
  void set_use_kernels(bool on);

  // The dtype activations have in forward_step: bf16 when the weights are on CUDA and CUDA
  // bf16 autocast is on for this thread (or when the matrices are bf16 already), otherwise
  // the parameters' dtype. Inference caches are allocated in it.
  torch::Dtype compute_dtype() const;

  // A cache for `batch` sequences of up to `max_len` tokens, on the model's device, KV and
  // conv states in `dtype` (default compute_dtype()), SSM states fp32. Its bytes() equal
  // batch * cache_bytes_per_sequence(cfg, max_len, element size of dtype) (model/accounting.h).
  InferenceCache make_cache(int64_t batch, int64_t max_len);
  InferenceCache make_cache(int64_t batch, int64_t max_len, torch::Dtype dtype);

  // idx (B, T_new): the next T_new tokens of each sequence -> their logits (B, T_new, V), the
  // same as forward() on the whole sequence would give at those positions. Advances
  // cache.pos by T_new. Use T_new > 1 for the prompt (prefill), then 1 per decoded token.
  // last_only: logits of the last position only, (B, 1, V) (a long prefill needs no more).
  // No autograd.
  torch::Tensor forward_step(const torch::Tensor& idx, InferenceCache& cache, bool last_only = false);

  // One decode token per sequence with static shapes and no host sync, so that a CUDA graph
  // can capture it (model/decoder.h): idx (B, 1) int64, pos (1) int64 on the model's device
  // (the tokens' position; < cache.max_len) -> logits (B, V) fp32. Same result as
  // forward_step(idx, cache) at cache.pos == pos, but advances nothing: the caller moves pos
  // and cache.pos.
  torch::Tensor decode_step(const torch::Tensor& idx, const torch::Tensor& pos, InferenceCache& cache);

  bool use_kernels() const { return use_kernels_; }

  // Positions the rotary tables cover now: 10 * sequence_len (as nanochat) at construction;
  // forward and make_cache extend them to any longer context (the 2x/4x length evals).
  int64_t max_positions() const { return rotary_len_; }

  torch::nn::Embedding wte{nullptr};  // (V_padded, C)
  torch::nn::ModuleList h{nullptr};   // n_layer Blocks
  torch::nn::Linear lm_head{nullptr};  // (V_padded, C)

  Block block(int i) const { return h->ptr<BlockImpl>(i); }

 private:
  // idx (B, T) -> the normalised token embeddings (B, T, C), the start of the residual
  // stream: bf16 under CUDA autocast (as nanochat's bf16 embedding makes it), otherwise the
  // parameters' dtype.
  torch::Tensor embed(const torch::Tensor& idx);
  // idx (B, T) -> the last block's output (B, T, C).
  torch::Tensor hidden(const torch::Tensor& idx);
  // (B, T, C) -> (B, T, V) fp32; decode: lm_head through ops::linear (small-batch GEMV).
  torch::Tensor logits_from_hidden(const torch::Tensor& x, bool decode = false);
  // Rotary tables for positions [pos, pos+T) on `device`: (T, Dh/2) each.
  std::pair<torch::Tensor, torch::Tensor> rotary(int64_t pos, int64_t T, torch::Device device);
  // Grows the rotary tables to cover `positions` (at least doubling); no-op when they do.
  void extend_rotary(int64_t positions);

  GPTConfig cfg_;
  int64_t rotary_len_;
  torch::Tensor cos_, sin_;  // (rotary_len, Dh/2) fp32; not parameters, not saved
  torch::Tensor cos_full_, sin_full_;  // decode_step's (rotary_len, Dh) tables: [cos, cos], [sin, -sin]
  bool use_kernels_ = true;
};
TORCH_MODULE(GPT);

}  // namespace hylab
