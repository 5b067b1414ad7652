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
