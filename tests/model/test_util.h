// Tiny configs shared by the model tests: small enough for a 2-core CPU.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "common/run_config.h"

namespace hylab::testing {

// A resolved tiny config: C=64, H=4, Hkv=2, V=100 (padded to 128), sequence_len 32,
// Mamba N=8, K=4, R auto (4), plus `overrides` as `key=value` config overrides.
inline RunConfig tiny_run_config(const std::string& pattern,
                                 const std::vector<std::pair<std::string, std::string>>& overrides = {}) {
  RunConfig c;
  c.set_n_embd(64);
  c.set_n_head(4);
  c.set_n_kv_head(2);
  c.set_vocab_size(100);
  c.set_max_seq_len(32);
  c.set_mamba_d_state(8);
  c.set_device("cpu");
  if (!pattern.empty()) apply_override(&c, "block_pattern", pattern);
  for (const auto& [k, v] : overrides) apply_override(&c, k, v);
  return resolve_config(c);
}

inline GPTConfig tiny_config(const std::string& pattern,
                             const std::vector<std::pair<std::string, std::string>>& overrides = {}) {
  return gpt_config(tiny_run_config(pattern, overrides));
}

// The example patterns every model test runs over (4 layers; two end in M).
inline std::vector<std::string> example_patterns() {
  return {"TTTT", "MMMM", "TTMM", "TMTM", "MTTM", "T,M*2,T"};
}

}  // namespace hylab::testing

#include <torch/torch.h>

namespace hylab::testing {

// Attention by its definition, in fp64: query i (absolute position q_offset + i) attends to
// keys j <= q_offset + i; kv head h serves query heads h*H/Hkv .. (h+1)*H/Hkv - 1.
//   q (B, H, Tq, Dh), k/v (B, Hkv, Tk, Dh) -> (B, H, Tq, Dh) fp64
inline torch::Tensor naive_attention(const torch::Tensor& q, const torch::Tensor& k,
                                     const torch::Tensor& v, int64_t q_offset) {
  const int64_t H = q.size(1), Hkv = k.size(1), Tq = q.size(2), Tk = k.size(2);
  auto qd = q.to(torch::kCPU, torch::kDouble), kd = k.to(torch::kCPU, torch::kDouble),
       vd = v.to(torch::kCPU, torch::kDouble);
  auto out = torch::zeros(qd.sizes(), torch::kDouble);
  for (int64_t h = 0; h < H; ++h) {
    const int64_t hk = h / (H / Hkv);
    for (int64_t i = 0; i < Tq; ++i) {
      const int64_t n = q_offset + i + 1;  // visible keys
      auto qi = qd.select(1, h).select(1, i);                                 // (B, Dh)
      auto ks = kd.select(1, hk).narrow(1, 0, n);                             // (B, n, Dh)
      auto scores = (ks * qi.unsqueeze(1)).sum(-1) / std::sqrt(double(q.size(3)));  // (B, n)
      auto w = torch::softmax(scores, -1);
      out.select(1, h).select(1, i).copy_((w.unsqueeze(-1) * vd.select(1, hk).narrow(1, 0, n)).sum(1));
    }
  }
  (void)Tk;
  return out;
}

}  // namespace hylab::testing
