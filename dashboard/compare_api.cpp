// The comparison routes of the dashboard's API, over the cmp statistics of store/compare.h
// (the same numbers `hylab results --group_by` prints): groups with mean ± std and n, and the
// Pareto front of val_bpb against a cost or speed axis.
#include <algorithm>
#include <set>

#include "common/states.h"
#include "dashboard/api.h"
#include "store/compare.h"
#include "store/results.h"

namespace hylab::dashboard {
namespace {

using nlohmann::json;

store::Table sweep_table(store::Db& db, int64_t sweep_id) {
  auto st = db.prepare("SELECT COUNT(*) FROM sweeps WHERE sweep_id = ?1");
  st.bind(1, sweep_id);
  if (!st.step() || st.int64(0) == 0) throw NotFound("no sweep " + std::to_string(sweep_id));
  store::ResultsQuery q;
  q.sweep_id = sweep_id;
  return store::results(db, q);
}

}  // namespace

const std::vector<std::string>& pareto_axes() {
  static const std::vector<std::string> kAxes = {
      "tok_per_s",    "decode_tok_per_s_b1", "decode_tok_per_s_b32",
      "peak_mem_gib", "cache_bytes",         "params",
      "mfu"};
  return kAxes;
}

json pareto(store::Db& db, int64_t sweep_id, const std::string& x) {
  const auto& axes = pareto_axes();
  if (std::find(axes.begin(), axes.end(), x) == axes.end()) {
    std::string allowed;
    for (const auto& a : axes) allowed += (allowed.empty() ? "" : ", ") + a;
    throw std::invalid_argument("x=" + x + ": expected one of " + allowed);
  }
  const store::Table t = sweep_table(db, sweep_id);
  const int id_col = t.column("trial_id"), state_col = t.column("state");
  const int x_col = t.column(x), y_col = t.column("val_bpb");
  // The front is taken over finished trials only: a running or early-stopped trial's
  // val_bpb is not its final word.
  store::Table done;
  done.columns = t.columns;
  for (const auto& r : t.rows) {
    if (r[state_col].is_string() && parse_trial_state(r[state_col].get<std::string>()) == proto::TRIAL_STATE_SUCCEEDED) {
      done.rows.push_back(r);
    }
  }
  const std::vector<bool> on = x_col < 0 ? std::vector<bool>(done.rows.size(), false)
                                         : store::pareto_mask(done, {"val_bpb", x});
  std::set<int64_t> front;
  for (size_t i = 0; i < done.rows.size(); ++i) {
    if (on[i]) front.insert(done.rows[i][id_col].get<int64_t>());
  }
  json points = json::array();
  for (const auto& r : t.rows) {
    if (x_col < 0 || !r[x_col].is_number() || !r[y_col].is_number()) continue;
    const int64_t id = r[id_col].get<int64_t>();
    points.push_back({{"trial_id", id},
                      {"state", r[state_col]},
                      {"x", r[x_col]},
                      {"y", r[y_col]},
                      {"front", front.count(id) > 0}});
  }
  return {{"x", x},
          {"x_goal", store::default_goal(x) == store::Goal::kMaximize ? "maximize" : "minimize"},
          {"y", "val_bpb"},
          {"y_goal", "minimize"},
          {"points", points}};
}

json groups(store::Db& db, int64_t sweep_id, const std::vector<std::string>& group_by,
            bool include_stopped) {
  const store::Table t = sweep_table(db, sweep_id);
  store::GroupQuery q;
  q.group_by = group_by;
  q.include_stopped = include_stopped;
  if (q.group_by.empty()) {
    // Default: every swept parameter but the seed (so seeds are what a group averages over).
    auto st = db.prepare(
        "SELECT DISTINCT p.name FROM trial_params p JOIN trials t USING(trial_id) WHERE t.sweep_id "
        "= ?1 "
        "AND p.name NOT IN ('seed', 'attention_fraction', 'placement') ORDER BY p.name");
    st.bind(1, sweep_id);
    while (st.step()) {
      if (t.column(st.text(0)) >= 0) q.group_by.push_back(st.text(0));
    }
    if (q.group_by.empty()) q.group_by.push_back("block_pattern");
  }
  for (const auto& c : q.group_by) {
    if (t.column(c) < 0)
      throw std::invalid_argument("group_by=" + c + ": not a column of this sweep's trials");
  }
  const std::vector<store::Group> g = store::group_trials(t, q);
  json out = store::groups_json(g, q);
  out["footer"] = store::groups_footer(g, q);  // the lines `hylab results --group_by` prints under its table
  return out;
}

}  // namespace hylab::dashboard
