// The hybrid GPT (see gpt.h).
#include "model/gpt.h"

#include <cmath>
#include <unordered_set>

#include "common/check.h"
#include "model/compat.h"
#include "model/ops.h"

namespace hylab {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

GPTImpl::GPTImpl(const GPTConfig& cfg, bool init) : cfg_(cfg) {
  HYLAB_CHECK(static_cast<int>(cfg.block_pattern.size()) == cfg.n_layer,
              "GPT: block_pattern has {} entries but n_layer is {} (use resolve_config/gpt_config)",
              cfg.block_pattern.size(), cfg.n_layer);
  HYLAB_CHECK(cfg.n_embd % cfg.n_head == 0 && cfg.n_head % cfg.n_kv_head == 0 &&
                  cfg.head_dim() % 2 == 0,
              "GPT: n_embd {} / n_head {} / n_kv_head {} are inconsistent (resolve the config first)",
              cfg.n_embd, cfg.n_head, cfg.n_kv_head);
  const int64_t V = cfg.padded_vocab_size(), C = cfg.n_embd;
  wte = register_module("wte", torch::nn::Embedding(V, C));
  h = register_module("h", torch::nn::ModuleList());
  for (int i = 0; i < cfg.n_layer; ++i) h->push_back(Block(cfg, cfg.block_pattern[i], i));
  lm_head = register_module("lm_head", torch::nn::Linear(torch::nn::LinearOptions(C, V).bias(false)));
  rotary_len_ = 10 * static_cast<int64_t>(cfg.sequence_len);
  std::tie(cos_, sin_) = rotary_tables(rotary_len_, cfg.head_dim(), cfg.rope_base);
  if (!cfg.rope) {  // rope: false: rotation by angle 0 everywhere, no positional encoding
    cos_ = torch::ones_like(cos_);
    sin_ = torch::zeros_like(sin_);
  }
  if (init) init_weights();
}

void GPTImpl::init_weights() {
  torch::NoGradGuard no_grad;
  // Parameters with an init of their own (the mixers'): the generic rules below skip them.
  std::unordered_set<const void*> own;
  for (int i = 0; i < cfg_.n_layer; ++i) {
    for (const auto& p : block(i)->mixer().own_init_parameters()) own.insert(p.unsafeGetTensorImpl());
  }
  for (auto& item : named_parameters(/*recurse=*/true)) {
    const std::string& name = item.key();
    torch::Tensor& p = item.value();
    if (own.count(p.unsafeGetTensorImpl())) continue;
    if (name == "wte.weight") {
      p.normal_(0.0, 1.0);
    } else if (name == "lm_head.weight" || ends_with(name, ".c_proj.weight")) {
      p.zero_();
    } else if (p.dim() == 2) {
      // https://arxiv.org/abs/2310.17813 (nanochat): std = min(1, sqrt(fan_out/fan_in)) / sqrt(fan_in)
      const double fan_out = static_cast<double>(p.size(0)), fan_in = static_cast<double>(p.size(1));
      p.normal_(0.0, std::min(1.0, std::sqrt(fan_out / fan_in)) / std::sqrt(fan_in));
    } else {
      HYLAB_FAIL("GPT::init_weights: no init rule for parameter {} {}", name, c10::str(p.sizes()));
    }
  }
  for (int i = 0; i < cfg_.n_layer; ++i) block(i)->mixer().reset_parameters();
}

void GPTImpl::extend_rotary(int64_t positions) {
  if (positions <= rotary_len_) return;
  // Longer contexts than sequence_len * 10 (the length evals, long prompts): the angles of
  // the new positions follow the same formula, so the first rotary_len_ rows do not change.
  rotary_len_ = std::max(positions, 2 * rotary_len_);
  const torch::Device device = cos_.device();
  std::tie(cos_, sin_) = rotary_tables(rotary_len_, cfg_.head_dim(), cfg_.rope_base);
  cos_ = cos_.to(device);
  sin_ = sin_.to(device);
  cos_full_ = torch::Tensor();  // decode_step rebuilds its tables
  sin_full_ = torch::Tensor();
}

std::pair<torch::Tensor, torch::Tensor> GPTImpl::rotary(int64_t pos, int64_t T, torch::Device device) {
  HYLAB_CHECK(pos >= 0 && T >= 0, "GPT: rotary positions {}..{}", pos, pos + T);
  extend_rotary(pos + T);
  if (cos_.device() != device) {  // follow the model to its device once
    cos_ = cos_.to(device);
    sin_ = sin_.to(device);
  }
  return {cos_.narrow(0, pos, T), sin_.narrow(0, pos, T)};
}

torch::Tensor GPTImpl::logits_from_hidden(const torch::Tensor& x, bool decode) {
  auto logits = decode ? ops::norm_linear(x, lm_head->weight, use_kernels_)
                       : lm_head(compat::rms_norm(x));  // (B, T, V_padded)
  logits = logits.narrow(-1, 0, cfg_.vocab_size).to(torch::kFloat);  // (B, T, V) fp32
  if (cfg_.logit_softcap > 0) {
    logits = cfg_.logit_softcap * torch::tanh(logits / cfg_.logit_softcap);
  }
  return logits;
}

torch::Tensor GPTImpl::embed(const torch::Tensor& idx) {
  auto x = compat::rms_norm(wte(idx));  // (B, T, C)
  // Under CUDA autocast the residual stream is bf16, as nanochat's bf16 embedding makes it.
  return x.is_cuda() && compat::cuda_autocast_enabled() ? x.to(torch::kBFloat16) : x;
}

torch::Tensor GPTImpl::hidden(const torch::Tensor& idx) {
  HYLAB_CHECK(idx.dim() == 2 && idx.scalar_type() == torch::kLong,
              "GPT: idx must be (B, T) int64, got {} {}", c10::str(idx.sizes()),
              c10::toString(idx.scalar_type()));
  const int64_t T = idx.size(1);
  auto [cos, sin] = rotary(0, T, idx.device());
  auto x = embed(idx);  // (B, T, C)
  for (const auto& m : h->children()) {
    x = std::static_pointer_cast<BlockImpl>(m)->forward(x, cos, sin);
  }
  return x;
}

torch::Tensor GPTImpl::forward(const torch::Tensor& idx) { return logits_from_hidden(hidden(idx)); }

torch::Tensor GPTImpl::loss(const torch::Tensor& idx, const torch::Tensor& targets, bool per_token) {
  HYLAB_CHECK(targets.sizes() == idx.sizes(), "GPT::loss: targets {} must match idx {}",
              c10::str(targets.sizes()), c10::str(idx.sizes()));
  auto logits = lm_head(compat::rms_norm(hidden(idx)));  // (B, T, V_padded)
  auto rows = ops::softcap_cross_entropy(logits.view({-1, logits.size(-1)}), targets.reshape({-1}),
                                         cfg_.vocab_size, cfg_.logit_softcap, use_kernels_);
  if (per_token) return rows.view(idx.sizes());
  return rows.sum() / (targets != -1).sum();  // mean over counted positions, as F.cross_entropy
}

GPTImpl::ParamGroups GPTImpl::param_groups() {
  // The mixers name their AdamW parameters (model/mixer.h); the rest of a block is matrices.
  std::unordered_set<const void*> scalar;
  for (int i = 0; i < cfg_.n_layer; ++i) {
    for (const auto& p : block(i)->mixer().scalar_parameters()) scalar.insert(p.unsafeGetTensorImpl());
  }
  ParamGroups g;
  for (auto& item : named_parameters(/*recurse=*/true)) {
    const std::string& name = item.key();
    if (name == "wte.weight") {
      g.embedding.push_back(item.value());
    } else if (name == "lm_head.weight") {
      g.lm_head.push_back(item.value());
    } else if (scalar.count(item.value().unsafeGetTensorImpl())) {
      g.scalar.push_back(item.value());
    } else {
      HYLAB_CHECK(item.value().dim() == 2, "param_groups: {} {} is neither a matrix nor a known scalar",
                  name, c10::str(item.value().sizes()));
      g.matrix.push_back(item.value());
    }
  }
  return g;
}

void GPTImpl::set_use_kernels(bool on) {
  use_kernels_ = on;
  for (int i = 0; i < cfg_.n_layer; ++i) block(i)->set_use_kernels(on);
}

torch::Dtype GPTImpl::compute_dtype() const {
  const auto& w = lm_head->weight;
  if (w.scalar_type() == torch::kBFloat16) return torch::kBFloat16;
  if (w.is_cuda() && compat::cuda_autocast_enabled()) return torch::kBFloat16;
  return w.scalar_type();
}

InferenceCache GPTImpl::make_cache(int64_t batch, int64_t max_len) {
  return make_cache(batch, max_len, compute_dtype());
}

InferenceCache GPTImpl::make_cache(int64_t batch, int64_t max_len, torch::Dtype dtype) {
  HYLAB_CHECK(batch >= 1 && max_len >= 1, "make_cache: batch {} and max_len {} must be >= 1",
              batch, max_len);
  extend_rotary(max_len);  // before any CUDA graph captures the tables
  const auto& w = lm_head->weight;
  InferenceCache cache;
  cache.batch = batch;
  cache.max_len = max_len;
  for (const auto& m : h->children()) {
    cache.layers.push_back(std::static_pointer_cast<BlockImpl>(m)->make_cache(
        batch, max_len, w.device(), dtype));
  }
  return cache;
}

torch::Tensor GPTImpl::decode_step(const torch::Tensor& idx, const torch::Tensor& pos,
                                   InferenceCache& cache) {
  torch::NoGradGuard no_grad;
  HYLAB_CHECK(idx.dim() == 2 && idx.size(1) == 1 && idx.size(0) == cache.batch,
              "decode_step: idx must be (B={}, 1), got {}", cache.batch, c10::str(idx.sizes()));
  HYLAB_CHECK(pos.dim() == 1 && pos.size(0) == 1 && pos.scalar_type() == torch::kLong,
              "decode_step: pos must be (1) int64, got {} {}", c10::str(pos.sizes()),
              c10::toString(pos.scalar_type()));
  HYLAB_CHECK(static_cast<int>(cache.layers.size()) == cfg_.n_layer,
              "decode_step: the cache has {} layers, the model {}", cache.layers.size(), cfg_.n_layer);
  rotary(0, 1, idx.device());  // the tables follow the model to its device
  auto x = embed(idx);           // (B, 1, C)
  if (!cos_full_.defined() || cos_full_.device() != x.device() ||
      cos_full_.scalar_type() != x.scalar_type()) {
    // Full-width tables in the activations' dtype, made once (outside any graph capture:
    // the decoder warms up first): [cos, cos] and [sin, -sin] (rotary_len, Dh).
    cos_full_ = torch::cat({cos_, cos_}, 1).to(x.scalar_type());
    sin_full_ = torch::cat({sin_, -sin_}, 1).to(x.scalar_type());
  }
  auto cos = cos_full_.index_select(0, pos), sin = sin_full_.index_select(0, pos);  // (1, Dh)
  int i = 0;
  for (const auto& m : h->children()) {
    x = std::static_pointer_cast<BlockImpl>(m)->decode_step(x, cos, sin, cache.layers[i++], pos,
                                                             use_kernels_);
  }
  return logits_from_hidden(x, /*decode=*/true).select(1, 0);  // (B, V)
}

torch::Tensor GPTImpl::forward_step(const torch::Tensor& idx, InferenceCache& cache, bool last_only) {
  torch::NoGradGuard no_grad;
  HYLAB_CHECK(idx.dim() == 2 && idx.scalar_type() == torch::kLong && idx.size(0) == cache.batch,
              "forward_step: idx must be (B={}, T_new) int64, got {}", cache.batch, c10::str(idx.sizes()));
  HYLAB_CHECK(static_cast<int>(cache.layers.size()) == cfg_.n_layer,
              "forward_step: the cache has {} layers, the model {}", cache.layers.size(), cfg_.n_layer);
  const int64_t T = idx.size(1), pos = cache.pos;
  HYLAB_CHECK(T >= 1 && pos + T <= cache.max_len,
              "forward_step: {} new tokens at position {} exceed the cache's max_len {}", T, pos,
              cache.max_len);
  auto [cos, sin] = rotary(pos, T, idx.device());
  auto x = embed(idx);  // (B, T, C)
  int i = 0;
  for (const auto& m : h->children()) {
    x = std::static_pointer_cast<BlockImpl>(m)->forward_step(x, cos, sin, cache.layers[i++], pos);
  }
  cache.pos += T;
  return logits_from_hidden(last_only ? x.narrow(1, T - 1, 1) : x);
}

}  // namespace hylab
