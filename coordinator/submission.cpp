#include "coordinator/submission.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "coordinator/sweep_spec.h"

namespace hylab::coordinator {

Submission prepare_submission(const std::string& sweep_path) {
  Submission s;
  s.spec = load_sweep_file(sweep_path);
  const RunConfig base = load_config_file(find_base_config(s.spec, sweep_path));
  s.expansion = expand_sweep(s.spec, base);
  std::ifstream in(sweep_path);
  std::stringstream text;
  text << in.rdbuf();
  auto& r = s.request;
  r.set_name(s.spec.name());
  r.set_spec_yaml(text.str());
  r.set_spec_path(std::filesystem::absolute(sweep_path).lexically_normal().string());
  r.set_metric_name(s.spec.metric().name());
  r.set_metric_goal(s.spec.metric().goal());
  r.set_priority(s.spec.priority());
  r.set_gpus_per_trial(s.spec.resources().gpus_per_trial());
  r.set_nodes_per_trial(s.spec.resources().nodes_per_trial());
  r.set_max_retries(s.spec.max_retries());
  r.set_early_stop_json(early_stop_to_json(s.spec));
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
