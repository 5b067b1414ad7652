// The coordinator's side of adaptive and growing sweeps (sweep/search.h): proposing
// tpe trials when slots are free, `sweep extend` and `sweep suggest`. Single-threaded like
// the rest of Coordinator::Impl; the proposals themselves are pure (propose_trials).
#include <spdlog/spdlog.h>

#include <set>

#include "common/check.h"
#include "coordinator/coordinator_impl.h"
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

void Coordinator::Impl::load_search(SweepInfo& s) {
  const int64_t id = s.row.sweep_id;
  const std::string json = store::sweep_search_json(store->db(), id);
  if (!json.empty()) s.search = search_state_from_json(json);
  auto st = store->db().prepare(
      "SELECT COUNT(*), COALESCE(MAX(trial_index) + 1, 0) FROM trials WHERE sweep_id = ?");
  st.bind(1, id);
  if (st.step()) {
    s.n_trials = st.int64(0);
    s.next_index = st.int64(1);
  }
  if (s.early_stop.type() == "hyperband") {
    for (const auto& tr : store->trials_of(id)) {
      s.trial_meta[tr.trial_id] = {
          tr.trial_index, tokens_per_step(config_from_json(tr.config_json), s.row.gpus_per_trial)};
    }
  }
}

std::vector<KnownTrial> Coordinator::Impl::known_trials(int64_t sweep_id, const std::string& metric,
                                                        bool minimize) {
  std::vector<KnownTrial> out;
  for (auto& r : store::search_trials(store->db(), sweep_id, metric)) {
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

void Coordinator::Impl::add_active_trial(const SweepInfo& s, int64_t trial_id,
                                         const TrialPlan& plan) {
  ActiveTrial t;
  t.trial_id = trial_id;
  t.sweep_id = s.row.sweep_id;
  t.trial_index = plan.trial_index;
  t.slots = s.row.gpus_per_trial;
  t.nodes = s.row.nodes_per_trial;
  t.priority = s.row.priority;
  t.config_json = config_to_json(plan.resolved, false);
  t.run_dir = "sweep-" + std::to_string(s.row.sweep_id) + "/trial-" + std::to_string(trial_id);
  trials[trial_id] = std::move(t);
}

// Proposes trials of tpe sweeps for the slots nobody's pending trial will take.
void Coordinator::Impl::propose_search_trials() {
  bool any = false;
  for (const auto& [id, s] : sweeps) any = any || s.proposes();
  if (!any) return;
  int64_t capacity = 0;  // trials the free slots could start now (single-node estimate)
  for (const auto& [id, w] : workers) {
    if (!w.draining) capacity += static_cast<int64_t>(w.free_slots().size());
  }
  for (const auto& [id, t] : trials) capacity -= t.state == proto::TRIAL_STATE_PENDING ? t.slots : 0;
  std::vector<int64_t> done;
  for (auto& [sweep_id, s] : sweeps) {
    if (capacity <= 0) break;
    if (!s.proposes()) continue;
    const int per_trial = std::max(1, s.row.gpus_per_trial);
    const int64_t n = std::min<int64_t>(s.search->spec.count() - s.n_trials, capacity / per_trial);
    if (n <= 0) continue;
    const Proposals p =
        propose_trials(*s.search, known_trials(sweep_id, s.row.metric_name, s.minimize),
                       s.next_index, static_cast<int>(n));
    for (const auto& plan : p.trials) {
      store::NewTrial nt;
      nt.trial_index = plan.trial_index;
      nt.params = plan.params;
      nt.resolved = plan.resolved;
      const int64_t trial_id =
          store::add_sweep_trial(store->db(), sweep_id, s.row.gpus_per_trial, s.row.priority, nt);
      add_active_trial(s, trial_id, plan);
      if (s.early_stop.type() == "hyperband") {
        s.trial_meta[trial_id] = {plan.trial_index,
                                  tokens_per_step(plan.resolved, s.row.gpus_per_trial)};
      }
      std::string text;
      for (const auto& [k, v] : plan.params) text += (text.empty() ? "" : " ") + k + "=" + v;
      store::add_event(store->db(), "trial_proposed", text, sweep_id, trial_id);
      spdlog::info("sweep {}: proposed trial {} (index {}, {} of {}): {}", sweep_id, trial_id,
                   plan.trial_index, s.n_trials + 1, s.search->spec.count(), text);
      ++s.n_trials;
      s.next_index = plan.trial_index + 1;
      capacity -= per_trial;
    }
    if (p.exhausted) {
      s.exhausted = true;
      store::add_event(
          store->db(), "search_exhausted",
          fmt::format("no new valid trial after {} of {}", s.n_trials, s.search->spec.count()),
          sweep_id);
      spdlog::warn(
          "sweep {}: no new valid trial could be proposed after {} of {}: the space is used up",
          sweep_id, s.n_trials, s.search->spec.count());
      done.push_back(sweep_id);
    }
  }
  for (int64_t id : done) finish_sweep_if_done(id);
}

std::string Coordinator::Impl::extend_sweep(const proto::SearchExtend& e) {
  const int64_t sweep_id = e.sweep_id();
  if (e.count() < 1 || e.count() > 100000)
    HYLAB_FAIL("--count = {}: expected 1..100000", e.count());
  const store::SweepRow row = store->sweep(sweep_id);
  if (row.state == proto::SWEEP_STATE_CANCELLED)
    HYLAB_FAIL("sweep {} is cancelled; `hylab sweep resume {}` first", sweep_id, sweep_id);
  if (e.trials_size() > 0) return extend_with_trials(e, row);
  const std::string json = store::sweep_search_json(store->db(), sweep_id);
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
    auto st = store->db().prepare(
        "SELECT COALESCE(MAX(trial_index) + 1, 0) FROM trials WHERE sweep_id = ?");
    st.bind(1, sweep_id);
    st.step();
    const int64_t next = st.int64(0);
    const Proposals p = propose_trials(
        state, known_trials(sweep_id, row.metric_name, row.metric_goal != "maximize"), next,
        e.count());
    if (p.trials.empty())
      HYLAB_FAIL("sweep {}: no new trial can be drawn (its space is used up)", sweep_id);
    auto it = sweeps.find(sweep_id);
    for (const auto& plan : p.trials) {
      store::NewTrial nt;
      nt.trial_index = plan.trial_index;
      nt.params = plan.params;
      nt.resolved = plan.resolved;
      const int64_t trial_id =
          store::add_sweep_trial(store->db(), sweep_id, row.gpus_per_trial, row.priority, nt);
      if (it != sweeps.end()) {
        add_active_trial(it->second, trial_id, plan);
        ++it->second.n_trials;
        it->second.next_index = plan.trial_index + 1;
      }
      ++added;
    }
    state.spec.set_count(state.spec.count() + added);
  }
  store::set_sweep_search_json(store->db(), sweep_id, search_state_to_json(state));
  store::add_event(store->db(), "sweep_extended", fmt::format("{} more trials", added), sweep_id);
  if (row.state != proto::SWEEP_STATE_RUNNING) {
    store->set_sweep_state(sweep_id, proto::SWEEP_STATE_RUNNING);
    auto kept = trials;
    load_sweep(store->sweep(sweep_id));
    for (auto& [id, t] : kept) trials[id] = std::move(t);
  } else if (auto it = sweeps.find(sweep_id); it != sweeps.end()) {
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
std::string Coordinator::Impl::extend_with_trials(const proto::SearchExtend& e,
                                                  const store::SweepRow& row) {
  const int64_t sweep_id = row.sweep_id;
  std::set<std::string> hashes;
  int64_t next = 0;
  for (const auto& r : store::search_trials(store->db(), sweep_id, row.metric_name)) {
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
    store::NewTrial nt;
    nt.trial_index = plan.trial_index;
    nt.params = plan.params;
    nt.resolved = plan.resolved;
    const int64_t trial_id =
        store::add_sweep_trial(store->db(), sweep_id, row.gpus_per_trial, row.priority, nt);
    if (auto it = sweeps.find(sweep_id); it != sweeps.end()) {
      add_active_trial(it->second, trial_id, plan);
      ++it->second.n_trials;
      it->second.next_index = plan.trial_index + 1;
    }
    ++added;
  }
  if (added == 0)
    HYLAB_FAIL("sweep {}: every trial of the given spec is already in the sweep", sweep_id);
  store::add_event(store->db(), "sweep_extended", fmt::format("{} more trials from a spec", added),
                   sweep_id);
  if (row.state != proto::SWEEP_STATE_RUNNING) {
    store->set_sweep_state(sweep_id, proto::SWEEP_STATE_RUNNING);
    auto kept = trials;
    load_sweep(store->sweep(sweep_id));
    for (auto& [id, t] : kept) trials[id] = std::move(t);
  }
  spdlog::info("sweep {} extended by {} trials from a spec", sweep_id, added);
  return nlohmann::json{
      {"sweep_id", sweep_id}, {"method", "spec"}, {"added", added}, {"count", next}}
      .dump();
}

std::string Coordinator::Impl::suggest_sweep(const proto::SearchSuggest& s) {
  const int64_t sweep_id = s.sweep_id();
  if (s.count() < 1 || s.count() > 1000) HYLAB_FAIL("--count = {}: expected 1..1000", s.count());
  const store::SweepRow row = store->sweep(sweep_id);
  const std::string json = store::sweep_search_json(store->db(), sweep_id);
  if (json.empty())
    HYLAB_FAIL("sweep {} is a grid sweep: it has no proposals beyond its grid", sweep_id);
  const SearchState state = search_state_from_json(json);
  auto st = store->db().prepare(
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
