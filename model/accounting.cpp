// Accounting formulas (see accounting.h and docs/MODEL.md).
#include "model/accounting.h"

namespace hylab {

int64_t mamba_layer_params(const GPTConfig& cfg) {
  const int64_t C = cfg.n_embd, E = cfg.d_inner(), N = cfg.mamba_d_state, K = cfg.mamba_d_conv,
                R = cfg.mamba_dt_rank;
  const int64_t in_proj = C * 2 * E;
  const int64_t conv = E * K + E;
  const int64_t x_proj = E * (R + 2 * N);
  const int64_t dt_proj = R * E + E;
  const int64_t a_log_and_d = E * N + E;
  const int64_t out_proj = E * C;
  return in_proj + conv + x_proj + dt_proj + a_log_and_d + out_proj;
}

int64_t mamba2_layer_params(const GPTConfig& cfg) {
  const int64_t C = cfg.n_embd, E = cfg.mamba2_d_inner(), H = cfg.mamba2_nheads(),
                GN = static_cast<int64_t>(cfg.mamba2_ngroups) * cfg.mamba2_d_state,
                K = cfg.mamba2_d_conv;
  const int64_t in_proj = C * (2 * E + 2 * GN + H);
  const int64_t conv = (E + 2 * GN) * (K + 1);
  const int64_t dt_bias_a_log_d = 3 * H;
  const int64_t norm = E;
  const int64_t out_proj = E * C;
  return in_proj + conv + dt_bias_a_log_d + norm + out_proj;
}

ParamCounts count_params(const GPTConfig& cfg) {
  const int64_t C = cfg.n_embd, V = cfg.padded_vocab_size(), Hkv = cfg.n_kv_head,
                Dh = cfg.head_dim();
  const int64_t L_T = cfg.count(BlockType::kTransformer), L_M = cfg.count(BlockType::kMamba),
                L_M2 = cfg.count(BlockType::kMamba2);
  const int64_t L_mlp = L_T + (cfg.mamba_use_mlp ? L_M : 0) + (cfg.mamba2_use_mlp ? L_M2 : 0);
  ParamCounts p;
  p.embedding = V * C;
  p.lm_head = V * C;
  p.attention = L_T * (2 * C * C + 2 * C * Hkv * Dh);
  p.mlp = L_mlp * 8 * C * C;
  p.mamba = L_M * mamba_layer_params(cfg);
  p.mamba2 = L_M2 > 0 ? L_M2 * mamba2_layer_params(cfg) : 0;
  p.total = p.embedding + p.lm_head + p.attention + p.mlp + p.mamba + p.mamba2;
  return p;
}

FlopsPerToken flops_breakdown(const GPTConfig& cfg, int64_t seq_len) {
  const ParamCounts p = count_params(cfg);
  const double L_T = cfg.count(BlockType::kTransformer), L_M = cfg.count(BlockType::kMamba);
  const double H = cfg.n_head, Dh = cfg.head_dim(), E = cfg.d_inner(), N = cfg.mamba_d_state;
  FlopsPerToken f;
  f.matmul = 6.0 * static_cast<double>(p.total - p.embedding);
  f.attention = 12.0 * L_T * H * Dh * static_cast<double>(seq_len);
  f.mamba_scan = 3.0 * L_M * (9.0 * E * N + 2.0 * E);
  const double L_M2 = cfg.count(BlockType::kMamba2), E2 = cfg.mamba2_d_inner(),
               N2 = cfg.mamba2_d_state, G = cfg.mamba2_ngroups, Q = cfg.mamba2_chunk_size;
  f.mamba2_ssd = 3.0 * L_M2 * (2.0 * Q * G * N2 + 2.0 * Q * E2 + 4.0 * E2 * N2);
  f.total = f.matmul + f.attention + f.mamba_scan + f.mamba2_ssd;
  return f;
}

double flops_per_token(const GPTConfig& cfg, int64_t seq_len) {
  return flops_breakdown(cfg, seq_len).total;
}

CacheBytes cache_bytes(const GPTConfig& cfg, int64_t seq_len, int64_t activation_bytes) {
  const int64_t E = cfg.d_inner(), N = cfg.mamba_d_state, K = cfg.mamba_d_conv;
  CacheBytes c;
  c.attention_per_layer = 2 * cfg.n_kv_head * cfg.head_dim() * seq_len * activation_bytes;
  c.mamba_per_layer = E * K * activation_bytes + E * N * 4;
  const int64_t E2 = cfg.mamba2_d_inner(), N2 = cfg.mamba2_d_state,
                GN2 = static_cast<int64_t>(cfg.mamba2_ngroups) * N2;
  c.mamba2_per_layer = (E2 + 2 * GN2) * cfg.mamba2_d_conv * activation_bytes + E2 * N2 * 4;
  c.attention = cfg.count(BlockType::kTransformer) * c.attention_per_layer;
  c.mamba = cfg.count(BlockType::kMamba) * c.mamba_per_layer;
  c.mamba2 = cfg.count(BlockType::kMamba2) * c.mamba2_per_layer;
  c.total = c.attention + c.mamba + c.mamba2;
  return c;
}

int64_t cache_bytes_per_sequence(const GPTConfig& cfg, int64_t seq_len, int64_t activation_bytes) {
  return cache_bytes(cfg, seq_len, activation_bytes).total;
}

}  // namespace hylab
