// The coordinator's bookkeeping of workers and trial attempts: registration, heartbeats and
// liveness, attempt start/metrics/finish, retries, cancellation, early stopping, scheduling.
// Every message is idempotent on (trial_id, attempt): a repeat or a stale attempt is
// acknowledged and otherwise ignored (or cancelled on the worker that still runs it).
#include <spdlog/spdlog.h>

#include <algorithm>

#include "common/check.h"
#include "common/metrics.h"
#include "coordinator/coordinator_impl.h"
#include "coordinator/scheduler.h"

namespace hylab::coordinator {
namespace {

std::string join_ints(const std::vector<int>& v) {
  std::string out;
  for (int x : v) out += (out.empty() ? "" : ",") + std::to_string(x);
  return out;
}

}  // namespace

// ---- workers ----

void Coordinator::Impl::on_hello(const proto::Hello& h, const std::string& user_id) {
  // A worker identity is bound to the key it first registered with (kept in the database, so
  // also across coordinator restarts): another key cannot take it over.
  std::string bound;
  if (auto known = workers.find(h.worker_id()); known != workers.end()) {
    bound = known->second.public_key;
  } else {
    auto q = store->db().prepare("SELECT public_key FROM workers WHERE worker_id = ?");
    q.bind(1, h.worker_id());
    if (q.step()) bound = q.text(0);
  }
  if (!bound.empty() && bound != user_id) {
    log_limit.warn("identity taken", now, fmt::format("refused Hello of worker {}: that worker_id is bound to key "
                                                      "{}, this peer has key {}", h.worker_id(), bound,
                                                      user_id.empty() ? "(none)" : user_id));
    return;
  }
  const bool known = workers.count(h.worker_id()) > 0;
  WorkerInfo& w = workers[h.worker_id()];
  w.worker_id = h.worker_id();
  w.host = h.host();
  w.slots = h.slots();
  w.gpus.assign(h.gpus().begin(), h.gpus().end());
  w.public_key = user_id;
  w.work_dir = h.work_dir();
  // Drained stays drained for the same process (a late or repeated Hello of it must not undo
  // the drain, or it is sent trials it refuses, forever); a restarted worker starts afresh.
  w.draining = h.draining() || (known && w.draining && w.pid == h.pid());
  w.pid = h.pid();
  w.last_heard_ms = now;
  store::WorkerRow row;
  row.worker_id = w.worker_id;
  row.host = w.host;
  row.gpus = h.gpus_size();
  nlohmann::json names = nlohmann::json::array();
  for (const auto& g : h.gpus()) {
    names.push_back(g.name());
    row.gpu_mem_gib = g.mem_gib();
  }
  row.gpu_names = names.dump();
  row.mem_gib = h.mem_gib();
  row.cpus = h.cpus();
  row.slots = h.slots();
  row.public_key = user_id;
  row.state = w.draining ? proto::WORKER_STATE_DRAINING : proto::WORKER_STATE_ALIVE;
  store->upsert_worker(row);
  store::add_event(store->db(), known ? "worker_reregistered" : "worker_registered",
                   fmt::format("{} slots, {} GPUs, {} held trials", h.slots(), h.gpus_size(), h.held_size()),
                   0, 0, w.worker_id);
  spdlog::info("worker {} registered: host {}, {} slots ({} GPUs), holds {} trials{}", w.worker_id,
               w.host, w.slots, h.gpus_size(), h.held_size(), user_id.empty() ? "" : ", key " + user_id);
  proto::Envelope env;
  env.mutable_welcome()->set_heartbeat_ms(opt.heartbeat_ms);
  env.mutable_welcome()->set_coordinator_id(coordinator_id);
  send(w.worker_id, env);
  reconcile(w, h.held(), /*full_report=*/true);
}

void Coordinator::Impl::on_heartbeat(WorkerInfo& w, const proto::Heartbeat& hb) {
  reconcile(w, hb.held(), /*full_report=*/true);
}

// Compares what the worker holds with what this coordinator counts on it.
void Coordinator::Impl::reconcile(WorkerInfo& w,
                                  const google::protobuf::RepeatedPtrField<proto::HeldTrial>& held,
                                  bool full_report) {
  w.reported.clear();
  std::set<AttemptKey> listed;
  for (const auto& h : held) {
    const AttemptKey key{h.trial_id(), h.attempt()};
    listed.insert(key);
    // An exited attempt whose Finished was already taken (the worker has not seen the ack
    // yet): its trainer is gone and its slots are free; counting them busy until the next
    // heartbeat delayed the next Assign by up to a heartbeat interval.
    if (h.finished() && !w.assigned.count(key)) {
      auto cur = trials.find(h.trial_id());
      const bool current = cur != trials.end() && cur->second.attempt == h.attempt() && cur->second.state == proto::TRIAL_STATE_RUNNING;
      if (!current) continue;  // (a current one is claimed below: a recovery after a restart)
    }
    w.reported[key].assign(h.slots().begin(), h.slots().end());
    if (w.assigned.count(key)) {
      auto it = trials.find(h.trial_id());
      if (it != trials.end() && it->second.attempt == h.attempt() && it->second.state == proto::TRIAL_STATE_RUNNING) {
        for (auto& n : it->second.run) {
          if (n.worker_id == w.worker_id) n.confirmed = true;
        }
      } else if (!h.finished()) {
        // Still running an attempt this coordinator already ended: its Cancel was lost (a
        // dropped connection). Ask again, or its slots stay taken forever.
        send_cancel(w.worker_id, h.trial_id(), h.attempt(), "stale attempt: the coordinator no longer runs it");
      }
      continue;
    }
    auto it = trials.find(h.trial_id());
    if (it != trials.end() && it->second.state == proto::TRIAL_STATE_RUNNING && it->second.attempt == h.attempt() &&
        it->second.recover_deadline_ms) {
      // A running attempt found at start, claimed by its worker: it carries on.
      ActiveTrial& t = it->second;
      std::vector<int> slots(h.slots().begin(), h.slots().end());
      // Its slots may have been given to another attempt meanwhile (a gang node's worker is
      // not known until it claims). The worker runs the recovered attempt there, so it has
      // refused (or will refuse) an unstarted one: run that elsewhere. A started one wins.
      std::vector<AttemptKey> unstarted;
      bool started_conflict = false;
      for (const auto& [other, held] : w.assigned) {
        bool overlap = false;
        for (int s : held.slots) overlap = overlap || std::find(slots.begin(), slots.end(), s) != slots.end();
        if (!overlap) continue;
        auto o = trials.find(other.first);
        bool confirmed = false;
        if (o != trials.end() && o->second.attempt == other.second) {
          for (const auto& n : o->second.run) confirmed = confirmed || (n.worker_id == w.worker_id && n.confirmed);
        }
        if (confirmed) started_conflict = true;
        else unstarted.push_back(other);
      }
      if (started_conflict) {
        send_cancel(w.worker_id, h.trial_id(), h.attempt(), "stale attempt: its slots run another attempt");
        w.assigned[key] = Held{slots, now};
        continue;
      }
      for (const auto& other : unstarted) {
        auto o = trials.find(other.first);
        if (o != trials.end() && o->second.attempt == other.second && o->second.state == proto::TRIAL_STATE_RUNNING) {
          requeue_unstarted(o->second, "its slots on " + w.worker_id + " run a recovered attempt");
        } else {
          w.assigned.erase(other);
        }
      }
      w.assigned[key] = Held{slots, now};
      bool have = false;
      for (auto& n : t.run) have = have || n.worker_id == w.worker_id;
      // The node's real rank (older workers do not say: their order of arrival).
      const int rank = h.has_node_rank() ? h.node_rank() : static_cast<int>(t.run.size());
      if (!have) {
        t.run.push_back(NodeRun{w.worker_id, slots, rank, true, false});
        std::sort(t.run.begin(), t.run.end(),
                  [](const NodeRun& a, const NodeRun& b) { return a.node_rank < b.node_rank; });
      }
      if (static_cast<int>(t.run.size()) >= t.nodes) t.recover_deadline_ms.reset();
      spdlog::info("trial {} attempt {} recovered on worker {} (slots {})", t.trial_id, t.attempt,
                   w.worker_id, join_ints(slots));
      store::add_event(store->db(), "trial_recovered", "", t.sweep_id, t.trial_id, w.worker_id, t.attempt);
      continue;
    }
    if (h.finished()) continue;  // its Finished message will come and be acknowledged
    // Stale: a cancelled/stopped/lost attempt the worker still runs.
    send_cancel(w.worker_id, h.trial_id(), h.attempt(), "stale attempt: the coordinator no longer runs it");
    w.assigned[key] = Held{std::vector<int>(h.slots().begin(), h.slots().end()), now};
  }
  if (!full_report) return;
  // Attempts assigned here that the worker does not hold (an Assign lost on the way, or a
  // worker that restarted): after a grace for messages in flight, they are lost.
  std::vector<AttemptKey> missing;
  for (const auto& [key, h] : w.assigned) {
    if (!listed.count(key) && now - h.since_ms > 2 * opt.heartbeat_ms) missing.push_back(key);
  }
  for (const auto& key : missing) {
    w.assigned.erase(key);
    auto it = trials.find(key.first);
    if (it == trials.end() || it->second.attempt != key.second || it->second.state != proto::TRIAL_STATE_RUNNING) continue;
    ActiveTrial& t = it->second;
    bool confirmed = false;
    for (const auto& n : t.run) confirmed = confirmed || (n.worker_id == w.worker_id && n.confirmed);
    const std::string why = "worker " + w.worker_id + " does not hold the attempt";
    if (confirmed) {
      conclude_attempt(t, proto::TRIAL_OUTCOME_LOST, -1, why, "");
    } else {
      requeue_unstarted(t, why + " (never started)");
    }
  }
}

void Coordinator::Impl::lose_worker(const std::string& worker_id, const std::string& why) {
  auto it = workers.find(worker_id);
  if (it == workers.end()) return;
  spdlog::warn("worker {} lost: {}", worker_id, why);
  store->set_worker_state(worker_id, proto::WORKER_STATE_LOST);
  store::add_event(store->db(), "worker_lost", why, 0, 0, worker_id);
  const auto assigned = it->second.assigned;
  workers.erase(it);
  for (const auto& [key, h] : assigned) {
    auto t = trials.find(key.first);
    if (t == trials.end() || t->second.attempt != key.second || t->second.state != proto::TRIAL_STATE_RUNNING) continue;
    bool confirmed = false;
    for (const auto& n : t->second.run) confirmed = confirmed || (n.worker_id == worker_id && n.confirmed);
    if (confirmed) {
      conclude_attempt(t->second, proto::TRIAL_OUTCOME_LOST, -1, "worker " + worker_id + " lost: " + why, "");
    } else {
      requeue_unstarted(t->second, "worker " + worker_id + " lost before the attempt started");
    }
  }
}

void Coordinator::Impl::send_cancel(const std::string& worker_id, int64_t trial_id, int64_t attempt,
                                    const std::string& reason) {
  proto::Envelope env;
  auto* c = env.mutable_cancel();
  c->set_trial_id(trial_id);
  c->set_attempt(attempt);
  c->set_reason(reason);
  send(worker_id, env);
}

void Coordinator::Impl::periodic() {
  // Heartbeats to every worker; liveness of every worker.
  std::vector<std::pair<std::string, std::string>> lost;
  std::vector<std::string> drained;
  for (auto& [id, w] : workers) {
    if (liveness.expired(w.last_heard_ms, now)) {
      // A drained worker that went quiet holding nothing left as planned (exit_when_idle).
      if (w.draining && w.assigned.empty() && w.reported.empty()) {
        drained.push_back(id);
      } else {
        lost.push_back({id, fmt::format("no message for {} ms", now - w.last_heard_ms)});
      }
      continue;
    }
    proto::Envelope hb;
    hb.mutable_heartbeat();
    send(id, hb);
    if (w.draining) {  // repeated: a Drain lost on the way would leave it serving nothing forever
      proto::Envelope d;
      d.mutable_drain()->set_exit_when_idle(true);
      send(id, d);
    }
  }
  for (const auto& [id, why] : lost) lose_worker(id, why);
  for (const auto& id : drained) {
    spdlog::info("worker {} drained and gone", id);
    store->set_worker_state(id, proto::WORKER_STATE_DRAINED);
    store::add_event(store->db(), "worker_drained", "", 0, 0, id);
    workers.erase(id);
  }
  // Unknown peers we asked to register: forget them after a while (memory per peer id).
  for (auto it = reregister_asked.begin(); it != reregister_asked.end();) {
    it = now - it->second > 10 * opt.heartbeat_ms ? reregister_asked.erase(it) : std::next(it);
  }
  if (now >= next_expiry_ms) {
    next_expiry_ms = now + 60'000;
    expire_workers();
  }
  // Attempts found running at start that no worker claimed in time.
  std::vector<int64_t> overdue;  // (conclude_attempt may erase from trials)
  for (auto& [id, t] : trials) {
    if (t.state == proto::TRIAL_STATE_RUNNING && t.recover_deadline_ms && now > *t.recover_deadline_ms) overdue.push_back(id);
  }
  for (int64_t id : overdue) {
    ActiveTrial& t = trials.at(id);
    {
      t.recover_deadline_ms.reset();
      // Claimed by fewer nodes than the gang has: the missing ones are gone, so the attempt
      // is lost (the claimed nodes are cancelled and keep their slots until they say so).
      if (static_cast<int>(t.run.size()) < t.nodes) {
        conclude_attempt(t, proto::TRIAL_OUTCOME_LOST, -1,
                         fmt::format("{} of {} nodes claimed the attempt after the coordinator restarted",
                                     t.run.size(), t.nodes), "");
      }
    }
  }
}

// Deletes the rows of workers lost or drained longer than worker_expiry_s ago.
void Coordinator::Impl::expire_workers() {
  auto del = store->db().prepare("DELETE FROM workers WHERE state IN (?, ?) AND last_seen < ?");
  del.bind(1, to_string(proto::WORKER_STATE_LOST)).bind(2, to_string(proto::WORKER_STATE_DRAINED));
  del.bind(3, unix_time_now() - static_cast<double>(opt.worker_expiry_s));
  del.run();
  const int n = store->db().changes();
  if (n > 0) spdlog::info("forgot {} workers lost or drained more than {} s ago", n, opt.worker_expiry_s);
}

// ---- attempts ----

// Whether `w` may report on (trial_id, attempt): it was assigned the attempt (or claimed it
// after a restart), runs a node of it, or the database names it as the attempt's worker.
bool Coordinator::Impl::reports_on(const WorkerInfo& w, int64_t trial_id, int64_t attempt) {
  if (w.assigned.count({trial_id, attempt}) || w.reported.count({trial_id, attempt})) return true;
  if (auto it = trials.find(trial_id); it != trials.end() && it->second.attempt == attempt) {
    for (const auto& n : it->second.run) {
      if (n.worker_id == w.worker_id) return true;
    }
  }
  auto& q = store->db().cached("SELECT worker_id FROM trial_attempts WHERE trial_id = ? AND attempt = ?");
  q.bind(1, trial_id).bind(2, attempt);
  const bool named = q.step() && q.text(0) == w.worker_id;
  q.reset();
  return named;
}

void Coordinator::Impl::on_started(WorkerInfo& w, const proto::Started& s) {
  auto it = trials.find(s.trial_id());
  if (it == trials.end() || it->second.attempt != s.attempt() || it->second.state != proto::TRIAL_STATE_RUNNING) {
    if (!w.assigned.count({s.trial_id(), s.attempt()})) {
      send_cancel(w.worker_id, s.trial_id(), s.attempt(), "stale attempt");
    }
    return;
  }
  for (auto& n : it->second.run) {
    if (n.worker_id == w.worker_id) n.confirmed = true;
  }
  store::add_event(store->db(), "trial_started", fmt::format("pid {} in {}", s.pid(), s.run_dir()),
                   it->second.sweep_id, s.trial_id(), w.worker_id, s.attempt());
  // Where the attempt runs, for `hylab logs` and results' run_dir (node 0's for multi-node).
  store->db()
      .cached("UPDATE trial_attempts SET run_dir = ? WHERE trial_id = ? AND attempt = ? AND worker_id = ?")
      .bind(1, s.run_dir()).bind(2, s.trial_id()).bind(3, s.attempt()).bind(4, w.worker_id)
      .run();
  spdlog::info("trial {} attempt {} started on {} (pid {})", s.trial_id(), s.attempt(), w.worker_id, s.pid());
}

void Coordinator::Impl::on_metrics(WorkerInfo& w, const proto::MetricsBatch& b) {
  proto::Envelope ack;
  ack.mutable_metrics_ack()->set_trial_id(b.trial_id());
  ack.mutable_metrics_ack()->set_attempt(b.attempt());
  ack.mutable_metrics_ack()->set_seq(b.seq());
  // Accept the trial's current attempt only, also after it became final (late records of a
  // cancelled attempt); records of older attempts would overwrite newer values.
  auto it = trials.find(b.trial_id());
  int64_t current = 0;
  int64_t sweep_id = 0;
  if (it != trials.end()) {
    current = it->second.attempt;
    sweep_id = it->second.sweep_id;
  } else {
    try {
      const auto row = store->trial(b.trial_id());
      current = row.attempt;
      sweep_id = row.sweep_id;
    } catch (const Error&) {
      current = -1;
    }
  }
  if (current != b.attempt()) {
    log_limit.warn("stale metrics", now, fmt::format("metrics of trial {} attempt {} from {} dropped: the current "
                                                     "attempt is {}", b.trial_id(), b.attempt(), w.worker_id, current));
    send(w.worker_id, ack);
    return;
  }
  if (!reports_on(w, b.trial_id(), b.attempt())) {
    log_limit.warn("not owner", now, fmt::format("metrics of trial {} attempt {} from {} refused: that worker does "
                                                 "not hold the attempt", b.trial_id(), b.attempt(), w.worker_id));
    send(w.worker_id, ack);  // nothing stored; acked so that a confused worker stops resending
    return;
  }
  // A retransmitted batch (seq <= last_seq) is stored again: its rows are keyed by
  // (trial_id, name, step) and carry the same values, so nothing changes.
  std::map<int64_t, std::vector<MetricPoint>> by_attempt;
  for (const auto& m : b.metrics()) {
    by_attempt[m.attempt() > 0 ? m.attempt() : b.attempt()].push_back(
        MetricPoint{m.step(), m.name(), m.value(), m.wall_time()});
  }
  for (const auto& [attempt, points] : by_attempt) store::put_metrics(store->db(), b.trial_id(), attempt, points);
  if (b.checkpoint_step() >= 0) {
    store->set_checkpoint_step(b.trial_id(), b.checkpoint_step());
    if (it != trials.end()) it->second.checkpoint_step = std::max(it->second.checkpoint_step, b.checkpoint_step());
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
    store::put_summary(store->db(), b.trial_id(), r);
  }
  store->set_last_seq(b.trial_id(), b.attempt(), b.seq());
  auto sw = sweeps.find(sweep_id);
  if (sw != sweeps.end() && !sw->second.early_stop.type().empty()) {
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
  send(w.worker_id, ack);
}

void Coordinator::Impl::on_finished(WorkerInfo& w, const proto::Finished& f) {
  proto::Envelope ack;
  ack.mutable_finished_ack()->set_trial_id(f.trial_id());
  ack.mutable_finished_ack()->set_attempt(f.attempt());
  const AttemptKey key{f.trial_id(), f.attempt()};
  if (!reports_on(w, f.trial_id(), f.attempt())) {
    log_limit.warn("not owner", now, fmt::format("finished of trial {} attempt {} from {} refused: that worker does "
                                                 "not hold the attempt", f.trial_id(), f.attempt(), w.worker_id));
    send(w.worker_id, ack);  // nothing recorded; acked so that a confused worker lets it go
    return;
  }
  w.assigned.erase(key);
  w.reported.erase(key);
  auto it = trials.find(f.trial_id());
  const bool current = it != trials.end() && it->second.attempt == f.attempt() && it->second.state == proto::TRIAL_STATE_RUNNING;
  if (!current) {
    // A repeat, or the end of an attempt this coordinator already gave up (cancelled,
    // stopped, lost): record its outcome if the attempt row is still open, change nothing else.
    store->finish_attempt(f.trial_id(), f.attempt(), attempt_state(f.outcome()), f.reason(),
                          f.exit_code(), f.log_tail());
    send(w.worker_id, ack);
    return;
  }
  ActiveTrial& t = it->second;
  NodeRun* node = nullptr;
  for (auto& n : t.run) {
    if (n.worker_id == w.worker_id) node = &n;
  }
  if (node == nullptr) {
    log_limit.warn("not owner", now, fmt::format("finished for trial {} attempt {} from {}, which does not run "
                                                 "it: ignored", f.trial_id(), f.attempt(), w.worker_id));
    send(w.worker_id, ack);
    return;
  }
  node->finished = true;
  // Refused (draining, a busy slot) or preempted: give that worker a heartbeat's pause,
  // so a worker whose state this coordinator got wrong is not sent the next one at once, for
  // ever (a livelock of thousands of attempts in the simulator).
  if (f.outcome() == proto::TRIAL_OUTCOME_PREEMPTED) w.cooldown_until_ms = now + opt.heartbeat_ms;
  // Multi-node: rank 0 decides a success; any node's failure ends the attempt everywhere.
  if (f.outcome() == proto::TRIAL_OUTCOME_SUCCEEDED && node->node_rank != 0) {
    send(w.worker_id, ack);
    return;
  }
  spdlog::info("trial {} attempt {} on {}: {} (exit {}){}", t.trial_id, t.attempt, w.worker_id,
               to_string(attempt_state(f.outcome())), f.exit_code(), f.reason().empty() ? "" : ": " + f.reason());
  // Cancelling a trial for good (cancel_sweep, early stop) ends it here at once, so a
  // cancelled outcome of the *current* attempt is a node this coordinator cancelled as stale
  // (or someone else stopped): an infrastructure loss, retried, never the trial's end.
  const proto::TrialOutcome outcome =
      f.outcome() == proto::TRIAL_OUTCOME_CANCELLED ? proto::TRIAL_OUTCOME_LOST : f.outcome();
  conclude_attempt(t, outcome, f.exit_code(), f.reason(), f.log_tail());
  send(w.worker_id, ack);
}

void Coordinator::Impl::on_rendezvous(WorkerInfo& w, const proto::Rendezvous& r) {
  auto it = trials.find(r.trial_id());
  bool node0 = false;
  if (it != trials.end() && it->second.attempt == r.attempt()) {
    for (const auto& n : it->second.run) node0 = node0 || (n.node_rank == 0 && n.worker_id == w.worker_id);
  }
  if (!node0) {
    log_limit.warn("stale rendezvous", now, fmt::format("rendezvous for trial {} attempt {} from {} dropped: not "
                                                        "node 0 of the current attempt", r.trial_id(), r.attempt(),
                                                        w.worker_id));
    return;
  }
  it->second.rendezvous = r.payload();
  for (const auto& n : it->second.run) {
    if (n.node_rank == 0) continue;
    proto::Envelope env;
    *env.mutable_rendezvous() = r;
    send(n.worker_id, env);
  }
}

void Coordinator::Impl::conclude_attempt(ActiveTrial& t, proto::TrialOutcome outcome, int exit_code,
                                         const std::string& reason, const std::string& log_tail) {
  const int max_retries = sweeps.count(t.sweep_id) ? sweeps[t.sweep_id].row.max_retries : 0;
  // A trainer killed by SIGKILL did not fail by itself (the OOM killer, an operator, a node
  // going away): an infrastructure loss.
  if (outcome == proto::TRIAL_OUTCOME_FAILED && exit_code == -9) outcome = proto::TRIAL_OUTCOME_LOST;
  const AttemptDecision d = decide_after_attempt(outcome, t.failures, max_retries, t.losses);
  store->finish_attempt(t.trial_id, t.attempt, attempt_state(outcome), reason, exit_code, log_tail);
  // The other nodes of a multi-node attempt stop too.
  for (const auto& n : t.run) {
    if (!n.finished && workers.count(n.worker_id)) {
      send_cancel(n.worker_id, t.trial_id, t.attempt, "another node of the attempt ended");
    }
  }
  t.failures += d.count_failure ? 1 : 0;
  t.losses += d.count_loss ? 1 : 0;
  t.run.clear();
  t.recover_deadline_ms.reset();
  t.rendezvous.clear();
  const std::string ended = to_string(attempt_state(outcome));
  const std::string why = reason.empty() ? ended : reason;
  store::add_event(store->db(), "attempt_finished", ended + ": " + why, t.sweep_id,
                   t.trial_id, "", t.attempt);
  if (d.retry) {
    t.state = proto::TRIAL_STATE_PENDING;
    store->set_trial_state(t.trial_id, proto::TRIAL_STATE_PENDING, t.failures,
                           d.count_loss
                               ? fmt::format("attempt {} {}; retrying ({} losses of {} allowed)",
                                             t.attempt, why, t.losses, kMaxLosses)
                               : fmt::format("attempt {} {}; retrying ({} failures of {} allowed)",
                                             t.attempt, why, t.failures, max_retries));
    spdlog::info("trial {} will run again ({} failures, max_retries {})", t.trial_id, t.failures, max_retries);
    return;
  }
  const int64_t sweep_id = t.sweep_id;
  store->set_trial_state(t.trial_id, d.trial_state, t.failures, d.trial_state == proto::TRIAL_STATE_SUCCEEDED ? "" : why);
  trials.erase(t.trial_id);  // t is gone from here on
  finish_sweep_if_done(sweep_id);
}

void Coordinator::Impl::requeue_unstarted(ActiveTrial& t, const std::string& reason) {
  store->finish_attempt(t.trial_id, t.attempt, proto::ATTEMPT_STATE_ABANDONED, reason, -1, "");
  spdlog::warn("trial {} attempt {} never started ({}): pending again", t.trial_id, t.attempt, reason);
  for (const auto& n : t.run) {
    auto w = workers.find(n.worker_id);
    if (w != workers.end()) {
      w->second.assigned.erase({t.trial_id, t.attempt});
      send_cancel(n.worker_id, t.trial_id, t.attempt, "attempt abandoned");
    }
  }
  t.run.clear();
  t.state = proto::TRIAL_STATE_PENDING;
  store->set_trial_state(t.trial_id, proto::TRIAL_STATE_PENDING, t.failures, reason);
}

void Coordinator::Impl::stop_trial(int64_t trial_id, proto::TrialState state, const std::string& reason) {
  auto it = trials.find(trial_id);
  if (it == trials.end()) return;
  ActiveTrial& t = it->second;
  if (t.state == proto::TRIAL_STATE_RUNNING) {
    for (const auto& n : t.run) {
      if (workers.count(n.worker_id)) send_cancel(n.worker_id, t.trial_id, t.attempt, reason);
    }
    store->finish_attempt(t.trial_id, t.attempt, attempt_state(state), reason, -1, "");
  }
  store->set_trial_state(t.trial_id, state, t.failures, reason);
  store::add_event(store->db(), "trial_" + to_string(state), reason, t.sweep_id, t.trial_id, "", t.attempt);
  spdlog::info("trial {} {}: {}", t.trial_id, to_string(state), reason);
  const int64_t sweep_id = t.sweep_id;
  trials.erase(it);
  finish_sweep_if_done(sweep_id);
}

void Coordinator::Impl::finish_sweep_if_done(int64_t sweep_id) {
  auto sw = sweeps.find(sweep_id);
  if (sw == sweeps.end() || sw->second.row.state != proto::SWEEP_STATE_RUNNING) return;
  if (sw->second.proposes()) return;  // a tpe sweep with budget left (search_book.cpp)
  int64_t& hint = sw->second.active_hint;
  if (auto it = trials.find(hint); it != trials.end() && it->second.sweep_id == sweep_id) return;
  for (auto it = trials.rbegin(); it != trials.rend(); ++it) {
    if (it->second.sweep_id == sweep_id) {
      hint = it->first;
      return;
    }
  }
  store->set_sweep_state(sweep_id, proto::SWEEP_STATE_COMPLETED);
  spdlog::info("sweep {} ({}) completed", sweep_id, sw->second.row.name);
  sweeps.erase(sw);
}

void Coordinator::Impl::check_early_stop() {
  std::vector<std::pair<int64_t, StopDecision>> stops;
  for (auto& [sweep_id, s] : sweeps) {
    if (!s.series_dirty) continue;
    s.series_dirty = false;
    std::vector<MetricSeries> all;
    for (const auto& [trial_id, pts] : s.series) {
      auto t = trials.find(trial_id);
      MetricSeries m{trial_id, t != trials.end() && t->second.state == proto::TRIAL_STATE_RUNNING, pts};
      if (auto meta = s.trial_meta.find(trial_id); meta != s.trial_meta.end()) {
        m.trial_index = meta->second.first;
        m.tokens_per_step = meta->second.second;
      }
      all.push_back(std::move(m));
    }
    for (auto& d : early_stop(s.early_stop, s.minimize, all)) stops.push_back({sweep_id, d});
  }
  for (const auto& [sweep_id, d] : stops) stop_trial(d.trial_id, proto::TRIAL_STATE_STOPPED, d.reason);
}

void Coordinator::Impl::schedule() {
  // This runs after every batch of messages. With every slot taken (the common case under
  // load: a thousand busy workers, tens of thousands of pending trials) there is nothing to
  // decide, so the workers are looked at first, in O(workers) without allocating (building
  // every worker's view here was 25% of the coordinator's CPU at 600 busy workers), and the
  // views and the trials only if one of them can take something. When none can, step()
  // skips this until something may have freed a slot (all_slots_busy): metric batches cannot.
  auto accepting = [&](const WorkerInfo& w) { return !w.draining && now >= w.cooldown_until_ms; };
  bool any_free = false;
  int64_t cooldown_over = INT64_MAX;
  for (const auto& [id, w] : workers) {
    if (w.draining || !w.has_free_slot()) continue;
    if (accepting(w)) {
      any_free = true;
      break;
    }
    cooldown_over = std::min(cooldown_over, w.cooldown_until_ms);
  }
  all_slots_busy = !any_free;
  cooldown_over_ms = cooldown_over;
  if (!any_free) return;
  std::vector<SchedTrial> pending;
  std::map<int64_t, int> running;
  for (const auto& [id, t] : trials) {
    if (t.state == proto::TRIAL_STATE_PENDING) {
      pending.push_back({t.trial_id, t.sweep_id, t.trial_index, t.slots, t.nodes, t.priority});
    } else {
      running[t.sweep_id] += t.slots;
    }
  }
  if (pending.empty()) return;
  // Every worker, busy ones too (a blocked gang may reserve one), but the list of free slots
  // only of those that have one.
  std::vector<SchedWorker> ws;
  ws.reserve(workers.size());
  for (const auto& [id, w] : workers) {
    ws.push_back({id, w.slots, w.has_free_slot() ? w.free_slots() : std::vector<int>{}, accepting(w)});
  }
  // A worker that may still run an attempt found running at start gets nothing new until it
  // claims the attempt or the grace ends: its slots are not known yet (an Assign of the
  // previous coordinator may still be on its way to it).
  std::set<std::string> unsettled;
  for (const auto& [id, t] : trials) {
    if (t.state != proto::TRIAL_STATE_RUNNING || !t.recover_deadline_ms) continue;
    bool claimed = false;
    for (const auto& n : t.run) claimed = claimed || n.worker_id == t.recover_worker;
    if (!claimed) unsettled.insert(t.recover_worker);
  }
  for (SchedWorker& w : ws) w.accepting = w.accepting && !unsettled.count(w.worker_id);
  for (const Assignment& a : coordinator::schedule(pending, ws, running)) {
    ActiveTrial& t = trials.at(a.trial_id);
    t.attempt += 1;
    t.state = proto::TRIAL_STATE_RUNNING;
    t.assigned_ms = now;
    const bool resume = t.checkpoint_step >= 0;
    store->start_attempt(t.trial_id, t.attempt, a.nodes[0].worker_id, resume);
    std::string where;
    for (const Placement& p : a.nodes) {
      t.run.push_back(NodeRun{p.worker_id, p.slots, p.node_rank, false, false});
      workers[p.worker_id].assigned[{t.trial_id, t.attempt}] = Held{p.slots, now};
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
      send(p.worker_id, env);
      where += (where.empty() ? "" : " + ") + p.worker_id + "[" + join_ints(p.slots) + "]";
    }
    store::add_event(store->db(), "trial_assigned", where + (resume ? " (resume)" : ""), t.sweep_id,
                     t.trial_id, a.nodes[0].worker_id, t.attempt);
    spdlog::info("trial {} attempt {} -> {}{}", t.trial_id, t.attempt, where,
                 resume ? fmt::format(" (resume from step {})", t.checkpoint_step) : "");
  }
}

}  // namespace hylab::coordinator
