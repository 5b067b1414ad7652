// A block: pre-norm mixer and optional MLP, both residual (see block.h).
#include "model/block.h"

#include "common/check.h"
#include "model/compat.h"
#include "model/ops.h"

namespace hylab {

BlockImpl::BlockImpl(const GPTConfig& cfg, BlockType type, int layer_idx)
    : type_(type), layer_idx_(layer_idx), fused_block_(cfg.fused_block) {
  const MixerType& row = mixer_type(type);
  mixer_ = row.build(cfg);
  register_module(row.module_name, mixer_->module());
  if (row.has_mlp(cfg)) mlp = register_module("mlp", MLP(cfg));
}

void BlockImpl::set_use_kernels(bool on) {
  use_kernels_ = on;
  mixer_->set_use_kernels(on);
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x_in, const torch::Tensor& cos,
                                 const torch::Tensor& sin) {
  if (fused_block_ && ops::fused_block_supports(x_in, use_kernels_)) {
    return forward_fused(x_in, cos, sin);
  }
  torch::Tensor x = x_in + mixer_->forward(compat::rms_norm(x_in), cos, sin);
  if (mlp) x = x + mlp(compat::rms_norm(x));
  return x;
}

torch::Tensor BlockImpl::forward_fused(const torch::Tensor& x, const torch::Tensor& cos,
                                       const torch::Tensor& sin) {
  auto a = mixer_->forward_fused(ops::rms_norm(x), cos, sin);  // (B, T, C)
  if (!mlp) return x + a;
  auto [x1, h] = ops::add_rms_norm(x, a);  // x1 = x + a, h = norm(x1)
  return x1 + mlp->forward_fused(h);
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
  torch::Tensor x = mixer_->decode_step(x_in, cos, sin, cache, pos, use_kernels);  // x + mixer(norm(x))
  if (mlp) x = mlp->decode(x, use_kernels);  // x + mlp(norm(x))
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
