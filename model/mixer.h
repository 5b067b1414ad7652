// The mixer interface: what a block type ("T", "M", "M2") puts in front of the block's MLP.
//
// A block is pre-norm -> mixer -> residual [-> pre-norm -> MLP -> residual] (model/block.h).
// Everything that differs between layer kinds lives behind Mixer, and the kinds themselves
// are rows of one table (mixer_type(), model/mixer.cpp):
//
//   type | module name (parameter prefix h.<i>.<name>.*) | builder | MLP after it?
//   T    | attn   | CausalSelfAttention (transformer.h)   | always
//   M    | mamba  | MambaMixer (mamba.h)                  | mamba_use_mlp
//   M2   | mamba2 | Mamba2Mixer (mamba2.h)                | mamba2_use_mlp
//
// Adding a kind = a BlockType value and name row (common/run_config.cpp), one file with its
// module and its Mixer, and one row here; Block, GPT, the decoder and the optimiser groups
// follow from the interface. Parameter counts/FLOPs/cache bytes: model/accounting.cpp.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "common/run_config.h"
#include "model/inference_cache.h"

namespace hylab {

// One layer's mixer. Not a Module itself: module() is the Module that holds its parameters
// (the block registers it under the kind's name, so checkpoints keep their names).
class Mixer {
 public:
  virtual ~Mixer() = default;

  virtual std::shared_ptr<torch::nn::Module> module() const = 0;

  // x (B, T, C) normed; cos/sin (T, Dh/2) rotary tables of positions [0, T) (attention
  // only) -> (B, T, C). Differentiable.
  virtual torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos,
                                const torch::Tensor& sin) = 0;

  // Inference over positions [pos, pos+T) with this layer's cache. No autograd.
  virtual torch::Tensor forward_step(const torch::Tensor& x, const torch::Tensor& cos,
                                     const torch::Tensor& sin, LayerCache& cache, int64_t pos) = 0;

  // The same as forward() inside the fused block (BlockImpl::forward_fused, CUDA): a mixer
  // with fused kernels of its own overrides it (attention: rotary + QK-norm in one kernel).
  virtual torch::Tensor forward_fused(const torch::Tensor& x, const torch::Tensor& cos,
                                      const torch::Tensor& sin) {
    return forward(x, cos, sin);
  }

  // One decode token per sequence on the residual stream x (B, 1, C) (not normed): returns
  // x + mixer(rms_norm(x)), so the norm and the residual add can be fused into the mixer's
  // first and last matmuls (ops::norm_linear, ops::linear_add). pos (1) int64 on the device;
  // cos/sin the rows [cos, cos], [sin, -sin] (1, Dh). Static shapes, no host sync: CUDA-graph
  // capturable (model/decoder.h).
  virtual torch::Tensor decode_step(const torch::Tensor& x, const torch::Tensor& cos,
                                    const torch::Tensor& sin, LayerCache& cache,
                                    const torch::Tensor& pos, bool use_kernels) = 0;

  // This layer's (zeroed) cache for `batch` sequences of up to `max_len` tokens; activations
  // in `dtype`, recurrent states fp32. Its bytes are accounting.h's cache_bytes per layer.
  virtual LayerCache make_cache(int64_t batch, int64_t max_len, torch::Device device,
                                torch::Dtype dtype) const = 0;

  // Optimiser routing: parameters that go to AdamW at scalar_lr (decay rates, biases,
  // filters, norm weights); every other parameter of module() is a matrix for Muon.
  virtual std::vector<torch::Tensor> scalar_parameters() const { return {}; }

  // Parameters with an init of their own, which GPT's generic init skips; reset_parameters()
  // (re)applies it (called after the generic init).
  virtual std::vector<torch::Tensor> own_init_parameters() const { return {}; }
  virtual void reset_parameters() {}

  virtual void set_use_kernels(bool /*on*/) {}
  // Decode step on CUDA: fused kernels where the mixer has them (true, the default) or the
  // unfused ops they replace (the twin tests compare with). Mamba (v1) only so far.
  virtual void set_fused_decode(bool /*on*/) {}

  // After the weights change, before decoding (attention fuses q/k/v into one matrix, Mamba
  // keeps A = -exp(A_log)).
  virtual void prepare_decode() {}
};

// A row of the table.
struct MixerType {
  BlockType type;
  const char* module_name;  // parameter prefix: h.<i>.<module_name>.*
  std::unique_ptr<Mixer> (*build)(const GPTConfig& cfg);
  bool (*has_mlp)(const GPTConfig& cfg);  // does an MLP follow this mixer?
};

// The row of `type` (every BlockType has one).
const MixerType& mixer_type(BlockType type);

// Builders of the kinds, defined next to each kind's module.
std::unique_ptr<Mixer> build_attention_mixer(const GPTConfig& cfg);  // model/mixer.cpp
std::unique_ptr<Mixer> build_mamba_mixer(const GPTConfig& cfg);      // model/mixer.cpp
std::unique_ptr<Mixer> build_mamba2_mixer(const GPTConfig& cfg);     // model/mamba2.cpp

}  // namespace hylab
