// The rows adaptive and growing sweeps read and write (sweep/search.h): the sweep's
// search state (sweeps.search_json), its trials with their params and sweep-metric value,
// and trials added to a running sweep. Free functions over the coordinator's Db: they open
// no transaction (the event loop's one covers them).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "store/db.h"
#include "store/schema.h"

namespace hylab::store {

std::string sweep_search_json(Db& db, int64_t sweep_id);  // "" for grid sweeps
void set_sweep_search_json(Db& db, int64_t sweep_id, const std::string& json);

struct SearchTrialRow {
  int64_t trial_id = 0, trial_index = 0;
  proto::TrialState state = proto::TRIAL_STATE_UNSPECIFIED;
  std::string config_hash;
  std::vector<std::pair<std::string, std::string>> params;  // as written
  std::optional<double> last_value;  // the metric at the trial's newest step, if any
};
// Every trial of the sweep, in trial_index order, with `metric`'s newest value.
std::vector<SearchTrialRow> search_trials(Db& db, int64_t sweep_id, const std::string& metric);

// Inserts a pending trial into an existing sweep (run_dir "sweep-<id>/trial-<id>"); fills
// t.sweep_id, gpus, priority. Returns its trial_id.
int64_t add_sweep_trial(Db& db, int64_t sweep_id, int gpus, int priority, NewTrial t);

}  // namespace hylab::store
