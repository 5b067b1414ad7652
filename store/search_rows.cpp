#include "store/search_rows.h"

#include <map>

#include "common/check.h"

namespace hylab::store {

std::string sweep_search_json(Db& db, int64_t sweep_id) {
  auto st = db.prepare("SELECT search_json FROM sweeps WHERE sweep_id = ?");
  st.bind(1, sweep_id);
  if (!st.step()) HYLAB_FAIL("no sweep with sweep_id {} in {}", sweep_id, db.path());
  return st.text(0);
}

void set_sweep_search_json(Db& db, int64_t sweep_id, const std::string& json) {
  db.prepare("UPDATE sweeps SET search_json = ? WHERE sweep_id = ?")
      .bind(1, json)
      .bind(2, sweep_id)
      .run();
}

std::vector<SearchTrialRow> search_trials(Db& db, int64_t sweep_id, const std::string& metric) {
  std::vector<SearchTrialRow> out;
  std::map<int64_t, size_t> at;
  auto st = db.prepare(
      "SELECT t.trial_id, t.trial_index, t.state, t.config_hash, "
      "(SELECT m.value FROM metrics m WHERE m.trial_id = t.trial_id AND m.name = ?2 "
      " ORDER BY m.step DESC LIMIT 1) "
      "FROM trials t WHERE t.sweep_id = ?1 ORDER BY t.trial_index, t.trial_id");
  st.bind(1, sweep_id).bind(2, metric);
  while (st.step()) {
    SearchTrialRow r;
    r.trial_id = st.int64(0);
    r.trial_index = st.int64(1);
    r.state = parse_trial_state(st.text(2));
    r.config_hash = st.text(3);
    if (!st.is_null(4)) r.last_value = st.real(4);
    at[r.trial_id] = out.size();
    out.push_back(std::move(r));
  }
  auto p = db.prepare(
      "SELECT p.trial_id, p.name, p.value FROM trial_params p JOIN trials t USING(trial_id) "
      "WHERE t.sweep_id = ?");
  p.bind(1, sweep_id);
  while (p.step()) out[at.at(p.int64(0))].params.push_back({p.text(1), p.text(2)});
  return out;
}

int64_t add_sweep_trial(Db& db, int64_t sweep_id, int gpus, int priority, NewTrial t) {
  t.sweep_id = sweep_id;
  t.gpus = gpus;
  t.priority = priority;
  t.state = proto::TRIAL_STATE_PENDING;
  const int64_t trial_id = insert_trial(db, t);
  db.prepare("UPDATE trials SET run_dir = ? WHERE trial_id = ?")
      .bind(1, "sweep-" + std::to_string(sweep_id) + "/trial-" + std::to_string(trial_id))
      .bind(2, trial_id)
      .run();
  return trial_id;
}

}  // namespace hylab::store
