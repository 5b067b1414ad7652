// The book of trials (trial_book.h): attempt start/metrics/finish, retries, cancellation,
// recovery after a restart, scheduling.
#include "coordinator/trial_book.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

#include "common/check.h"
#include "common/metrics.h"
#include "coordinator/policy.h"
#include "coordinator/scheduler.h"
#include "coordinator/sweep_book.h"

namespace hylab::coordinator {
namespace {

std::string join_ints(const std::vector<int>& v) {
  std::string out;
  for (int x : v) out += (out.empty() ? "" : ",") + std::to_string(x);
  return out;
}

// A pending trial as the scheduler sees it.
SchedTrial sched_entry(const ActiveTrial& t) {
  return {t.trial_id, t.sweep_id, t.trial_index, t.slots, t.nodes, t.priority};
}

}  // namespace

TrialBook::TrialBook(BookEnv env, WorkerBook& workers, SweepBook& sweeps)
    : env_(env), workers_(workers), sweeps_(sweeps) {}

// ---- messages ----

bool TrialBook::reports_on(const std::string& worker_id, int64_t trial_id, int64_t attempt) {
  if (workers_.holds(worker_id, {trial_id, attempt})) return true;
  if (auto it = trials_.find(trial_id); it != trials_.end() && it->second.attempt == attempt) {
    for (const auto& n : it->second.run) {
      if (n.worker_id == worker_id) return true;
    }
  }
  auto& q = env_.store.db().cached("SELECT worker_id FROM trial_attempts WHERE trial_id = ? AND attempt = ?");
  q.bind(1, trial_id).bind(2, attempt);
  const bool named = q.step() && q.text(0) == worker_id;
  q.reset();
  return named;
}

void TrialBook::on_started(const std::string& worker_id, const proto::Started& s, int64_t /*now*/, Effects& fx) {
  auto it = trials_.find(s.trial_id());
  if (it == trials_.end() || it->second.attempt != s.attempt() || it->second.state != proto::TRIAL_STATE_RUNNING) {
    if (!workers_.counts(worker_id, {s.trial_id(), s.attempt()})) {
      fx.cancel(worker_id, s.trial_id(), s.attempt(), "stale attempt");
    }
    return;
  }
  for (auto& n : it->second.run) {
    if (n.worker_id == worker_id) n.confirmed = true;
  }
  store::add_event(env_.store.db(), "trial_started", fmt::format("pid {} in {}", s.pid(), s.run_dir()),
                   it->second.sweep_id, s.trial_id(), worker_id, s.attempt());
  // Where the attempt runs, for `hylab logs` and results' run_dir (node 0's for multi-node).
  env_.store.db()
      .cached("UPDATE trial_attempts SET run_dir = ? WHERE trial_id = ? AND attempt = ? AND worker_id = ?")
      .bind(1, s.run_dir()).bind(2, s.trial_id()).bind(3, s.attempt()).bind(4, worker_id)
      .run();
  spdlog::info("trial {} attempt {} started on {} (pid {})", s.trial_id(), s.attempt(), worker_id, s.pid());
}

void TrialBook::on_metrics(const std::string& worker_id, const proto::MetricsBatch& b, int64_t now, Effects& fx) {
  proto::Envelope ack;
  ack.mutable_metrics_ack()->set_trial_id(b.trial_id());
  ack.mutable_metrics_ack()->set_attempt(b.attempt());
  ack.mutable_metrics_ack()->set_seq(b.seq());
  // Accept the trial's current attempt only, also after it became final (late records of a
  // cancelled attempt); records of older attempts would overwrite newer values.
  auto it = trials_.find(b.trial_id());
  int64_t current = 0;
  int64_t sweep_id = 0;
  if (it != trials_.end()) {
    current = it->second.attempt;
    sweep_id = it->second.sweep_id;
  } else {
    try {
      const auto row = env_.store.trial(b.trial_id());
      current = row.attempt;
      sweep_id = row.sweep_id;
    } catch (const Error&) {
      current = -1;
    }
  }
  if (current != b.attempt()) {
    env_.log_limit.warn("stale metrics", now, fmt::format("metrics of trial {} attempt {} from {} dropped: the current "
                                                          "attempt is {}", b.trial_id(), b.attempt(), worker_id, current));
    fx.to(worker_id, ack);
    return;
  }
  if (!reports_on(worker_id, b.trial_id(), b.attempt())) {
    env_.log_limit.warn("not owner", now, fmt::format("metrics of trial {} attempt {} from {} refused: that worker does "
                                                      "not hold the attempt", b.trial_id(), b.attempt(), worker_id));
    fx.to(worker_id, ack);  // nothing stored; acked so that a confused worker stops resending
    return;
  }
  // A retransmitted batch (seq <= last_seq) is stored again: its rows are keyed by
  // (trial_id, name, step) and carry the same values, so nothing changes.
  std::map<int64_t, std::vector<MetricPoint>> by_attempt;
  for (const auto& m : b.metrics()) {
    by_attempt[m.attempt() > 0 ? m.attempt() : b.attempt()].push_back(
        MetricPoint{m.step(), m.name(), m.value(), m.wall_time()});
  }
  int64_t newest = -1;
  for (const auto& [attempt, points] : by_attempt) {
    newest = std::max(newest, store::insert_metrics(env_.store.db(), b.trial_id(), attempt, points));
  }
  if (b.checkpoint_step() >= 0) {
    env_.store.set_checkpoint_step(b.trial_id(), b.checkpoint_step());
    if (it != trials_.end()) it->second.checkpoint_step = std::max(it->second.checkpoint_step, b.checkpoint_step());
  }
  if (b.has_summary()) {
    const auto& s = b.summary();
    RunSummary r;
    r.params_total = s.params_total();
    r.params_json = s.params_json();
    r.flops_per_token = s.flops_per_token();
    r.steps = s.steps();
    r.total_time_s = s.total_time_s();
    r.final_val_bpb = s.final_val_bpb();
    r.final_train_loss = s.final_train_loss();
    r.tok_per_s = s.tok_per_s();
    r.mfu = s.mfu();
    r.peak_mem_gib = s.peak_mem_gib();
    r.decode_tok_per_s_b1 = s.decode_tok_per_s_b1();
    r.decode_tok_per_s_b32 = s.decode_tok_per_s_b32();
    r.cache_bytes = s.cache_bytes();
    r.provenance_json = s.provenance_json();
    r.disk_bytes = s.disk_bytes();
    r.recall_acc = s.recall_acc();
    r.val_bpb_2x = s.val_bpb_2x();
    r.val_bpb_4x = s.val_bpb_4x();
    store::put_summary(env_.store.db(), b.trial_id(), r);
  }
  if (it != trials_.end()) {  // an active trial: written behind (flush_progress)
    Progress& p = unflushed_[{b.trial_id(), b.attempt()}];
    p.last_step = std::max(p.last_step, newest);
    p.last_seq = std::max(p.last_seq, b.seq());
  } else {  // late records of an attempt that has ended
    write_progress({b.trial_id(), b.attempt()}, Progress{newest, b.seq()});
  }
  sweeps_.observe_metrics(sweep_id, b);
  fx.to(worker_id, ack);
}

void TrialBook::on_finished(const std::string& worker_id, const proto::Finished& f, int64_t now, Effects& fx) {
  proto::Envelope ack;
  ack.mutable_finished_ack()->set_trial_id(f.trial_id());
  ack.mutable_finished_ack()->set_attempt(f.attempt());
  const AttemptKey key{f.trial_id(), f.attempt()};
  if (!reports_on(worker_id, f.trial_id(), f.attempt())) {
    env_.log_limit.warn("not owner", now, fmt::format("finished of trial {} attempt {} from {} refused: that worker does "
                                                      "not hold the attempt", f.trial_id(), f.attempt(), worker_id));
    fx.to(worker_id, ack);  // nothing recorded; acked so that a confused worker lets it go
    return;
  }
  workers_.let_go(worker_id, key);
  auto it = trials_.find(f.trial_id());
  const bool current = it != trials_.end() && it->second.attempt == f.attempt() && it->second.state == proto::TRIAL_STATE_RUNNING;
  if (!current) {
    // A repeat, or the end of an attempt this coordinator already gave up (cancelled,
    // stopped, lost): record its outcome if the attempt row is still open, change nothing else.
    env_.store.finish_attempt(f.trial_id(), f.attempt(), attempt_state(f.outcome()), f.reason(),
                              f.exit_code(), f.log_tail());
    fx.to(worker_id, ack);
    return;
  }
  ActiveTrial& t = it->second;
  NodeRun* node = nullptr;
  for (auto& n : t.run) {
    if (n.worker_id == worker_id) node = &n;
  }
  if (node == nullptr) {
    env_.log_limit.warn("not owner", now, fmt::format("finished for trial {} attempt {} from {}, which does not run "
                                                      "it: ignored", f.trial_id(), f.attempt(), worker_id));
    fx.to(worker_id, ack);
    return;
  }
  node->finished = true;
  // Refused (draining, a busy slot) or preempted: give that worker a heartbeat's pause,
  // so a worker whose state this coordinator got wrong is not sent the next one at once, for
  // ever (a livelock of thousands of attempts in the simulator).
  if (f.outcome() == proto::TRIAL_OUTCOME_PREEMPTED) workers_.cool_down(worker_id, now + env_.opt.heartbeat_ms);
  // Multi-node: rank 0 decides a success; any node's failure ends the attempt everywhere.
  if (f.outcome() == proto::TRIAL_OUTCOME_SUCCEEDED && node->node_rank != 0) {
    fx.to(worker_id, ack);
    return;
  }
  spdlog::info("trial {} attempt {} on {}: {} (exit {}){}", t.trial_id, t.attempt, worker_id,
               to_string(attempt_state(f.outcome())), f.exit_code(), f.reason().empty() ? "" : ": " + f.reason());
  // Cancelling a trial for good (a cancelled sweep, early stop) ends it here at once, so a
  // cancelled outcome of the *current* attempt is a node this coordinator cancelled as stale
  // (or someone else stopped): an infrastructure loss, retried, never the trial's end.
  const proto::TrialOutcome outcome =
      f.outcome() == proto::TRIAL_OUTCOME_CANCELLED ? proto::TRIAL_OUTCOME_LOST : f.outcome();
  conclude(t, outcome, f.exit_code(), f.reason(), f.log_tail(), fx);
  fx.to(worker_id, ack);
}

void TrialBook::on_rendezvous(const std::string& worker_id, const proto::Rendezvous& r, int64_t now, Effects& fx) {
  auto it = trials_.find(r.trial_id());
  bool node0 = false;
  if (it != trials_.end() && it->second.attempt == r.attempt()) {
    for (const auto& n : it->second.run) node0 = node0 || (n.node_rank == 0 && n.worker_id == worker_id);
  }
  if (!node0) {
    env_.log_limit.warn("stale rendezvous", now, fmt::format("rendezvous for trial {} attempt {} from {} dropped: not "
                                                             "node 0 of the current attempt", r.trial_id(), r.attempt(),
                                                             worker_id));
    return;
  }
  it->second.rendezvous = r.payload();
  for (const auto& n : it->second.run) {
    if (n.node_rank == 0) continue;
    proto::Envelope env;
    *env.mutable_rendezvous() = r;
    fx.to(n.worker_id, env);
  }
}

// ---- ending attempts ----

void TrialBook::conclude(ActiveTrial& t, proto::TrialOutcome outcome, int exit_code, const std::string& reason,
                         const std::string& log_tail, Effects& fx) {
  const int max_retries = sweeps_.max_retries(t.sweep_id);
  // A trainer killed by SIGKILL did not fail by itself (the OOM killer, an operator, a node
  // going away): an infrastructure loss.
  if (outcome == proto::TRIAL_OUTCOME_FAILED && exit_code == -9) outcome = proto::TRIAL_OUTCOME_LOST;
  const AttemptDecision d = decide_after_attempt(outcome, t.failures, max_retries, t.losses);
  flush_progress(t.trial_id);
  env_.store.finish_attempt(t.trial_id, t.attempt, attempt_state(outcome), reason, exit_code, log_tail);
  // The other nodes of a multi-node attempt stop too.
  for (const auto& n : t.run) {
    if (!n.finished && workers_.registered(n.worker_id)) {
      fx.cancel(n.worker_id, t.trial_id, t.attempt, "another node of the attempt ended");
    }
  }
  t.failures += d.count_failure ? 1 : 0;
  t.losses += d.count_loss ? 1 : 0;
  t.run.clear();
  t.recover_deadline_ms.reset();
  t.rendezvous.clear();
  const std::string ended = to_string(attempt_state(outcome));
  const std::string why = reason.empty() ? ended : reason;
  store::add_event(env_.store.db(), "attempt_finished", ended + ": " + why, t.sweep_id,
                   t.trial_id, "", t.attempt);
  if (d.retry) {
    set_state(t, proto::TRIAL_STATE_PENDING);
    env_.store.set_trial_state(t.trial_id, proto::TRIAL_STATE_PENDING, t.failures,
                               d.count_loss
                                   ? fmt::format("attempt {} {}; retrying ({} losses of {} allowed)",
                                                 t.attempt, why, t.losses, kMaxLosses)
                                   : fmt::format("attempt {} {}; retrying ({} failures of {} allowed)",
                                                 t.attempt, why, t.failures, max_retries));
    spdlog::info("trial {} will run again ({} failures, max_retries {})", t.trial_id, t.failures, max_retries);
    return;
  }
  const int64_t sweep_id = t.sweep_id;
  env_.store.set_trial_state(t.trial_id, d.trial_state, t.failures,
                             d.trial_state == proto::TRIAL_STATE_SUCCEEDED ? "" : why);
  drop(trials_.find(t.trial_id));  // t is gone from here on
  sweeps_.finish_if_done(sweep_id);
}

void TrialBook::requeue(ActiveTrial& t, const std::string& reason, Effects& fx) {
  env_.store.finish_attempt(t.trial_id, t.attempt, proto::ATTEMPT_STATE_ABANDONED, reason, -1, "");
  spdlog::warn("trial {} attempt {} never started ({}): pending again", t.trial_id, t.attempt, reason);
  for (const auto& n : t.run) {
    if (workers_.release(n.worker_id, {t.trial_id, t.attempt})) {
      fx.cancel(n.worker_id, t.trial_id, t.attempt, "attempt abandoned");
    }
  }
  t.run.clear();
  set_state(t, proto::TRIAL_STATE_PENDING);
  env_.store.set_trial_state(t.trial_id, proto::TRIAL_STATE_PENDING, t.failures, reason);
}

void TrialBook::stop(int64_t trial_id, proto::TrialState state, const std::string& reason, Effects& fx) {
  auto it = trials_.find(trial_id);
  if (it == trials_.end()) return;
  ActiveTrial& t = it->second;
  flush_progress(trial_id);
  if (t.state == proto::TRIAL_STATE_RUNNING) {
    for (const auto& n : t.run) {
      if (workers_.registered(n.worker_id)) fx.cancel(n.worker_id, t.trial_id, t.attempt, reason);
    }
    env_.store.finish_attempt(t.trial_id, t.attempt, attempt_state(state), reason, -1, "");
  }
  env_.store.set_trial_state(t.trial_id, state, t.failures, reason);
  store::add_event(env_.store.db(), "trial_" + to_string(state), reason, t.sweep_id, t.trial_id, "", t.attempt);
  spdlog::info("trial {} {}: {}", t.trial_id, to_string(state), reason);
  const int64_t sweep_id = t.sweep_id;
  drop(it);
  sweeps_.finish_if_done(sweep_id);
}

// ---- for WorkerBook ----

bool TrialBook::is_current(const AttemptKey& key) const {
  auto it = trials_.find(key.first);
  return it != trials_.end() && it->second.attempt == key.second && it->second.state == proto::TRIAL_STATE_RUNNING;
}

bool TrialBook::confirm(const AttemptKey& key, const std::string& worker_id) {
  if (!is_current(key)) return false;
  for (auto& n : trials_.at(key.first).run) {
    if (n.worker_id == worker_id) n.confirmed = true;
  }
  return true;
}

bool TrialBook::recovering(const AttemptKey& key) const {
  return is_current(key) && trials_.at(key.first).recover_deadline_ms.has_value();
}

bool TrialBook::node_confirmed(const AttemptKey& key, const std::string& worker_id) const {
  auto it = trials_.find(key.first);
  if (it == trials_.end() || it->second.attempt != key.second) return false;
  for (const auto& n : it->second.run) {
    if (n.worker_id == worker_id && n.confirmed) return true;
  }
  return false;
}

void TrialBook::claim_recovered(const AttemptKey& key, const std::string& worker_id, const std::vector<int>& slots,
                                std::optional<int> node_rank) {
  ActiveTrial& t = trials_.at(key.first);
  bool have = false;
  for (auto& n : t.run) have = have || n.worker_id == worker_id;
  if (!have) {
    t.run.push_back(NodeRun{worker_id, slots, node_rank.value_or(static_cast<int>(t.run.size())), true, false});
    std::sort(t.run.begin(), t.run.end(),
              [](const NodeRun& a, const NodeRun& b) { return a.node_rank < b.node_rank; });
  }
  if (static_cast<int>(t.run.size()) >= t.nodes) t.recover_deadline_ms.reset();
  spdlog::info("trial {} attempt {} recovered on worker {} (slots {})", t.trial_id, t.attempt, worker_id,
               join_ints(slots));
  store::add_event(env_.store.db(), "trial_recovered", "", t.sweep_id, t.trial_id, worker_id, t.attempt);
}

bool TrialBook::requeue_unstarted(const AttemptKey& key, const std::string& reason, Effects& fx) {
  if (!is_current(key)) return false;
  requeue(trials_.at(key.first), reason, fx);
  return true;
}

void TrialBook::attempt_gone(const AttemptKey& key, const std::string& worker_id, const std::string& lost_reason,
                             const std::string& unstarted_reason, Effects& fx) {
  if (!is_current(key)) return;
  ActiveTrial& t = trials_.at(key.first);
  if (node_confirmed(key, worker_id)) {
    conclude(t, proto::TRIAL_OUTCOME_LOST, -1, lost_reason, "", fx);
  } else {
    requeue(t, unstarted_reason, fx);
  }
}

// ---- for SweepBook ----

void TrialBook::add(ActiveTrial t) { put(std::move(t)); }

void TrialBook::put(ActiveTrial t) {
  if (auto old = trials_.find(t.trial_id); old != trials_.end()) drop(old);
  const int64_t id = t.trial_id;
  file(trials_.emplace(id, std::move(t)).first->second);
}

void TrialBook::drop(std::map<int64_t, ActiveTrial>::iterator it) {
  unfile(it->second);
  trials_.erase(it);
}

void TrialBook::set_state(ActiveTrial& t, proto::TrialState state) {
  unfile(t);
  t.state = state;
  file(t);
}

void TrialBook::file(const ActiveTrial& t) {
  if (t.state == proto::TRIAL_STATE_PENDING) {
    pending_.insert(sched_entry(t));
  } else {
    running_slots_[t.sweep_id] += t.slots;
  }
}

void TrialBook::unfile(const ActiveTrial& t) {
  if (t.state == proto::TRIAL_STATE_PENDING) {
    pending_.erase(sched_entry(t));
    return;
  }
  auto it = running_slots_.find(t.sweep_id);
  if (it != running_slots_.end() && (it->second -= t.slots) == 0) running_slots_.erase(it);
}

std::string TrialBook::check_index() const {
  PendingSet pending;
  std::map<int64_t, int> running;
  for (const auto& [id, t] : trials_) {
    if (t.state == proto::TRIAL_STATE_PENDING) {
      pending.insert(sched_entry(t));
    } else {
      running[t.sweep_id] += t.slots;
    }
  }
  for (auto it = running.begin(); it != running.end();) it = it->second == 0 ? running.erase(it) : std::next(it);
  const auto same_trial = [](const SchedTrial& a, const SchedTrial& b) { return a.trial_id == b.trial_id; };
  if (!std::equal(pending_.begin(), pending_.end(), pending.begin(), pending.end(), same_trial)) {
    return fmt::format("pending index holds {} trials, the book {}", pending_.size(), pending.size());
  }
  if (running != running_slots_) return "running slots per sweep differ from the book's running trials";
  return "";
}

void TrialBook::load_sweep(const store::SweepRow& row, int64_t now, bool keep_known) {
  for (const auto& tr : env_.store.active_trials(row.sweep_id)) {
    if (keep_known && trials_.count(tr.trial_id)) continue;
    ActiveTrial t;
    t.trial_id = tr.trial_id;
    t.sweep_id = tr.sweep_id;
    t.trial_index = tr.trial_index;
    t.slots = row.gpus_per_trial;
    t.nodes = row.nodes_per_trial;
    t.priority = row.priority;
    t.state = tr.state;
    t.attempt = tr.attempt;
    t.failures = tr.failures;
    t.config_json = tr.config_json;
    t.run_dir = tr.run_dir;
    t.checkpoint_step = tr.checkpoint_step;
    auto lost = env_.store.db().prepare("SELECT COUNT(*) FROM trial_attempts WHERE trial_id = ? AND state = ?");
    lost.bind(1, t.trial_id).bind(2, to_string(proto::ATTEMPT_STATE_LOST));
    if (lost.step()) t.losses = static_cast<int>(lost.int64(0));
    if (t.state == proto::TRIAL_STATE_RUNNING) {
      // Its workers will say whether they still hold it.
      t.recover_deadline_ms = now + env_.opt.recovery_grace_ms;
      recovering_ = true;
      t.recover_worker = tr.worker_id;
      t.assigned_ms = now;
    }
    put(std::move(t));
  }
}

void TrialBook::recover_progress() {
  for (const auto& [id, t] : trials_) {
    if (t.state != proto::TRIAL_STATE_RUNNING) continue;
    store::raise_last_step(env_.store.db(), id, store::newest_metric_step(env_.store.db(), id));
  }
}

void TrialBook::write_progress(const AttemptKey& key, const Progress& p) {
  store::raise_last_step(env_.store.db(), key.first, p.last_step);
  env_.store.set_last_seq(key.first, key.second, p.last_seq);
}

void TrialBook::flush_progress() {
  for (const auto& [key, p] : unflushed_) write_progress(key, p);
  unflushed_.clear();
}

void TrialBook::flush_progress(int64_t trial_id) {
  auto it = unflushed_.lower_bound({trial_id, 0});
  while (it != unflushed_.end() && it->first.first == trial_id) {
    write_progress(it->first, it->second);
    it = unflushed_.erase(it);
  }
}

std::vector<int64_t> TrialBook::ids_of(int64_t sweep_id) const {
  std::vector<int64_t> ids;
  for (const auto& [id, t] : trials_) {
    if (t.sweep_id == sweep_id) ids.push_back(id);
  }
  return ids;
}

bool TrialBook::running(int64_t trial_id) const {
  auto t = trials_.find(trial_id);
  return t != trials_.end() && t->second.state == proto::TRIAL_STATE_RUNNING;
}

int64_t TrialBook::pending_slots() const {
  int64_t n = 0;
  for (const SchedTrial& t : pending_) n += t.slots;
  return n;
}

// The newest, so that it stays active the longest: the scan of every active trial runs only
// when it has gone (the scan after each finished attempt was 11% of the coordinator's CPU at
// 1,000 workers and 7,000 trials).
std::optional<int64_t> TrialBook::newest_of(int64_t sweep_id, int64_t hint) const {
  if (auto it = trials_.find(hint); it != trials_.end() && it->second.sweep_id == sweep_id) return hint;
  for (auto it = trials_.rbegin(); it != trials_.rend(); ++it) {
    if (it->second.sweep_id == sweep_id) return it->first;
  }
  return std::nullopt;
}

// ---- each iteration ----

void TrialBook::tick(int64_t now, Effects& fx) {
  flush_progress();
  std::vector<int64_t> overdue;  // (conclude may erase from trials_)
  bool waiting = false;          // a deadline not yet reached
  for (auto& [id, t] : trials_) {
    if (t.state != proto::TRIAL_STATE_RUNNING || !t.recover_deadline_ms) continue;
    if (now > *t.recover_deadline_ms) overdue.push_back(id);
    else waiting = true;
  }
  recovering_ = waiting;
  for (int64_t id : overdue) {
    ActiveTrial& t = trials_.at(id);
    t.recover_deadline_ms.reset();
    // Claimed by fewer nodes than the gang has: the missing ones are gone, so the attempt
    // is lost (the claimed nodes are cancelled and keep their slots until they say so).
    if (static_cast<int>(t.run.size()) < t.nodes) {
      conclude(t, proto::TRIAL_OUTCOME_LOST, -1,
               fmt::format("{} of {} nodes claimed the attempt after the coordinator restarted", t.run.size(),
                           t.nodes), "", fx);
    }
  }
}

void TrialBook::schedule(int64_t now, Effects& fx) {
  // This runs after every batch of messages. With every slot taken (the common case under
  // load: a thousand busy workers, tens of thousands of pending trials) there is nothing to
  // decide, so the workers are looked at first, and the views and the trials only if one of
  // them can take something. When none can, step() skips this until something may have
  // freed a slot (schedule_due()): metric batches cannot.
  const bool any_free = workers_.any_free_slot(now, &cooldown_over_ms_);
  all_slots_busy_ = !any_free;
  if (!any_free) return;
  if (pending_.empty()) return;
  std::vector<SchedWorker> ws = workers_.sched_view(now);
  // A worker that may still run an attempt found running at start gets nothing new until it
  // claims the attempt or the grace ends: its slots are not known yet (an Assign of the
  // previous coordinator may still be on its way to it).
  // (Only in the grace period after a restart: the scan of every trial is skipped after it.)
  if (recovering_) {
    std::set<std::string> unsettled;
    for (const auto& [id, t] : trials_) {
      if (t.state != proto::TRIAL_STATE_RUNNING || !t.recover_deadline_ms) continue;
      bool claimed = false;
      for (const auto& n : t.run) claimed = claimed || n.worker_id == t.recover_worker;
      if (!claimed) unsettled.insert(t.recover_worker);
    }
    for (SchedWorker& w : ws) w.accepting = w.accepting && !unsettled.count(w.worker_id);
  }
  for (const Assignment& a : coordinator::schedule(pending_, ws, running_slots_)) {
    ActiveTrial& t = trials_.at(a.trial_id);
    t.attempt += 1;
    set_state(t, proto::TRIAL_STATE_RUNNING);
    t.assigned_ms = now;
    const bool resume = t.checkpoint_step >= 0;
    env_.store.start_attempt(t.trial_id, t.attempt, a.nodes[0].worker_id, resume);
    std::string where;
    for (const Placement& p : a.nodes) {
      t.run.push_back(NodeRun{p.worker_id, p.slots, p.node_rank, false, false});
      workers_.hold(p.worker_id, {t.trial_id, t.attempt}, p.slots, now);
      proto::Envelope env;
      auto* as = env.mutable_assign();
      as->set_trial_id(t.trial_id);
      as->set_attempt(t.attempt);
      as->set_sweep_id(t.sweep_id);
      as->set_config_json(t.config_json);
      as->set_run_dir(t.run_dir);
      as->set_resume(resume);
      for (int s : p.slots) as->add_slots(s);
      as->set_node_rank(p.node_rank);
      as->set_num_nodes(static_cast<int>(a.nodes.size()));
      fx.to(p.worker_id, env);
      where += (where.empty() ? "" : " + ") + p.worker_id + "[" + join_ints(p.slots) + "]";
    }
    store::add_event(env_.store.db(), "trial_assigned", where + (resume ? " (resume)" : ""), t.sweep_id,
                     t.trial_id, a.nodes[0].worker_id, t.attempt);
    spdlog::info("trial {} attempt {} -> {}{}", t.trial_id, t.attempt, where,
                 resume ? fmt::format(" (resume from step {})", t.checkpoint_step) : "");
  }
}

}  // namespace hylab::coordinator
