#include "sweep/search.h"

#include <google/protobuf/util/json_util.h>
#include <nlohmann/json.hpp>

#include <set>

#include "common/check.h"
#include "sweep/sweep_spec.h"

namespace hylab::coordinator {
namespace {

int n_layer_of(const RunConfig& base) {
  try {
    return resolve_config(base).n_layer();
  } catch (const ConfigError&) {
    return 0;  // the swept values make it valid; pattern spaces need it (checked below)
  }
}

}  // namespace

SearchSpace search_space_of(const SearchState& s) {
  const int n_layer = n_layer_of(s.base);
  for (const auto& p : s.spec.parameters()) {
    if ((p.distribution() == "pattern" || p.has_generate()) && n_layer < 1) {
      // Resolve again for the reason.
      try {
        resolve_config(s.base);
      } catch (const ConfigError& e) {
        throw ConfigError(
            fmt::format("sweep {}: parameters.block_pattern needs n_layer from the base "
                        "config, which is invalid: {}",
                        s.spec.name(), e.what()));
      }
    }
  }
  return build_search_space(s.spec, n_layer);
}

TpeOptions tpe_options_of(const proto::SweepSpec& spec) {
  TpeOptions o;
  o.startup_trials = spec.tpe().startup_trials();
  o.candidates = spec.tpe().candidates();
  o.gamma = spec.tpe().gamma();
  o.liar = spec.tpe().liar() == "mean"   ? TpeOptions::Liar::kMean
           : spec.tpe().liar() == "best" ? TpeOptions::Liar::kBest
                                         : TpeOptions::Liar::kWorst;
  return o;
}

SearchState make_search_state(const proto::SweepSpec& spec, const RunConfig& base_in,
                              const VocabLookup& vocab_of_data) {
  SearchState s;
  s.spec = spec;
  s.base = base_in;
  s.base.set_name(spec.name());
  for (const auto& [k, v] : spec.overrides()) {
    try {
      apply_override(&s.base, k, v);
    } catch (const ConfigError& e) {
      throw ConfigError(fmt::format("sweep {}: overrides.{}: {}", spec.name(), k, e.what()));
    }
  }
  if (!s.base.has_vocab_size() && vocab_of_data)
    s.base.set_vocab_size(vocab_of_data(s.base.data()));
  const SearchSpace space = search_space_of(s);  // throws on an invalid space
  // One draw must make a valid config, or the search could never start.
  const Proposals first = propose_trials(s, {}, 0, 1);
  if (first.trials.empty()) {
    std::mt19937_64 rng(proposal_seed(spec.seed(), 0));
    RunConfig cfg = s.base;
    std::string params;
    for (const auto& [k, v] : point_overrides(space, random_point(space, rng))) {
      params += (params.empty() ? "" : ", ") + k + "=" + v;
      apply_override(&cfg, k, v);
    }
    resolve_config(cfg);  // throws the field-naming reason
    throw ConfigError(
        fmt::format("sweep {}: no valid trial in its space ({})", spec.name(), params));
  }
  return s;
}

std::string search_state_to_json(const SearchState& s) {
  std::string spec;
  google::protobuf::util::JsonPrintOptions opt;
  opt.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(s.spec, &spec, opt);
  nlohmann::json j;
  j["spec"] = nlohmann::json::parse(spec);
  j["base"] = nlohmann::json::parse(config_to_json(s.base, false));
  return j.dump();
}

SearchState search_state_from_json(const std::string& json) {
  const auto j = nlohmann::json::parse(json, nullptr, false);
  if (!j.is_object() || !j.contains("spec") || !j.contains("base")) {
    throw ConfigError("search_json: expected {\"spec\": ..., \"base\": ...}");
  }
  SearchState s;
  if (!google::protobuf::util::JsonStringToMessage(j["spec"].dump(), &s.spec).ok()) {
    throw ConfigError("search_json.spec: not a SweepSpec");
  }
  s.base = config_from_json(j["base"].dump());
  // The spec arrives from a client as JSON, not through parse_sweep_yaml: its counts are
  // checked again here, or one request could make every proposal cost without bound.
  const auto& spec = s.spec;
  auto bounded = [](const char* field, int64_t v, int64_t lo, int64_t hi) {
    if (v < lo || v > hi) {
      throw ConfigError(fmt::format("search_json.spec.{} = {}: expected {}..{}", field, v, lo, hi));
    }
  };
  bounded("count", spec.count(), 0, kMaxSweepTrials);
  bounded("seeds", spec.seeds_size(), 0, kMaxSweepTrials);
  if (spec.has_tpe()) {
    bounded("tpe.candidates", spec.tpe().candidates(), 1, 10000);
    bounded("tpe.startup_trials", spec.tpe().startup_trials(), 1, kMaxSweepTrials);
    if (!(spec.tpe().gamma() > 0 && spec.tpe().gamma() < 1)) {
      throw ConfigError(fmt::format("search_json.spec.tpe.gamma = {}: expected a number in (0, 1)",
                                    spec.tpe().gamma()));
    }
  }
  return s;
}

Proposals propose_trials(const SearchState& state, const std::vector<KnownTrial>& known,
                         int64_t first_index, int n) {
  const SearchSpace space = search_space_of(state);
  const TpeOptions options = tpe_options_of(state.spec);
  const bool use_model = state.spec.method() == "tpe";
  std::vector<SearchObservation> finished;
  std::vector<SearchPoint> pending;
  std::set<std::string> taken, hashes;
  for (const auto& t : known) {
    hashes.insert(t.config_hash);
    const auto p = point_of_params(space, t.params);
    if (!p) continue;  // a trial from outside the space (e.g. an earlier spec): not modelled
    taken.insert(point_key(space, *p));
    if (t.value)
      finished.push_back({*p, *t.value});
    else if (t.pending)
      pending.push_back(*p);
  }
  Proposals out;
  for (int i = 0; i < n; ++i) {
    const int64_t index = first_index + i;
    std::optional<TrialPlan> plan;
    // Invalid or duplicate configs are marked taken and drawn again.
    for (int attempt = 0; attempt < 8 && !plan; ++attempt) {
      const auto p = propose_new(space, finished, pending, taken, state.spec.seed(),
                                 index * 8 + attempt, use_model, options);
      if (!p) break;
      taken.insert(point_key(space, *p));
      TrialPlan t;
      t.trial_index = index;
      t.params = point_params(space, *p);
      RunConfig cfg = state.base;
      try {
        for (const auto& [k, v] : point_overrides(space, *p)) apply_override(&cfg, k, v);
        t.resolved = resolve_config(cfg);
      } catch (const ConfigError&) {
        continue;
      }
      t.config_hash = config_hash(t.resolved);
      if (!hashes.insert(t.config_hash).second) continue;
      pending.push_back(*p);
      plan = std::move(t);
    }
    if (!plan) {
      out.exhausted = true;
      break;
    }
    out.trials.push_back(std::move(*plan));
  }
  return out;
}

}  // namespace hylab::coordinator
