// Sweep expansion: a SweepSpec and its base config -> the trials to run. A pure function:
// same inputs, same trials, in the same order.
//
// Grid: the cartesian product of every parameter's values, in YAML order, the last
// parameter varying fastest. Random: `count` draws (mt19937_64 seeded by `seed`), each
// parameter drawn uniformly from its values or from its min/max distribution.
// `seeds: [a, b, ...]` repeats the whole list once per seed (seed slowest), recording
// seed=a as a parameter. Each trial's config = base -> overrides -> budget (target_flops or
// target_tokens, with num_iterations -1) -> parameter values -> seed -> resolve_config. Trials
// whose resolved config equals an earlier one's in every key it uses (config_hash: Mamba keys
// do not count without M layers, ...) are dropped as duplicates.
// If any combination is invalid, nothing runs: expand_sweep throws one ConfigError that
// lists every invalid trial with its parameters and the field-naming reason.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "common/run_config.h"
#include "proto/sweep.pb.h"
#include "sweep/sweep_spec.h"

namespace hylab::coordinator {

struct TrialPlan {
  int64_t trial_index = 0;  // 0, 1, ... after de-duplication
  // The swept values as written (name, YAML text); generated patterns add
  // attention_fraction and placement beside block_pattern, for grouping.
  std::vector<std::pair<std::string, std::string>> params;
  RunConfig resolved;
  std::string config_hash;
};

struct Expansion {
  std::vector<TrialPlan> trials;
  int duplicates_removed = 0;
};

// The vocabulary of a data folder (its tokenizer's size). The trainer takes vocab_size from
// the data when a config does not set it; expansion does the same (via this lookup) so the
// stored and sent configs are the ones that run. Empty: the schema default stays.
using VocabLookup = std::function<int(const std::string& data_dir)>;

// `max_trials` bounds the trials (combinations x seeds), checked before anything is built;
// the default is the limit of every sweep. The sweep fuzz target passes a small one so that
// an input costs at most that many trial resolutions (the same check, a smaller number).
Expansion expand_sweep(const proto::SweepSpec& spec, const RunConfig& base,
                       const VocabLookup& vocab_of_data = {}, int64_t max_trials = kMaxSweepTrials);

// Constraints on a generated pattern's ends: "T", "M" or "" (free).
struct LayerEnds {
  std::string first_layer;
  std::string last_layer;
};

// One pattern of n_layer layers with round(fraction * n_layer) Transformer layers:
//   early:    T...T M...M     late: M...M T...T
//   even:     the attention layers spread evenly, each closing its group of layers
//             (n_layer 12, 3 attention: M,M,M,T three times)
//   centered: n_layer cut into as many equal groups as attention layers, each attention layer
//             at its group's centre, position floor((2k+1) * n / (2a)) for k < a: never the
//             first or last layer (NVIDIA's Mamba-2-Hybrid spreads attention so), hence at
//             most (n - 1) / 2 attention layers (12 layers, 1: M*6,T,M*5; 3: M*2,T,M*3,T,M*3,T,M).
// `ends` pins the first and/or last layer's type; the placement then spreads the remaining
// attention layers over the layers between (first_layer M, even, 1 of 12: M*10,T,M... with
// last_layer M; first_layer T and 1 of 12: T,M*11). Returned in compact form
// ("M*3,T,M*3,T,M*3,T"). Throws ConfigError on a bad placement or end, or when the ends and
// the attention count cannot both hold, naming the values.
std::string generate_block_pattern(int n_layer, double attention_fraction,
                                   const std::string& placement, const LayerEnds& ends = {});

// A generator's end constraints, and what a trial records of a generated pattern:
// block_pattern, attention_fraction, placement, and first_layer / last_layer when set.
LayerEnds layer_ends(const proto::PatternGenerator& g);
std::vector<std::pair<std::string, std::string>> generator_record(const std::string& pattern,
                                                                  const std::string& fraction,
                                                                  const std::string& placement,
                                                                  const proto::PatternGenerator& g);

// The names of parameters that are not RunConfig keys but describe a generated pattern
// (attention_fraction, placement, first_layer, last_layer).
bool is_generator_param(const std::string& name);

}  // namespace hylab::coordinator
