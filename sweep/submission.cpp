#include "sweep/submission.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/check.h"

#include "sweep/search.h"
#include "sweep/sweep_spec.h"

namespace hylab::coordinator {
namespace {

// vocab_size from `hylab data prepare`'s meta.json, as the trainer reads it.
int vocab_from_meta(const std::string& data_dir) {
  const auto path = std::filesystem::path(data_dir) / "meta.json";
  std::ifstream in(path);
  if (!in) {
    throw ConfigError(fmt::format(
        "data = \"{}\": no prepared data folder there ({} missing, looked from {}); a trial's "
        "vocab_size comes from its data's tokenizer. Run `hylab data prepare --out {}` first, "
        "submit from the folder the data path is relative to, or set vocab_size in the sweep",
        data_dir, path.string(), std::filesystem::current_path().string(), data_dir));
  }
  const auto meta = nlohmann::json::parse(in, nullptr, false);
  if (!meta.is_object() || !meta.contains("vocab_size") || !meta["vocab_size"].is_number_integer()) {
    throw ConfigError(fmt::format("{}: no integer vocab_size in it", path.string()));
  }
  return meta["vocab_size"].get<int>();
}

}  // namespace

Submission prepare_submission(const std::string& sweep_path) {
  proto::SweepSpec spec = load_sweep_file(sweep_path);
  const RunConfig base = load_config_file(find_base_config(spec, sweep_path));
  std::map<std::string, int> cache;
  const VocabLookup vocab = [&cache](const std::string& data) {
    auto it = cache.find(data);
    if (it == cache.end()) it = cache.emplace(data, vocab_from_meta(data)).first;
    return it->second;
  };
  std::ifstream in(sweep_path);
  std::stringstream text;
  text << in.rdbuf();
  return build_submission(std::move(spec), base, vocab, text.str(),
                          std::filesystem::absolute(sweep_path).lexically_normal().string());
}

Submission build_submission(proto::SweepSpec spec, const RunConfig& base, const VocabLookup& vocab,
                            const std::string& spec_yaml, const std::string& spec_path,
                            int64_t max_trials) {
  Submission s;
  s.spec = std::move(spec);
  // tpe: the coordinator proposes the trials (sweep/search.h); the expansion holds
  // only the random start-up trials it will begin with, for --dry_run.
  std::optional<SearchState> search;
  if (s.spec.method() == "tpe" || s.spec.method() == "random") search = make_search_state(s.spec, base, vocab);
  if (s.spec.method() == "tpe") {
    const int startup = std::min(s.spec.count(), s.spec.tpe().startup_trials());
    if (startup > max_trials) {
      throw ConfigError(fmt::format("sweep {}: {} start-up trials, more than {}", s.spec.name(),
                                    startup, max_trials));
    }
    s.expansion.trials = propose_trials(*search, {}, 0, startup).trials;
  } else {
    s.expansion = expand_sweep(s.spec, base, vocab, max_trials);
  }
  auto& r = s.request;
  r.set_name(s.spec.name());
  r.set_spec_yaml(spec_yaml);
  r.set_spec_path(spec_path);
  r.set_metric_name(s.spec.metric().name());
  r.set_metric_goal(s.spec.metric().goal());
  r.set_priority(s.spec.priority());
  r.set_gpus_per_trial(s.spec.resources().gpus_per_trial());
  r.set_nodes_per_trial(s.spec.resources().nodes_per_trial());
  r.set_max_retries(s.spec.max_retries());
  r.set_early_stop_json(early_stop_to_json(s.spec));
  if (search) r.set_search_json(search_state_to_json(*search));
  if (s.spec.method() == "tpe") return s;
  for (const auto& t : s.expansion.trials) {
    auto* d = r.add_trials();
    d->set_trial_index(t.trial_index);
    for (const auto& [k, v] : t.params) {
      d->add_param_names(k);
      d->add_param_values(v);
    }
    d->set_config_json(config_to_json(t.resolved, false));
    d->set_config_hash(t.config_hash);
  }
  return s;
}

}  // namespace hylab::coordinator
