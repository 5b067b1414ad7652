// One block shape for both layer kinds (a hybrid is data, not subclasses):
//   Transformer (T): x + attn(norm(x)),  x + mlp(norm(x))
//   Mamba (M):       x + mamba(norm(x)) [, x + mlp(norm(x)) when mamba_use_mlp]
// Parameter names: h.<i>.attn.*, h.<i>.mamba.*, h.<i>.mlp.*.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "common/run_config.h"
#include "model/inference_cache.h"
#include "model/mamba.h"
#include "model/transformer.h"

namespace hylab {

class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(const GPTConfig& cfg, BlockType type, int layer_idx);

  BlockType type() const { return type_; }
  int layer_idx() const { return layer_idx_; }

  // x (B, T, C); cos/sin (T, Dh/2) for positions [0, T) (ignored by Mamba blocks).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

  // Inference for positions [pos, pos+T) with this layer's cache. No autograd.
  torch::Tensor forward_step(const torch::Tensor& x, const torch::Tensor& cos,
                             const torch::Tensor& sin, LayerCache& cache, int64_t pos);

  // One decode token per sequence, its position `pos` (1) int64 on the device (T blocks read
  // it; M blocks carry their state); cos/sin are the rows [cos, cos], [sin, -sin] (1, Dh) of
  // ops::decode_rope_append.
  // Static shapes: CUDA-graph capturable.
  torch::Tensor decode_step(const torch::Tensor& x, const torch::Tensor& cos,
                            const torch::Tensor& sin, LayerCache& cache, const torch::Tensor& pos,
                            bool use_kernels);

  // Empty tensors of this layer's cache kind for `batch` sequences of up to `max_len`.
  LayerCache make_cache(int64_t batch, int64_t max_len, torch::Device device,
                        torch::Dtype dtype) const;

  // Our kernels allowed (GPT::set_use_kernels): with cfg.fused_block, T blocks on CUDA take
  // the fused path (forward_fused).
  void set_use_kernels(bool on) { use_kernels_ = on; }

  CausalSelfAttention attn{nullptr};  // T blocks
  MambaMixer mamba{nullptr};          // M blocks
  MLP mlp{nullptr};                   // T blocks, and M blocks with mamba_use_mlp

 private:
  BlockType type_;
  int layer_idx_;
  int64_t n_kv_head_, head_dim_, d_inner_, d_conv_, d_state_;
  bool fused_block_ = true, use_kernels_ = true;

  // T block with the fused kernels (model/ops.h): rms_norm, attention with rope_qk_norm, the
  // residual add fused with the second norm, relu_square; activations saved as outputs.
  torch::Tensor forward_fused(const torch::Tensor& x, const torch::Tensor& cos,
                              const torch::Tensor& sin);
};
TORCH_MODULE(Block);

// The block factory: `type` is "T"/"transformer" or "M"/"mamba", any case. Anything else
// throws ConfigError: `block type "X" (layer 3): expected T/transformer or M/mamba`.
Block create_block(const std::string& type, const GPTConfig& cfg, int layer_idx);

}  // namespace hylab
