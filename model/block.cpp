// A Transformer or Mamba block (see block.h).
#include "model/block.h"

#include "common/check.h"
#include "model/compat.h"
#include "model/ops.h"

namespace hylab {

BlockImpl::BlockImpl(const GPTConfig& cfg, BlockType type, int layer_idx)
    : type_(type),
      layer_idx_(layer_idx),
      n_kv_head_(cfg.n_kv_head),
      head_dim_(cfg.head_dim()),
      d_inner_(cfg.d_inner()),
      d_conv_(cfg.mamba_d_conv),
      d_state_(cfg.mamba_d_state),
      fused_block_(cfg.fused_block) {
  if (type == BlockType::kTransformer) {
    attn = register_module("attn", CausalSelfAttention(cfg));
    mlp = register_module("mlp", MLP(cfg));
  } else {
    mamba = register_module("mamba", MambaMixer(cfg));
    if (cfg.mamba_use_mlp) mlp = register_module("mlp", MLP(cfg));
  }
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x_in, const torch::Tensor& cos,
                                 const torch::Tensor& sin) {
  if (attn && fused_block_ && ops::fused_block_supports(x_in, use_kernels_)) {
    return forward_fused(x_in, cos, sin);
  }
  torch::Tensor x = x_in;
  if (attn) {
    x = x + attn(compat::rms_norm(x), cos, sin);
  } else {
    x = x + mamba(compat::rms_norm(x));
  }
  if (mlp) x = x + mlp(compat::rms_norm(x));
  return x;
}

torch::Tensor BlockImpl::forward_fused(const torch::Tensor& x, const torch::Tensor& cos,
                                       const torch::Tensor& sin) {
  auto a = attn->forward_fused(ops::rms_norm(x), cos, sin);  // (B, T, C)
  auto [x1, h] = ops::add_rms_norm(x, a);                     // x1 = x + a, h = norm(x1)
  return x1 + mlp->forward_fused(h);
}

torch::Tensor BlockImpl::forward_step(const torch::Tensor& x_in, const torch::Tensor& cos,
                                      const torch::Tensor& sin, LayerCache& cache, int64_t pos) {
  torch::NoGradGuard no_grad;
  torch::Tensor x = x_in;
  if (attn) {
    HYLAB_CHECK(cache.k.defined(), "layer {}: the cache has no KV tensors (not a Transformer layer?)",
                layer_idx_);
    x = x + attn->forward(compat::rms_norm(x), cos, sin, &cache, pos);
  } else {
    x = x + mamba->forward_step(compat::rms_norm(x), cache, pos);
  }
  if (mlp) x = x + mlp(compat::rms_norm(x));
  return x;
}

torch::Tensor BlockImpl::decode_step(const torch::Tensor& x_in, const torch::Tensor& cos,
                                     const torch::Tensor& sin, LayerCache& cache,
                                     const torch::Tensor& pos, bool use_kernels) {
  torch::NoGradGuard no_grad;
  torch::Tensor x = x_in;
  if (attn) {
    HYLAB_CHECK(cache.k.defined(), "layer {}: the cache has no KV tensors (not a Transformer layer?)",
                layer_idx_);
    x = attn->decode(x, cos, sin, cache, pos, use_kernels);  // x + attn(norm(x))
  } else {
    x = mamba->decode(x, cache);  // x + mamba(norm(x)), one token
  }
  if (mlp) x = mlp->decode(x, use_kernels);  // x + mlp(norm(x))
  return x;
}

LayerCache BlockImpl::make_cache(int64_t batch, int64_t max_len, torch::Device device,
                                 torch::Dtype dtype) const {
  LayerCache c;
  auto opts = torch::TensorOptions().device(device).dtype(dtype);
  if (type_ == BlockType::kTransformer) {
    c.k = torch::zeros({batch, n_kv_head_, max_len, head_dim_}, opts);  // (B, Hkv, max_len, Dh)
    c.v = torch::zeros({batch, n_kv_head_, max_len, head_dim_}, opts);
  } else {
    c.conv_state = torch::zeros({batch, d_inner_, d_conv_}, opts);                   // (B, E, K)
    c.ssm_state = torch::zeros({batch, d_inner_, d_state_}, opts.dtype(torch::kFloat));  // (B, E, N)
  }
  return c;
}

Block create_block(const std::string& type, const GPTConfig& cfg, int layer_idx) {
  BlockType t;
  if (!parse_block_type(type, &t)) {
    throw ConfigError(fmt::format("block type \"{}\" (layer {}): expected T/transformer or M/mamba",
                                  type, layer_idx));
  }
  return Block(cfg, t, layer_idx);
}

}  // namespace hylab
