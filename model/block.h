// One block shape for every layer kind (a hybrid is data, not subclasses):
//   x + mixer(norm(x)) [, x + mlp(norm(x)) when the kind's row says an MLP follows]
// The mixer is the block type's row of the mixer table (model/mixer.h): T attention,
// M Mamba, M2 Mamba-2. Parameter names: h.<i>.attn.*, h.<i>.mamba.*, h.<i>.mamba2.*,
// h.<i>.mlp.*.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>

#include "common/run_config.h"
#include "model/inference_cache.h"
#include "model/mixer.h"
#include "model/transformer.h"

namespace hylab {

class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(const GPTConfig& cfg, BlockType type, int layer_idx);

  BlockType type() const { return type_; }
  int layer_idx() const { return layer_idx_; }

  // x (B, T, C); cos/sin (T, Dh/2) for positions [0, T) (read by attention only).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

  // Inference for positions [pos, pos+T) with this layer's cache. No autograd.
  torch::Tensor forward_step(const torch::Tensor& x, const torch::Tensor& cos,
                             const torch::Tensor& sin, LayerCache& cache, int64_t pos);

  // One decode token per sequence on the residual stream x (B, 1, C), its position `pos`
  // (1) int64 on the device (attention reads it; recurrent mixers carry their state); cos/sin
  // are the rows [cos, cos], [sin, -sin] (1, Dh) of ops::decode_rope_append. The mixer and
  // the MLP each take and return the residual stream, so they can fuse the norm before and
  // the residual add after their matmuls (ops::norm_linear, ops::linear_add).
  // Static shapes: CUDA-graph capturable.
  torch::Tensor decode_step(const torch::Tensor& x, const torch::Tensor& cos,
                            const torch::Tensor& sin, LayerCache& cache, const torch::Tensor& pos,
                            bool use_kernels);

  // Empty tensors of this layer's cache kind for `batch` sequences of up to `max_len`.
  LayerCache make_cache(int64_t batch, int64_t max_len, torch::Device device,
                        torch::Dtype dtype) const;

  Mixer& mixer() { return *mixer_; }
  const Mixer& mixer() const { return *mixer_; }
  // The mixer's module as its concrete type, or nullptr when the block is of another kind:
  // block->mixer_as<MambaMixerImpl>().
  template <class ModuleImpl>
  std::shared_ptr<ModuleImpl> mixer_as() const {
    return std::dynamic_pointer_cast<ModuleImpl>(mixer_->module());
  }

  // Our kernels allowed (GPT::set_use_kernels): with cfg.fused_block, blocks on CUDA take
  // the fused path (forward_fused), and the mixer its own kernels.
  void set_use_kernels(bool on);

  MLP mlp{nullptr};  // when the kind's row says so (T always; M/M2 per mamba(2)_use_mlp)

 private:
  BlockType type_;
  int layer_idx_;
  std::unique_ptr<Mixer> mixer_;
  bool fused_block_ = true, use_kernels_ = true;

  // The block with the fused kernels (model/ops.h): rms_norm, the mixer's fused forward
  // (attention: rope_qk_norm), the residual add fused with the MLP's norm, relu_square;
  // activations saved as outputs.
  torch::Tensor forward_fused(const torch::Tensor& x, const torch::Tensor& cos,
                              const torch::Tensor& sin);
};
TORCH_MODULE(Block);

// The block factory: `type` is any name parse_block_type accepts ("T", "mamba", "M2", any
// case). Anything else throws ConfigError:
// `block type "X" (layer 3): expected T/transformer, M/mamba or M2/mamba2`.
Block create_block(const std::string& type, const GPTConfig& cfg, int layer_idx);

}  // namespace hylab
