// Rotary embeddings, causal self-attention and the MLP of a Transformer block.
#include "model/transformer.h"

#include "common/check.h"
#include "model/compat.h"
#include "model/ops.h"

namespace hylab {

namespace {
torch::nn::Linear linear(int64_t in, int64_t out) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false));
}
}  // namespace

std::pair<torch::Tensor, torch::Tensor> rotary_tables(int64_t T, int64_t head_dim, double base) {
  auto channel = torch::arange(0, head_dim, 2, torch::kFloat);                     // (Dh/2)
  auto inv_freq = 1.0 / torch::pow(base, channel / static_cast<double>(head_dim));  // (Dh/2)
  auto t = torch::arange(T, torch::kFloat);                                        // (T)
  auto freqs = torch::outer(t, inv_freq);                                          // (T, Dh/2)
  return {freqs.cos(), freqs.sin()};
}

torch::Tensor apply_rotary(const torch::Tensor& x, const torch::Tensor& cos,
                           const torch::Tensor& sin) {
  const int64_t d = x.size(3) / 2;
  auto c = cos.to(x.scalar_type()).unsqueeze(0).unsqueeze(2);  // (1, T, 1, Dh/2)
  auto s = sin.to(x.scalar_type()).unsqueeze(0).unsqueeze(2);
  auto x1 = x.narrow(3, 0, d), x2 = x.narrow(3, d, d);        // (B, T, H, Dh/2)
  auto y1 = x1 * c + x2 * s;
  auto y2 = x2 * c - x1 * s;
  return torch::cat({y1, y2}, 3);  // (B, T, H, Dh)
}

CausalSelfAttentionImpl::CausalSelfAttentionImpl(const GPTConfig& cfg)
    : n_head_(cfg.n_head), n_kv_head_(cfg.n_kv_head), head_dim_(cfg.head_dim()) {
  const int64_t C = cfg.n_embd;
  c_q = register_module("c_q", linear(C, n_head_ * head_dim_));
  c_k = register_module("c_k", linear(C, n_kv_head_ * head_dim_));
  c_v = register_module("c_v", linear(C, n_kv_head_ * head_dim_));
  c_proj = register_module("c_proj", linear(C, C));
}

torch::Tensor CausalSelfAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos,
                                               const torch::Tensor& sin, LayerCache* cache,
                                               int64_t pos) {
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2);
  auto q = c_q(x).view({B, T, n_head_, head_dim_});     // (B, T, H, Dh)
  auto k = c_k(x).view({B, T, n_kv_head_, head_dim_});  // (B, T, Hkv, Dh)
  auto v = c_v(x).view({B, T, n_kv_head_, head_dim_});
  q = compat::rms_norm(apply_rotary(q, cos, sin));  // QK-norm after rotary, as nanochat
  k = compat::rms_norm(apply_rotary(k, cos, sin));
  q = q.transpose(1, 2);  // (B, H, T, Dh)
  k = k.transpose(1, 2);  // (B, Hkv, T, Dh)
  v = v.transpose(1, 2);
  int64_t q_offset = 0;
  if (cache != nullptr) {
    HYLAB_CHECK(pos + T <= cache->k.size(2), "attention: positions {}..{} exceed the KV cache ({})",
                pos, pos + T, cache->k.size(2));
    cache->k.narrow(2, pos, T).copy_(k);
    cache->v.narrow(2, pos, T).copy_(v);
    k = cache->k.narrow(2, 0, pos + T);  // (B, Hkv, pos+T, Dh)
    v = cache->v.narrow(2, 0, pos + T);
    q_offset = pos;
  }
  auto y = compat::causal_attention(q, k, v, q_offset);  // (B, H, T, Dh)
  y = y.transpose(1, 2).contiguous().view({B, T, C});
  return c_proj(y);
}

torch::Tensor CausalSelfAttentionImpl::forward_fused(const torch::Tensor& x, const torch::Tensor& cos,
                                                     const torch::Tensor& sin) {
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2);
  auto q = ops::rope_qk_norm(c_q(x).view({B, T, n_head_, head_dim_}), cos, sin);     // (B, T, H, Dh)
  auto k = ops::rope_qk_norm(c_k(x).view({B, T, n_kv_head_, head_dim_}), cos, sin);  // (B, T, Hkv, Dh)
  auto v = c_v(x).view({B, T, n_kv_head_, head_dim_});
  auto y = compat::causal_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                    /*q_offset=*/0);  // (B, H, T, Dh)
  return c_proj(y.transpose(1, 2).reshape({B, T, C}));  // a view when y is (B, T, H, Dh) in memory
}

void CausalSelfAttentionImpl::fuse_qkv() {
  torch::NoGradGuard no_grad;
  auto w = torch::cat({c_q->weight, c_k->weight, c_v->weight}, 0);  // ((H + 2 Hkv) Dh, C)
  if (qkv_weight_.defined() && qkv_weight_.sizes() == w.sizes() &&
      qkv_weight_.scalar_type() == w.scalar_type() && qkv_weight_.device() == w.device()) {
    qkv_weight_.copy_(w);
  } else {
    qkv_weight_ = w;
  }
}

torch::Tensor CausalSelfAttentionImpl::decode(const torch::Tensor& x, const torch::Tensor& cos_full,
                                              const torch::Tensor& sin_full, LayerCache& cache,
                                              const torch::Tensor& pos, bool use_kernels) {
  const int64_t B = x.size(0), C = x.size(2), H = n_head_, Hkv = n_kv_head_, Dh = head_dim_;
  torch::Tensor qkv;  // (B, 1, (H + 2Hkv) Dh)
  if (qkv_weight_.defined()) {
    qkv = ops::norm_linear(x, qkv_weight_, use_kernels);
  } else {
    const auto xn = compat::rms_norm(x);
    qkv = torch::cat({c_q(xn), c_k(xn), c_v(xn)}, -1);
  }
  qkv = qkv.view({B, 1, H + 2 * Hkv, Dh});
  // Rotary and QK-norm of q and k, k and v into the cache at pos: one kernel on CUDA.
  const auto dt = cache.k.scalar_type();
  auto q = ops::decode_rope_append(qkv.to(dt), cos_full.to(dt), sin_full.to(dt), pos, cache.k,
                                   cache.v, H, use_kernels);  // (B, H, Dh)
  auto y = ops::decode_attention(q, cache.k, cache.v, pos, use_kernels);  // (B, H, Dh)
  return ops::linear_add(x, y.to(x.scalar_type()).view({B, 1, C}), c_proj->weight, use_kernels);
}

MLPImpl::MLPImpl(const GPTConfig& cfg) {
  c_fc = register_module("c_fc", linear(cfg.n_embd, 4 * cfg.n_embd));
  c_proj = register_module("c_proj", linear(4 * cfg.n_embd, cfg.n_embd));
}

torch::Tensor MLPImpl::forward(const torch::Tensor& x) {
  return c_proj(torch::relu(c_fc(x)).square());
}

torch::Tensor MLPImpl::forward_fused(const torch::Tensor& x) {
  return c_proj(ops::relu_square(c_fc(x)));
}

torch::Tensor MLPImpl::decode(const torch::Tensor& x, bool use_kernels) {
  return ops::linear_add(x, ops::norm_mlp_fc(x, c_fc->weight, use_kernels), c_proj->weight,
                         use_kernels);
}

}  // namespace hylab
