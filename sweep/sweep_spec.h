// Reading a sweep spec (sweeps/*.yaml) into proto/sweep.proto's SweepSpec.
//
// The YAML is W&B-style with our own axes (see issue 6 and docs/DAEMONS.md):
//   name, base, method (grid|random), count, seed, metric {name, goal},
//   resources {gpus_per_trial, nodes_per_trial}, max_retries, priority,
//   early_stop {type: median|asha, min_steps, min_trials, eta, rungs},
//   overrides {key: value, ...}            fixed for every trial
//   budget {tokens: N} | {flops: F}        equal budgets: replaces num_iterations (BudgetSpec)
//   parameters {key: {values: [...]} | {value: x} | {min, max, distribution} |
//               block_pattern: {generate: {attention_fraction: [...], placement: [...]}}}
// Every error is a ConfigError naming the file and the field, and saying what is allowed.
#pragma once

#include <cstdint>
#include <string>

#include "common/run_config.h"
#include "proto/sweep.pb.h"

namespace hylab::coordinator {

using proto::SweepSpec;

// The most trials one sweep may have (grid product x seeds, random/tpe count): checked
// before anything is expanded, so a small request cannot cost unbounded memory or time.
constexpr int64_t kMaxSweepTrials = 100000;

// `where` names the source in messages (a path, or "<request>").
SweepSpec parse_sweep_yaml(const std::string& yaml_text, const std::string& where);
SweepSpec load_sweep_file(const std::string& path);

// The spec's base config path: as written if it exists (relative to the working
// directory), else relative to the sweep file's folder. Throws ConfigError if neither exists.
std::string find_base_config(const SweepSpec& spec, const std::string& sweep_path);

// The early_stop block as JSON ("" when absent), as stored in sweeps.early_stop_json.
std::string early_stop_to_json(const SweepSpec& spec);
proto::EarlyStop early_stop_from_json(const std::string& json);

}  // namespace hylab::coordinator
