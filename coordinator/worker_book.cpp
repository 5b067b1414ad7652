// The book of workers (worker_book.h): registration, heartbeats and liveness, reconcile of
// the attempts a worker says it holds, drain, and the rows of dead workers.
#include "coordinator/worker_book.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <optional>
#include <set>

#include "common/check.h"
#include "common/metrics.h"
#include "coordinator/trial_book.h"
#include "wire/wire.h"

namespace hylab::coordinator {

std::vector<int> WorkerInfo::free_slots() const {
  std::set<int> busy;
  for (const auto& [k, s] : reported) busy.insert(s.begin(), s.end());
  for (const auto& [k, h] : assigned) busy.insert(h.slots.begin(), h.slots.end());
  std::vector<int> out;
  for (int i = 0; i < slots; ++i) {
    if (!busy.count(i)) out.push_back(i);
  }
  return out;
}

// Asked for every worker after every batch of messages (schedule()): no allocation.
bool WorkerInfo::has_free_slot() const {
  if (slots <= 0) return false;
  if (slots > 64) return !free_slots().empty();
  uint64_t busy = 0;
  auto mark = [&](const std::vector<int>& taken) {
    for (int s : taken) {
      if (s >= 0 && s < slots) busy |= uint64_t{1} << s;
    }
  };
  for (const auto& [k, s] : reported) mark(s);
  for (const auto& [k, h] : assigned) mark(h.slots);
  const uint64_t all = slots == 64 ? ~uint64_t{0} : (uint64_t{1} << slots) - 1;
  return busy != all;
}

WorkerBook::WorkerBook(BookEnv env, const std::string& coordinator_id, TrialBook& trials)
    : env_(env), coordinator_id_(coordinator_id), trials_(trials) {
  liveness_.interval_ms = env_.opt.heartbeat_ms;
  liveness_.misses = env_.opt.liveness;
}

// ---- messages ----

void WorkerBook::on_hello(const proto::Hello& h, const std::string& user_id, int64_t now, Effects& fx) {
  // A worker identity is bound to the key it first registered with (kept in the database, so
  // also across coordinator restarts): another key cannot take it over.
  std::string bound;
  if (auto known = workers_.find(h.worker_id()); known != workers_.end()) {
    bound = known->second.public_key;
  } else {
    auto& q = env_.store.db().cached("SELECT public_key FROM workers WHERE worker_id = ?");
    q.bind(1, h.worker_id());
    if (q.step()) bound = q.text(0);
    q.reset();
  }
  if (!bound.empty() && bound != user_id) {
    env_.log_limit.warn("identity taken", now, fmt::format("refused Hello of worker {}: that worker_id is bound to key "
                                                           "{}, this peer has key {}", h.worker_id(), bound,
                                                           user_id.empty() ? "(none)" : user_id));
    return;
  }
  const bool known = workers_.count(h.worker_id()) > 0;
  WorkerInfo& w = workers_[h.worker_id()];
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
  env_.store.upsert_worker(row);
  store::add_event(env_.store.db(), known ? "worker_reregistered" : "worker_registered",
                   fmt::format("{} slots, {} GPUs, {} held trials", h.slots(), h.gpus_size(), h.held_size()),
                   0, 0, w.worker_id);
  spdlog::info("worker {} registered: host {}, {} slots ({} GPUs), holds {} trials{}", w.worker_id,
               w.host, w.slots, h.gpus_size(), h.held_size(), user_id.empty() ? "" : ", key " + user_id);
  proto::Envelope env;
  env.mutable_welcome()->set_heartbeat_ms(env_.opt.heartbeat_ms);
  env.mutable_welcome()->set_coordinator_id(coordinator_id_);
  fx.to(w.worker_id, env);
  reconcile(w, h.held(), now, fx);
}

bool WorkerBook::admit(const proto::Envelope& env, const std::string& routing_id, const std::string& user_id,
                       int64_t now, Effects& fx) {
  auto it = workers_.find(env.sender());
  if (it == workers_.end()) {
    // Not registered with this coordinator (e.g. it restarted): ask for a Hello, drop this.
    auto [asked, fresh] = reregister_asked_.try_emplace(env.sender(), now - env_.opt.heartbeat_ms);
    if (now - asked->second >= env_.opt.heartbeat_ms) {
      asked->second = now;
      proto::Envelope r;
      r.set_reregister(true);
      fx.to(routing_id, r);
      env_.log_limit.warn("unregistered peer", now, fmt::format("{} from unregistered worker {}: asked it to register",
                                                                wire::kind_name(env), env.sender()));
    }
    return false;
  }
  WorkerInfo& w = it->second;
  // The identity belongs to the key it registered with: another key cannot speak for it.
  if (w.public_key != user_id) {
    env_.log_limit.warn("wrong key", now, fmt::format("dropped a {} message from {}: sent with another key than the "
                                                      "worker registered with", wire::kind_name(env), w.worker_id));
    return false;
  }
  w.last_heard_ms = now;
  return true;
}

void WorkerBook::on_heartbeat(const std::string& worker_id, const proto::Heartbeat& hb, int64_t now, Effects& fx) {
  reconcile(workers_.at(worker_id), hb.held(), now, fx);
}

void WorkerBook::reconcile(WorkerInfo& w, const google::protobuf::RepeatedPtrField<proto::HeldTrial>& held,
                           int64_t now, Effects& fx) {
  w.reported.clear();
  std::set<AttemptKey> listed;
  for (const auto& h : held) {
    const AttemptKey key{h.trial_id(), h.attempt()};
    listed.insert(key);
    // An exited attempt whose Finished was already taken (the worker has not seen the ack
    // yet): its trainer is gone and its slots are free; counting them busy until the next
    // heartbeat delayed the next Assign by up to a heartbeat interval.
    if (h.finished() && !w.assigned.count(key)) {
      if (!trials_.is_current(key)) continue;  // (a current one is claimed below: a recovery after a restart)
    }
    w.reported[key].assign(h.slots().begin(), h.slots().end());
    if (w.assigned.count(key)) {
      if (!trials_.confirm(key, w.worker_id) && !h.finished()) {
        // Still running an attempt this coordinator already ended: its Cancel was lost (a
        // dropped connection). Ask again, or its slots stay taken forever.
        fx.cancel(w.worker_id, h.trial_id(), h.attempt(), "stale attempt: the coordinator no longer runs it");
      }
      continue;
    }
    if (trials_.recovering(key)) {
      // A running attempt found at start, claimed by its worker: it carries on.
      std::vector<int> slots(h.slots().begin(), h.slots().end());
      // Its slots may have been given to another attempt meanwhile (a gang node's worker is
      // not known until it claims). The worker runs the recovered attempt there, so it has
      // refused (or will refuse) an unstarted one: run that elsewhere. A started one wins.
      std::vector<AttemptKey> unstarted;
      bool started_conflict = false;
      for (const auto& [other, taken] : w.assigned) {
        bool overlap = false;
        for (int s : taken.slots) overlap = overlap || std::find(slots.begin(), slots.end(), s) != slots.end();
        if (!overlap) continue;
        if (trials_.node_confirmed(other, w.worker_id)) started_conflict = true;
        else unstarted.push_back(other);
      }
      if (started_conflict) {
        fx.cancel(w.worker_id, h.trial_id(), h.attempt(), "stale attempt: its slots run another attempt");
        w.assigned[key] = Held{slots, now};
        continue;
      }
      for (const auto& other : unstarted) {
        if (!trials_.requeue_unstarted(other, "its slots on " + w.worker_id + " run a recovered attempt", fx)) {
          w.assigned.erase(other);
        }
      }
      w.assigned[key] = Held{slots, now};
      // The node's real rank (older workers do not say: then their order of arrival).
      trials_.claim_recovered(key, w.worker_id, slots,
                              h.has_node_rank() ? std::optional<int>(h.node_rank()) : std::nullopt);
      continue;
    }
    if (h.finished()) continue;  // its Finished message will come and be acknowledged
    // Stale: a cancelled/stopped/lost attempt the worker still runs.
    fx.cancel(w.worker_id, h.trial_id(), h.attempt(), "stale attempt: the coordinator no longer runs it");
    w.assigned[key] = Held{std::vector<int>(h.slots().begin(), h.slots().end()), now};
  }
  // Attempts assigned here that the worker does not hold (an Assign lost on the way, or a
  // worker that restarted): after a grace for messages in flight, they are lost.
  std::vector<AttemptKey> missing;
  for (const auto& [key, h] : w.assigned) {
    if (!listed.count(key) && now - h.since_ms > 2 * env_.opt.heartbeat_ms) missing.push_back(key);
  }
  for (const auto& key : missing) {
    w.assigned.erase(key);
    const std::string why = "worker " + w.worker_id + " does not hold the attempt";
    trials_.attempt_gone(key, w.worker_id, why, why + " (never started)", fx);
  }
}

std::string WorkerBook::drain(const std::string& worker_id, Effects& fx) {
  auto it = workers_.find(worker_id);
  if (it == workers_.end()) HYLAB_FAIL("no registered worker {}", worker_id);
  it->second.draining = true;
  env_.store.set_worker_state(it->first, proto::WORKER_STATE_DRAINING);
  proto::Envelope d;
  d.mutable_drain()->set_exit_when_idle(true);
  fx.to(it->first, d);
  return nlohmann::json{{"worker_id", it->first}, {"state", to_string(proto::WORKER_STATE_DRAINING)}}.dump();
}

// ---- liveness ----

void WorkerBook::tick(int64_t now, Effects& fx) {
  std::vector<std::pair<std::string, std::string>> lost;
  std::vector<std::string> drained;
  for (auto& [id, w] : workers_) {
    if (liveness_.expired(w.last_heard_ms, now)) {
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
    fx.to(id, hb);
    if (w.draining) {  // repeated: a Drain lost on the way would leave it serving nothing forever
      proto::Envelope d;
      d.mutable_drain()->set_exit_when_idle(true);
      fx.to(id, d);
    }
  }
  for (const auto& [id, why] : lost) lose(id, why, fx);
  for (const auto& id : drained) {
    spdlog::info("worker {} drained and gone", id);
    env_.store.set_worker_state(id, proto::WORKER_STATE_DRAINED);
    store::add_event(env_.store.db(), "worker_drained", "", 0, 0, id);
    workers_.erase(id);
  }
  // Unknown peers we asked to register: forget them after a while (memory per peer id).
  for (auto it = reregister_asked_.begin(); it != reregister_asked_.end();) {
    it = now - it->second > 10 * env_.opt.heartbeat_ms ? reregister_asked_.erase(it) : std::next(it);
  }
  if (now >= next_expiry_ms_) {
    next_expiry_ms_ = now + 60'000;
    expire_rows();
  }
}

void WorkerBook::lose(const std::string& worker_id, const std::string& why, Effects& fx) {
  auto it = workers_.find(worker_id);
  if (it == workers_.end()) return;
  spdlog::warn("worker {} lost: {}", worker_id, why);
  env_.store.set_worker_state(worker_id, proto::WORKER_STATE_LOST);
  store::add_event(env_.store.db(), "worker_lost", why, 0, 0, worker_id);
  const auto assigned = it->second.assigned;
  // Gone before its attempts are concluded: no Cancel is sent to a worker that is not there.
  workers_.erase(it);
  for (const auto& [key, h] : assigned) {
    trials_.attempt_gone(key, worker_id, "worker " + worker_id + " lost: " + why,
                         "worker " + worker_id + " lost before the attempt started", fx);
  }
}

// Deletes the rows of workers lost or drained longer than worker_expiry_s ago.
void WorkerBook::expire_rows() {
  auto del = env_.store.db().prepare("DELETE FROM workers WHERE state IN (?, ?) AND last_seen < ?");
  del.bind(1, to_string(proto::WORKER_STATE_LOST)).bind(2, to_string(proto::WORKER_STATE_DRAINED));
  del.bind(3, unix_time_now() - static_cast<double>(env_.opt.worker_expiry_s));
  del.run();
  const int n = env_.store.db().changes();
  if (n > 0) spdlog::info("forgot {} workers lost or drained more than {} s ago", n, env_.opt.worker_expiry_s);
}

void WorkerBook::load() {
  env_.store.db()
      .prepare("UPDATE workers SET state = ?1 WHERE state != ?1")
      .bind(1, to_string(proto::WORKER_STATE_LOST))
      .run();
}

void WorkerBook::clear() {
  workers_.clear();
  reregister_asked_.clear();
}

// ---- for TrialBook and SweepBook ----

bool WorkerBook::registered(const std::string& worker_id) const { return workers_.count(worker_id) > 0; }

bool WorkerBook::counts(const std::string& worker_id, const AttemptKey& key) const {
  auto it = workers_.find(worker_id);
  return it != workers_.end() && it->second.assigned.count(key);
}

bool WorkerBook::holds(const std::string& worker_id, const AttemptKey& key) const {
  auto it = workers_.find(worker_id);
  return it != workers_.end() && (it->second.assigned.count(key) || it->second.reported.count(key));
}

void WorkerBook::hold(const std::string& worker_id, const AttemptKey& key, const std::vector<int>& slots,
                      int64_t now) {
  workers_[worker_id].assigned[key] = Held{slots, now};
}

bool WorkerBook::release(const std::string& worker_id, const AttemptKey& key) {
  auto it = workers_.find(worker_id);
  if (it == workers_.end()) return false;
  it->second.assigned.erase(key);
  return true;
}

void WorkerBook::let_go(const std::string& worker_id, const AttemptKey& key) {
  auto it = workers_.find(worker_id);
  if (it == workers_.end()) return;
  it->second.assigned.erase(key);
  it->second.reported.erase(key);
}

void WorkerBook::cool_down(const std::string& worker_id, int64_t until_ms) {
  if (auto it = workers_.find(worker_id); it != workers_.end()) it->second.cooldown_until_ms = until_ms;
}

// In O(workers) without allocating (building every worker's view here was 25% of the
// coordinator's CPU at 600 busy workers): schedule() asks this after every batch.
bool WorkerBook::any_free_slot(int64_t now, int64_t* cooldown_over) const {
  *cooldown_over = INT64_MAX;
  for (const auto& [id, w] : workers_) {
    if (w.draining || !w.has_free_slot()) continue;
    if (now >= w.cooldown_until_ms) return true;
    *cooldown_over = std::min(*cooldown_over, w.cooldown_until_ms);
  }
  return false;
}

// Every worker, busy ones too (a blocked gang may reserve one), but the list of free slots
// only of those that have one.
std::vector<SchedWorker> WorkerBook::sched_view(int64_t now) const {
  std::vector<SchedWorker> ws;
  ws.reserve(workers_.size());
  for (const auto& [id, w] : workers_) {
    ws.push_back({id, w.slots, w.has_free_slot() ? w.free_slots() : std::vector<int>{},
                  !w.draining && now >= w.cooldown_until_ms});
  }
  return ws;
}

int64_t WorkerBook::free_slot_count() const {
  int64_t n = 0;
  for (const auto& [id, w] : workers_) {
    if (!w.draining) n += static_cast<int64_t>(w.free_slots().size());
  }
  return n;
}

}  // namespace hylab::coordinator
