#include "sweep/sweep_expander.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>

#include "common/check.h"
#include "sweep/pattern_space.h"
#include "sweep/sweep_spec.h"

namespace hylab::coordinator {
namespace {

constexpr size_t kMaxErrorsShown = 20;

// One choice of one parameter: what to record and what to set.
struct Choice {
  std::vector<std::pair<std::string, std::string>> record;  // (name, value as written)
  std::pair<std::string, std::string> set;                  // (config key, value)
};

std::string format_fraction(double f) { return fmt::format("{}", f); }

std::vector<Choice> choices_of(const proto::SweepParameter& p, int n_layer) {
  std::vector<Choice> out;
  if (p.has_generate()) {
    for (double f : p.generate().attention_fraction()) {
      for (const auto& placement : p.generate().placement()) {
        const std::string pattern = generate_block_pattern(n_layer, f, placement, layer_ends(p.generate()));
        out.push_back({generator_record(pattern, format_fraction(f), placement, p.generate()),
                       {"block_pattern", pattern}});
      }
    }
    return out;
  }
  for (const auto& v : p.values()) out.push_back({{{p.name(), v}}, {p.name(), v}});
  return out;
}

std::string sample_range(const proto::SweepParameter& p, std::mt19937_64& rng) {
  if (p.distribution() == "int_uniform") {
    std::uniform_int_distribution<int64_t> d(static_cast<int64_t>(std::ceil(p.min())),
                                             static_cast<int64_t>(std::floor(p.max())));
    return std::to_string(d(rng));
  }
  if (p.distribution() == "log_uniform") {
    std::uniform_real_distribution<double> d(std::log(p.min()), std::log(p.max()));
    return fmt::format("{}", std::exp(d(rng)));
  }
  std::uniform_real_distribution<double> d(p.min(), p.max());
  return fmt::format("{}", d(rng));
}

std::string describe(const std::vector<std::pair<std::string, std::string>>& params) {
  std::string out;
  for (const auto& [k, v] : params) out += (out.empty() ? "" : ", ") + k + "=" + v;
  return out.empty() ? "no parameters" : out;
}

}  // namespace

bool is_generator_param(const std::string& name) {
  return name == "attention_fraction" || name == "placement" || name == "first_layer" ||
         name == "last_layer";
}

namespace {

// Sets a attention layers among layers [lo, lo + n) of `pattern` by `placement`.
void place_attention(std::vector<BlockType>* pattern, int lo, int n, int a, const std::string& placement,
                     double attention_fraction) {
  auto set = [&](int i) { (*pattern)[static_cast<size_t>(lo + i)] = BlockType::kTransformer; };
  if (placement == "early") {
    for (int i = 0; i < a; ++i) set(i);
  } else if (placement == "late") {
    for (int i = n - a; i < n; ++i) set(i);
  } else if (placement == "even") {
    // Layer i closes group floor((i+1)*a/n); it is attention when that count steps.
    for (int i = 0; i < n; ++i) {
      const int64_t before = static_cast<int64_t>(i) * a / n;
      const int64_t after = static_cast<int64_t>(i + 1) * a / n;
      if (after > before) set(i);
    }
  } else if (placement == "centered") {
    if (a == n) {  // all attention: the same pattern for every placement
      for (int i = 0; i < n; ++i) set(i);
      return;
    }
    if (a > 0 && 2 * a >= n) {
      throw ConfigError(fmt::format(
          "generate: placement centered keeps attention off the first and last of the {} layers "
          "it places, so it takes at most {} attention layers; attention_fraction {} asks for {} "
          "(use even, or a smaller fraction)", n, (n - 1) / 2, attention_fraction, a));
    }
    // Group k of n/a layers gets its attention layer at its centre.
    for (int k = 0; k < a; ++k) set(static_cast<int>((2 * static_cast<int64_t>(k) + 1) * n / (2 * a)));
  } else {
    throw ConfigError(
        fmt::format("generate: placement = \"{}\": expected even, early, late or centered", placement));
  }
}

}  // namespace

LayerEnds layer_ends(const proto::PatternGenerator& g) { return {g.first_layer(), g.last_layer()}; }

std::vector<std::pair<std::string, std::string>> generator_record(const std::string& pattern,
                                                                  const std::string& fraction,
                                                                  const std::string& placement,
                                                                  const proto::PatternGenerator& g) {
  std::vector<std::pair<std::string, std::string>> out = {
      {"block_pattern", pattern}, {"attention_fraction", fraction}, {"placement", placement}};
  if (g.has_first_layer()) out.push_back({"first_layer", g.first_layer()});
  if (g.has_last_layer()) out.push_back({"last_layer", g.last_layer()});
  return out;
}

std::string generate_block_pattern(int n_layer, double attention_fraction,
                                   const std::string& placement, const LayerEnds& ends) {
  if (n_layer < 1) throw ConfigError(fmt::format("generate: n_layer = {}: expected >= 1", n_layer));
  if (attention_fraction < 0 || attention_fraction > 1) {
    throw ConfigError(fmt::format("generate: attention_fraction = {}: expected 0..1", attention_fraction));
  }
  auto check_end = [](const char* what, const std::string& v) {
    if (!v.empty() && v != "T" && v != "M") {
      throw ConfigError(fmt::format("generate: {} = \"{}\": expected T or M", what, v));
    }
  };
  check_end("first_layer", ends.first_layer);
  check_end("last_layer", ends.last_layer);
  const int n_attn = static_cast<int>(std::lround(attention_fraction * n_layer));
  std::vector<BlockType> pattern(n_layer, BlockType::kMamba);
  // The pinned ends, then the placement over the layers between them.
  int lo = 0, hi = n_layer, left = n_attn;
  if (!ends.first_layer.empty()) {
    if (ends.first_layer == "T") {
      pattern[0] = BlockType::kTransformer;
      --left;
    }
    lo = 1;
  }
  if (!ends.last_layer.empty()) {
    if (n_layer == 1 && !ends.first_layer.empty()) {
      if (ends.first_layer != ends.last_layer) {
        throw ConfigError(fmt::format("generate: first_layer {} and last_layer {} name the one layer of "
                                      "n_layer 1", ends.first_layer, ends.last_layer));
      }
    } else {
      if (ends.last_layer == "T") {
        pattern[static_cast<size_t>(n_layer - 1)] = BlockType::kTransformer;
        --left;
      }
      hi = n_layer - 1;
    }
  }
  if (left < 0 || left > hi - lo) {
    throw ConfigError(fmt::format(
        "generate: attention_fraction {} gives {} attention layers of {}, which first_layer {} and "
        "last_layer {} leave no room for ({} to place on the {} layers between)",
        attention_fraction, n_attn, n_layer, ends.first_layer.empty() ? "(free)" : ends.first_layer,
        ends.last_layer.empty() ? "(free)" : ends.last_layer, left, hi - lo));
  }
  place_attention(&pattern, lo, hi - lo, left, placement, attention_fraction);
  return compact_block_pattern(pattern);
}

Expansion expand_sweep(const proto::SweepSpec& spec, const RunConfig& base_in,
                       const VocabLookup& vocab_of_data, int64_t max_trials) {
  const int64_t kMaxTrials = std::min(max_trials, kMaxSweepTrials);
  if (spec.method() == "tpe") {
    throw ConfigError(fmt::format("sweep {}: method tpe has no fixed expansion: the coordinator "
                                  "proposes its trials (sweep/search.h)", spec.name()));
  }
  // The base with the fixed overrides; sweep name as run name (the same for every trial,
  // so it does not defeat de-duplication).
  RunConfig base = base_in;
  base.set_name(spec.name());
  std::map<std::string, std::string> overrides(spec.overrides().begin(), spec.overrides().end());
  for (const auto& [k, v] : overrides) {
    try {
      apply_override(&base, k, v);
    } catch (const ConfigError& e) {
      throw ConfigError(fmt::format("sweep {}: overrides.{}: {}", spec.name(), k, e.what()));
    }
  }
  // An equal budget replaces the horizon of the base and the overrides; each trial's
  // steps then follow from its own FLOPs per token (trainer/schedule.h).
  if (spec.has_budget()) {
    base.set_num_iterations(-1);
    base.clear_target_flops();
    base.clear_target_tokens();
    if (spec.budget().has_flops()) base.set_target_flops(spec.budget().flops());
    if (spec.budget().has_tokens()) base.set_target_tokens(spec.budget().tokens());
  }
  RunConfig resolved_base;
  try {
    resolved_base = resolve_config(base);
  } catch (const ConfigError& e) {
    // A base that only becomes valid with the swept values (e.g. a pattern that decides
    // n_layer) is fine; generated patterns need n_layer, so they need a valid base.
    for (const auto& p : spec.parameters()) {
      if (p.has_generate() || p.distribution() == "pattern") {
        throw ConfigError(fmt::format("sweep {}: parameters.block_pattern.generate needs n_layer "
                                      "from the base config, which is invalid: {}",
                                      spec.name(), e.what()));
      }
    }
  }
  const int n_layer = resolved_base.n_layer();

  std::vector<std::vector<Choice>> axes;  // ranges (random only) have no fixed choices
  for (const auto& p : spec.parameters()) axes.push_back(choices_of(p, n_layer));

  // The combinations, each a list of choices (one per parameter).
  // Sizes first: random draws `count` combinations, a grid the product of its axes; `seeds`
  // repeats them all. Nothing is built until the total is known to be at most max_trials.
  const int64_t seed_rounds = std::max(1, spec.seeds_size());
  int64_t total = 1;
  if (spec.method() == "random") {
    total = spec.count();
  } else {
    for (const auto& axis : axes) {
      total *= static_cast<int64_t>(axis.size());
      if (total > kMaxTrials) break;
    }
  }
  if (total > kMaxTrials) {
    throw ConfigError(fmt::format("sweep {}: {} has more than {} trials; narrow it", spec.name(),
                                  spec.method() == "random" ? "count" : "the grid", kMaxTrials));
  }
  if (total * seed_rounds > kMaxTrials) {
    throw ConfigError(fmt::format("sweep {}: {} combinations x {} seeds = {} trials, more than {}; "
                                  "narrow it", spec.name(), total, seed_rounds,
                                  total * seed_rounds, kMaxTrials));
  }
  std::vector<std::vector<Choice>> combos;
  if (spec.method() == "random") {
    std::mt19937_64 rng(static_cast<uint64_t>(spec.seed()));
    for (int i = 0; i < spec.count(); ++i) {
      std::vector<Choice> combo;
      for (int a = 0; a < spec.parameters_size(); ++a) {
        const auto& p = spec.parameters(a);
        if (p.distribution() == "pattern") {  // sweep/pattern_space.h
          const std::string v = pattern_text(random_pattern(
              make_pattern_constraints(p.pattern(), n_layer, "parameters.block_pattern"), rng));
          combo.push_back({{{p.name(), v}}, {p.name(), v}});
        } else if (p.has_min()) {
          const std::string v = sample_range(p, rng);
          combo.push_back({{{p.name(), v}}, {p.name(), v}});
        } else {
          std::uniform_int_distribution<size_t> pick(0, axes[a].size() - 1);
          combo.push_back(axes[a][pick(rng)]);
        }
      }
      combos.push_back(std::move(combo));
    }
  } else {
    std::vector<size_t> idx(axes.size(), 0);
    for (int64_t n = 0; n < total; ++n) {
      std::vector<Choice> combo;
      for (size_t a = 0; a < axes.size(); ++a) combo.push_back(axes[a][idx[a]]);
      combos.push_back(std::move(combo));
      for (size_t a = axes.size(); a-- > 0;) {  // odometer: last axis fastest
        if (++idx[a] < axes[a].size()) break;
        idx[a] = 0;
      }
    }
  }

  // `seeds`: the whole list of combinations once per seed (seed slowest, so the first round
  // already compares every configuration); the seed is recorded as a parameter.
  if (spec.seeds_size() > 0) {
    std::vector<std::vector<Choice>> seeded;
    for (const int64_t seed : spec.seeds()) {
      const std::string v = std::to_string(seed);
      for (const auto& combo : combos) {
        seeded.push_back(combo);
        seeded.back().push_back({{{"seed", v}}, {"seed", v}});
      }
    }
    combos = std::move(seeded);
  }

  Expansion out;
  std::set<std::string> seen;
  std::vector<std::string> errors;
  for (size_t c = 0; c < combos.size(); ++c) {
    TrialPlan plan;
    RunConfig cfg = base;
    for (const auto& choice : combos[c]) {
      plan.params.insert(plan.params.end(), choice.record.begin(), choice.record.end());
    }
    try {
      for (const auto& choice : combos[c]) apply_override(&cfg, choice.set.first, choice.set.second);
      if (!cfg.has_vocab_size() && vocab_of_data) cfg.set_vocab_size(vocab_of_data(cfg.data()));
      plan.resolved = resolve_config(cfg);
    } catch (const ConfigError& e) {
      // Only the first few are shown; the rest are counted (a message per invalid
      // combination of a 100,000-trial sweep would cost more than the check).
      errors.push_back(errors.size() < kMaxErrorsShown
                           ? fmt::format("combination {} ({}): {}", c, describe(plan.params), e.what())
                           : std::string());
      continue;
    }
    // Once a combination is invalid nothing is submitted: the rest are only checked.
    if (!errors.empty()) continue;
    plan.config_hash = config_hash(plan.resolved);
    if (!seen.insert(plan.config_hash).second) {
      ++out.duplicates_removed;
      continue;
    }
    plan.trial_index = static_cast<int64_t>(out.trials.size());
    out.trials.push_back(std::move(plan));
  }
  if (!errors.empty()) {
    std::string msg = fmt::format("sweep {}: {} of {} parameter combinations are invalid, so "
                                  "nothing was submitted:",
                                  spec.name(), errors.size(), combos.size());
    for (size_t i = 0; i < errors.size() && i < kMaxErrorsShown; ++i) msg += "\n  " + errors[i];
    if (errors.size() > kMaxErrorsShown) {
      msg += fmt::format("\n  ... and {} more", errors.size() - kMaxErrorsShown);
    }
    throw ConfigError(msg);
  }
  return out;
}

}  // namespace hylab::coordinator
