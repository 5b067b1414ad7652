// The book of running sweeps (sweep_book.h): the client's sweep requests, completion, early
// stopping, and the coordinator's side of adaptive and growing sweeps (sweep/search.h):
// proposing tpe trials when slots are free, `sweep extend` and `sweep suggest`. The
// proposals themselves are pure (propose_trials).
#include "coordinator/sweep_book.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "common/check.h"
#include "common/run_config.h"
#include "coordinator/trial_book.h"
#include "coordinator/worker_book.h"
#include "store/search_rows.h"

namespace hylab::coordinator {
namespace {

// Tokens one optimiser step trains on: total_batch_size, or one micro-step of every rank.
int64_t tokens_per_step(const RunConfig& c, int ranks) {
  if (c.total_batch_size() > 0) return c.total_batch_size();
  return static_cast<int64_t>(c.device_batch_size()) * c.max_seq_len() * std::max(1, ranks);
}

nlohmann::json params_json(const std::vector<std::pair<std::string, std::string>>& params) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [k, v] : params) j[k] = v;
  return j;
}

}  // namespace

SweepBook::SweepBook(BookEnv env, TrialBook& trials, const WorkerBook& workers)
    : env_(env), trials_(trials), workers_(workers) {}

// ---- loading ----

void SweepBook::load(const store::SweepRow& row, int64_t now, bool keep_known) {
  SweepInfo s;
  s.row = row;
  s.early_stop = early_stop_from_json(row.early_stop_json);
  s.minimize = row.metric_goal != "maximize";
  if (!s.early_stop.type().empty()) {
    for (auto& [trial_id, pts] : env_.store.metric_series(row.sweep_id, row.metric_name)) {
      s.series[trial_id] = std::move(pts);
    }
  }
  load_search(s);
  sweeps_[row.sweep_id] = std::move(s);
  trials_.load_sweep(row, now, keep_known);
}

void SweepBook::load_search(SweepInfo& s) {
  const int64_t id = s.row.sweep_id;
  const std::string json = store::sweep_search_json(env_.store.db(), id);
  if (!json.empty()) s.search = search_state_from_json(json);
  auto st = env_.store.db().prepare(
      "SELECT COUNT(*), COALESCE(MAX(trial_index) + 1, 0) FROM trials WHERE sweep_id = ?");
  st.bind(1, id);
  if (st.step()) {
    s.n_trials = st.int64(0);
    s.next_index = st.int64(1);
  }
  if (s.early_stop.type() == "hyperband") {
    for (const auto& tr : env_.store.trials_of(id)) {
      s.trial_meta[tr.trial_id] = {
          tr.trial_index, tokens_per_step(config_from_json(tr.config_json), s.row.gpus_per_trial)};
    }
  }
}

void SweepBook::load_running(int64_t now) {
  for (const auto& row : env_.store.sweeps(proto::SWEEP_STATE_RUNNING)) load(row, now, false);
}

void SweepBook::finish_all_done() {
  std::vector<int64_t> ids;  // (finish_if_done erases from sweeps_)
  for (const auto& [id, s] : sweeps_) ids.push_back(id);
  for (int64_t id : ids) finish_if_done(id);
}

// ---- client requests ----

std::string SweepBook::submit(const proto::SubmitSweep& s, int64_t now) {
  std::vector<store::NewTrial> rows;
  std::set<std::string> hashes;
  for (const auto& def : s.trials()) {
    store::NewTrial t;
    t.trial_index = def.trial_index();
    try {
      t.resolved = resolve_config(config_from_json(def.config_json()));
    } catch (const ConfigError& e) {
      HYLAB_FAIL("sweep {}: trial {}: {}", s.name(), def.trial_index(), e.what());
    }
    const std::string hash = config_hash(t.resolved);
    if (!def.config_hash().empty() && def.config_hash() != hash) {
      HYLAB_FAIL("sweep {}: trial {}: config_hash {} does not match its config ({}); client and "
                 "coordinator builds differ?", s.name(), def.trial_index(), def.config_hash(), hash);
    }
    if (!hashes.insert(hash).second) HYLAB_FAIL("sweep {}: trial {} duplicates an earlier trial", s.name(), def.trial_index());
    for (int i = 0; i < def.param_names_size(); ++i) t.params.push_back({def.param_names(i), def.param_values(i)});
    rows.push_back(std::move(t));
  }
  store::SweepRow row;
  row.name = s.name();
  row.spec_yaml = s.spec_yaml();
  row.spec_path = s.spec_path();
  row.metric_name = s.metric_name().empty() ? "val_bpb" : s.metric_name();
  row.metric_goal = s.metric_goal() == "maximize" ? "maximize" : "minimize";
  row.priority = s.priority();
  row.gpus_per_trial = s.gpus_per_trial();
  row.nodes_per_trial = std::max(1, s.nodes_per_trial());
  row.max_retries = s.max_retries();
  row.early_stop_json = s.early_stop_json();
  early_stop_from_json(row.early_stop_json);  // validate
  if (!s.search_json().empty()) search_state_from_json(s.search_json());  // validate
  const int64_t sweep_id = env_.store.create_sweep(row, std::move(rows));
  store::set_sweep_search_json(env_.store.db(), sweep_id, s.search_json());
  load(env_.store.sweep(sweep_id), now, false);
  spdlog::info("sweep {} ({}) submitted: {} trials, {} slots each", sweep_id, row.name,
               s.trials_size(), row.gpus_per_trial);
  return nlohmann::json{{"sweep_id", sweep_id}, {"trials", s.trials_size()}}.dump();
}

std::string SweepBook::cancel(int64_t sweep_id, Effects& fx) {
  const store::SweepRow row = env_.store.sweep(sweep_id);
  if (row.state != proto::SWEEP_STATE_RUNNING) {
    HYLAB_FAIL("sweep {} is {}, not running", sweep_id, to_string(row.state));
  }
  const std::vector<int64_t> ids = trials_.ids_of(sweep_id);
  for (int64_t id : ids) trials_.stop(id, proto::TRIAL_STATE_CANCELLED, "sweep cancelled", fx);
  env_.store.set_sweep_state(sweep_id, proto::SWEEP_STATE_CANCELLED);
  sweeps_.erase(sweep_id);
  spdlog::info("sweep {} cancelled ({} trials stopped or dequeued)", sweep_id, ids.size());
  return nlohmann::json{{"sweep_id", sweep_id}, {"state", to_string(proto::SWEEP_STATE_CANCELLED)}, {"trials_cancelled", ids.size()}}.dump();
}

std::string SweepBook::resume(int64_t sweep_id, int64_t now) {
  const store::SweepRow row = env_.store.sweep(sweep_id);
  int n = 0;
  for (const auto& t : env_.store.trials_of(sweep_id)) {
    if (t.state != proto::TRIAL_STATE_FAILED && t.state != proto::TRIAL_STATE_CANCELLED) continue;
    if (trials_.contains(t.trial_id)) continue;
    env_.store.set_trial_state(t.trial_id, proto::TRIAL_STATE_PENDING, 0, "resumed");
    store::add_event(env_.store.db(), "trial_resumed", "", sweep_id, t.trial_id);
    ++n;
  }
  if (n == 0 && row.state != proto::SWEEP_STATE_RUNNING) {
    HYLAB_FAIL("sweep {} has no failed or cancelled trials to run again", sweep_id);
  }
  if (row.state != proto::SWEEP_STATE_RUNNING) env_.store.set_sweep_state(sweep_id, proto::SWEEP_STATE_RUNNING);
  // Reload the sweep's active trials (keeps those already known).
  load(env_.store.sweep(sweep_id), now, /*keep_known=*/true);
  spdlog::info("sweep {} resumed: {} trials pending again", sweep_id, n);
  return nlohmann::json{{"sweep_id", sweep_id}, {"state", to_string(proto::SWEEP_STATE_RUNNING)}, {"trials_resumed", n}}.dump();
}

// ---- completion and early stopping ----

int SweepBook::max_retries(int64_t sweep_id) const {
  auto it = sweeps_.find(sweep_id);
  return it == sweeps_.end() ? 0 : it->second.row.max_retries;
}

void SweepBook::observe_metrics(int64_t sweep_id, const proto::MetricsBatch& b) {
  auto sw = sweeps_.find(sweep_id);
  if (sw == sweeps_.end() || sw->second.early_stop.type().empty()) return;
  auto& series = sw->second.series[b.trial_id()];
  for (const auto& m : b.metrics()) {
    if (m.name() != sw->second.row.metric_name) continue;
    // Keep (step, value) sorted and unique: a re-emitted step replaces the old value.
    auto pos = std::lower_bound(series.begin(), series.end(), std::make_pair(m.step(), -1e300));
    if (pos != series.end() && pos->first == m.step()) pos->second = m.value();
    else series.insert(pos, {m.step(), m.value()});
    sw->second.series_dirty = true;
  }
}

void SweepBook::finish_if_done(int64_t sweep_id) {
  auto sw = sweeps_.find(sweep_id);
  if (sw == sweeps_.end() || sw->second.row.state != proto::SWEEP_STATE_RUNNING) return;
  if (sw->second.proposes()) return;  // a tpe sweep with budget left
  if (auto active = trials_.newest_of(sweep_id, sw->second.active_hint)) {
    sw->second.active_hint = *active;
    return;
  }
  env_.store.set_sweep_state(sweep_id, proto::SWEEP_STATE_COMPLETED);
  spdlog::info("sweep {} ({}) completed", sweep_id, sw->second.row.name);
  sweeps_.erase(sw);
}

void SweepBook::check_early_stop(Effects& fx) {
  std::vector<StopDecision> stops;
  for (auto& [sweep_id, s] : sweeps_) {
    if (!s.series_dirty) continue;
    s.series_dirty = false;
    std::vector<MetricSeries> all;
    for (const auto& [trial_id, pts] : s.series) {
      MetricSeries m{trial_id, trials_.running(trial_id), pts};
      if (auto meta = s.trial_meta.find(trial_id); meta != s.trial_meta.end()) {
        m.trial_index = meta->second.first;
        m.tokens_per_step = meta->second.second;
      }
      all.push_back(std::move(m));
    }
    for (auto& d : early_stop(s.early_stop, s.minimize, all)) stops.push_back(std::move(d));
  }
  for (const auto& d : stops) trials_.stop(d.trial_id, proto::TRIAL_STATE_STOPPED, d.reason, fx);
}

// ---- proposals, extend, suggest ----

std::vector<KnownTrial> SweepBook::known_trials(int64_t sweep_id, const std::string& metric, bool minimize) {
  std::vector<KnownTrial> out;
  for (auto& r : store::search_trials(env_.store.db(), sweep_id, metric)) {
    KnownTrial k;
    k.params = std::move(r.params);
    k.config_hash = r.config_hash;
    k.pending = !is_final(r.state);
    if (is_result(r.state) && r.last_value && std::isfinite(*r.last_value)) {
      k.value = minimize ? *r.last_value : -*r.last_value;
    }
    out.push_back(std::move(k));
  }
  return out;
}

// The row of a new trial of `row`'s sweep (proposed, or given by extend); its id.
int64_t SweepBook::insert_trial(int64_t sweep_id, const store::SweepRow& row, const TrialPlan& plan) {
  store::NewTrial nt;
  nt.trial_index = plan.trial_index;
  nt.params = plan.params;
  nt.resolved = plan.resolved;
  return store::add_sweep_trial(env_.store.db(), sweep_id, row.gpus_per_trial, row.priority, nt);
}

void SweepBook::add_trial(const SweepInfo& s, int64_t trial_id, const TrialPlan& plan) {
  ActiveTrial t;
  t.trial_id = trial_id;
  t.sweep_id = s.row.sweep_id;
  t.trial_index = plan.trial_index;
  t.slots = s.row.gpus_per_trial;
  t.nodes = s.row.nodes_per_trial;
  t.priority = s.row.priority;
  t.config_json = config_to_json(plan.resolved, false);
  t.run_dir = "sweep-" + std::to_string(s.row.sweep_id) + "/trial-" + std::to_string(trial_id);
  trials_.add(std::move(t));
}

void SweepBook::propose() {
  bool any = false;
  for (const auto& [id, s] : sweeps_) any = any || s.proposes();
  if (!any) return;
  // Trials the free slots could start now (single-node estimate).
  int64_t capacity = workers_.free_slot_count() - trials_.pending_slots();
  std::vector<int64_t> done;
  for (auto& [sweep_id, s] : sweeps_) {
    if (capacity <= 0) break;
    if (!s.proposes()) continue;
    const int per_trial = std::max(1, s.row.gpus_per_trial);
    const int64_t n = std::min<int64_t>(s.search->spec.count() - s.n_trials, capacity / per_trial);
    if (n <= 0) continue;
    const Proposals p =
        propose_trials(*s.search, known_trials(sweep_id, s.row.metric_name, s.minimize),
                       s.next_index, static_cast<int>(n));
    for (const auto& plan : p.trials) {
      const int64_t trial_id = insert_trial(sweep_id, s.row, plan);
      add_trial(s, trial_id, plan);
      if (s.early_stop.type() == "hyperband") {
        s.trial_meta[trial_id] = {plan.trial_index,
                                  tokens_per_step(plan.resolved, s.row.gpus_per_trial)};
      }
      std::string text;
      for (const auto& [k, v] : plan.params) text += (text.empty() ? "" : " ") + k + "=" + v;
      store::add_event(env_.store.db(), "trial_proposed", text, sweep_id, trial_id);
      spdlog::info("sweep {}: proposed trial {} (index {}, {} of {}): {}", sweep_id, trial_id,
                   plan.trial_index, s.n_trials + 1, s.search->spec.count(), text);
      ++s.n_trials;
      s.next_index = plan.trial_index + 1;
      capacity -= per_trial;
    }
    if (p.exhausted) {
      s.exhausted = true;
      store::add_event(
          env_.store.db(), "search_exhausted",
          fmt::format("no new valid trial after {} of {}", s.n_trials, s.search->spec.count()),
          sweep_id);
      spdlog::warn(
          "sweep {}: no new valid trial could be proposed after {} of {}: the space is used up",
          sweep_id, s.n_trials, s.search->spec.count());
      done.push_back(sweep_id);
    }
  }
  for (int64_t id : done) finish_if_done(id);
}

std::string SweepBook::extend(const proto::SearchExtend& e, int64_t now) {
  const int64_t sweep_id = e.sweep_id();
  if (e.count() < 1 || e.count() > 100000)
    HYLAB_FAIL("--count = {}: expected 1..100000", e.count());
  const store::SweepRow row = env_.store.sweep(sweep_id);
  if (row.state == proto::SWEEP_STATE_CANCELLED)
    HYLAB_FAIL("sweep {} is cancelled; `hylab sweep resume {}` first", sweep_id, sweep_id);
  if (e.trials_size() > 0) return extend_with_trials(e, row, now);
  const std::string json = store::sweep_search_json(env_.store.db(), sweep_id);
  if (json.empty()) {
    HYLAB_FAIL(
        "sweep {} is a grid sweep: every combination of its values is already in it; give "
        "`--spec FILE` with more values (its new combinations are added)",
        sweep_id);
  }
  SearchState state = search_state_from_json(json);
  int added = 0;
  if (state.spec.method() == "tpe") {
    state.spec.set_count(state.spec.count() + e.count());
    added = e.count();
  } else {
    auto st = env_.store.db().prepare(
        "SELECT COALESCE(MAX(trial_index) + 1, 0) FROM trials WHERE sweep_id = ?");
    st.bind(1, sweep_id);
    st.step();
    const int64_t next = st.int64(0);
    const Proposals p = propose_trials(
        state, known_trials(sweep_id, row.metric_name, row.metric_goal != "maximize"), next,
        e.count());
    if (p.trials.empty())
      HYLAB_FAIL("sweep {}: no new trial can be drawn (its space is used up)", sweep_id);
    auto it = sweeps_.find(sweep_id);
    for (const auto& plan : p.trials) {
      const int64_t trial_id = insert_trial(sweep_id, row, plan);
      if (it != sweeps_.end()) {
        add_trial(it->second, trial_id, plan);
        ++it->second.n_trials;
        it->second.next_index = plan.trial_index + 1;
      }
      ++added;
    }
    state.spec.set_count(state.spec.count() + added);
  }
  store::set_sweep_search_json(env_.store.db(), sweep_id, search_state_to_json(state));
  store::add_event(env_.store.db(), "sweep_extended", fmt::format("{} more trials", added), sweep_id);
  if (row.state != proto::SWEEP_STATE_RUNNING) {
    env_.store.set_sweep_state(sweep_id, proto::SWEEP_STATE_RUNNING);
    load(env_.store.sweep(sweep_id), now, /*keep_known=*/true);
  } else if (auto it = sweeps_.find(sweep_id); it != sweeps_.end()) {
    it->second.search = state;
    it->second.exhausted = false;
  }
  spdlog::info("sweep {} extended by {} trials ({} now {})", sweep_id, added, state.spec.method(),
               state.spec.count());
  return nlohmann::json{{"sweep_id", sweep_id},
                        {"method", state.spec.method()},
                        {"added", added},
                        {"count", state.spec.count()}}
      .dump();
}

// `extend --spec FILE`: the client's expansion of the new file; the trials the sweep lacks.
std::string SweepBook::extend_with_trials(const proto::SearchExtend& e, const store::SweepRow& row, int64_t now) {
  const int64_t sweep_id = row.sweep_id;
  std::set<std::string> hashes;
  int64_t next = 0;
  for (const auto& r : store::search_trials(env_.store.db(), sweep_id, row.metric_name)) {
    hashes.insert(r.config_hash);
    next = std::max(next, r.trial_index + 1);
  }
  int added = 0;
  for (const auto& def : e.trials()) {
    if (added >= e.count()) break;
    TrialPlan plan;
    try {
      plan.resolved = resolve_config(config_from_json(def.config_json()));
    } catch (const ConfigError& err) {
      HYLAB_FAIL("sweep {}: extend: trial {}: {}", sweep_id, def.trial_index(), err.what());
    }
    plan.config_hash = config_hash(plan.resolved);
    if (!hashes.insert(plan.config_hash).second) continue;
    plan.trial_index = next++;
    for (int i = 0; i < def.param_names_size(); ++i)
      plan.params.push_back({def.param_names(i), def.param_values(i)});
    const int64_t trial_id = insert_trial(sweep_id, row, plan);
    if (auto it = sweeps_.find(sweep_id); it != sweeps_.end()) {
      add_trial(it->second, trial_id, plan);
      ++it->second.n_trials;
      it->second.next_index = plan.trial_index + 1;
    }
    ++added;
  }
  if (added == 0)
    HYLAB_FAIL("sweep {}: every trial of the given spec is already in the sweep", sweep_id);
  store::add_event(env_.store.db(), "sweep_extended", fmt::format("{} more trials from a spec", added),
                   sweep_id);
  if (row.state != proto::SWEEP_STATE_RUNNING) {
    env_.store.set_sweep_state(sweep_id, proto::SWEEP_STATE_RUNNING);
    load(env_.store.sweep(sweep_id), now, /*keep_known=*/true);
  }
  spdlog::info("sweep {} extended by {} trials from a spec", sweep_id, added);
  return nlohmann::json{
      {"sweep_id", sweep_id}, {"method", "spec"}, {"added", added}, {"count", next}}
      .dump();
}

std::string SweepBook::suggest(const proto::SearchSuggest& s) {
  const int64_t sweep_id = s.sweep_id();
  if (s.count() < 1 || s.count() > 1000) HYLAB_FAIL("--count = {}: expected 1..1000", s.count());
  const store::SweepRow row = env_.store.sweep(sweep_id);
  const std::string json = store::sweep_search_json(env_.store.db(), sweep_id);
  if (json.empty())
    HYLAB_FAIL("sweep {} is a grid sweep: it has no proposals beyond its grid", sweep_id);
  const SearchState state = search_state_from_json(json);
  auto st = env_.store.db().prepare(
      "SELECT COALESCE(MAX(trial_index) + 1, 0) FROM trials WHERE sweep_id = ?");
  st.bind(1, sweep_id);
  st.step();
  const Proposals p =
      propose_trials(state, known_trials(sweep_id, row.metric_name, row.metric_goal != "maximize"),
                     st.int64(0), s.count());
  nlohmann::json out = nlohmann::json::array();
  for (const auto& t : p.trials) {
    out.push_back({{"trial_index", t.trial_index},
                   {"params", params_json(t.params)},
                   {"config_hash", t.config_hash}});
  }
  return nlohmann::json{{"sweep_id", sweep_id},
                        {"method", state.spec.method()},
                        {"proposals", out},
                        {"exhausted", p.exhausted}}
      .dump();
}

}  // namespace hylab::coordinator
