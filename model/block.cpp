// A block: pre-norm mixer and optional MLP, both residual (see block.h).
#include "model/block.h"

#include "common/check.h"
#include "model/compat.h"

namespace hylab {

BlockImpl::BlockImpl(const GPTConfig& cfg, BlockType type, int layer_idx)
    : type_(type), layer_idx_(layer_idx) {
  const MixerType& row = mixer_type(type);
  mixer_ = row.build(cfg);
  register_module(row.module_name, mixer_->module());
  if (row.has_mlp(cfg)) mlp = register_module("mlp", MLP(cfg));
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x_in, const torch::Tensor& cos,
                                 const torch::Tensor& sin) {
  torch::Tensor x = x_in + mixer_->forward(compat::rms_norm(x_in), cos, sin);
  if (mlp) x = x + mlp(compat::rms_norm(x));
  return x;
}

torch::Tensor BlockImpl::forward_step(const torch::Tensor& x_in, const torch::Tensor& cos,
                                      const torch::Tensor& sin, LayerCache& cache, int64_t pos) {
  torch::NoGradGuard no_grad;
  torch::Tensor x = x_in + mixer_->forward_step(compat::rms_norm(x_in), cos, sin, cache, pos);
  if (mlp) x = x + mlp(compat::rms_norm(x));
  return x;
}

torch::Tensor BlockImpl::decode_step(const torch::Tensor& x_in, const torch::Tensor& cos,
                                     const torch::Tensor& sin, LayerCache& cache,
                                     const torch::Tensor& pos, bool use_kernels) {
  torch::NoGradGuard no_grad;
  torch::Tensor x =
      x_in + mixer_->decode_step(compat::rms_norm(x_in), cos, sin, cache, pos, use_kernels);
  if (mlp) x = x + mlp->decode(compat::rms_norm(x), use_kernels);
  return x;
}

LayerCache BlockImpl::make_cache(int64_t batch, int64_t max_len, torch::Device device,
                                 torch::Dtype dtype) const {
  return mixer_->make_cache(batch, max_len, device, dtype);
}

Block create_block(const std::string& type, const GPTConfig& cfg, int layer_idx) {
  BlockType t;
  if (!parse_block_type(type, &t)) {
    throw ConfigError(fmt::format("block type \"{}\" (layer {}): expected {}", type, layer_idx,
                                  block_type_choices()));
  }
  return Block(cfg, t, layer_idx);
}

}  // namespace hylab
