// The deterministic simulator (simulator.h). One World per seed: the real coordinator logic
// and store, simulated workers that speak the worker's protocol (worker/worker.cpp: Hello,
// heartbeats with held trials, metrics batches with a window and retransmits, Finished until
// acked, Reregister, Drain, rendezvous), simulated trainers that write a metrics spool and
// checkpoints to a simulated shared disk, and a network that loses, duplicates and delays.
// Time advances in ticks of kTickMs; nothing reads the real clock.
#include "sim/simulator.h"

#include <spdlog/spdlog.h>

#include <deque>
#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <set>

#include "common/check.h"
#include "common/run_config.h"
#include "common/states.h"
#include "coordinator/coordinator_impl.h"
#include "coordinator/policy.h"
#include "wire/wire.h"

namespace hylab::sim {
namespace {

namespace fs = std::filesystem;
using coordinator::Coordinator;
using coordinator::Inbound;
using coordinator::Outgoing;
using AttemptKey = std::pair<int64_t, int64_t>;  // (trial_id, attempt)

constexpr int64_t kTickMs = 50;
constexpr int kHeartbeatMs = 1000;
constexpr int kLiveness = 3;
constexpr size_t kWindow = 16;  // as the worker's
constexpr size_t kInboxBulk = 4;  // metrics batches per step (the daemon: 256), so batches split
constexpr const char* kMetric = "train_loss";

// The value a trainer logs at a step: deterministic, so any attempt writes the same.
double metric_value(int64_t trial_id, int64_t step) { return 10.0 / (1.0 + step) + trial_id * 1e-3; }

struct Rng {
  std::mt19937_64 g;
  double uniform() { return static_cast<double>(g() >> 11) * 0x1.0p-53; }
  int64_t range(int64_t lo, int64_t hi) { return lo + static_cast<int64_t>(g() % static_cast<uint64_t>(hi - lo + 1)); }
  bool chance(double p) { return uniform() < p; }
};

// The shared disk of one trial's run_dir: checkpoints and each attempt's metrics spool.
struct Rec {
  enum Kind { kMetric, kCheckpoint, kSummary } kind;
  int64_t step;
};
struct TrialDisk {
  std::set<int64_t> checkpoints;
  std::map<int64_t, std::vector<Rec>> spools;  // attempt -> records, in order
};

struct Unacked {
  std::string bytes;
  int64_t sent_ms = 0;
};

struct SimAttempt {
  proto::Assign as;
  std::vector<int> slots;
  bool waiting_rendezvous = false, running = false, exited = false;
  proto::TrialOutcome outcome = proto::TRIAL_OUTCOME_UNSPECIFIED;
  int exit_code = 0;
  std::string reason;
  int64_t step = 0, total = 0, ck_every = 0, step_ms = 0, next_step_at = 0;
  int64_t crash_at = -1, oom_at = -1;
  size_t spool_pos = 0;
  std::deque<proto::Metric> prelude;
  int64_t next_seq = 1;
  std::map<int64_t, Unacked> unacked;
  std::optional<Unacked> finished;
  bool drained = false;
  bool writes() const { return as.node_rank() == 0; }
};

struct SimWorker {
  std::string id, key;
  int slots = 1;
  bool alive = true;
  int64_t restart_at = 0;
  bool welcomed = false;
  int64_t last_heard = 0, next_beat = 0;
  bool draining = false, exit_when_idle = false;
  int pid = 1;  // a new one at each start
  std::map<AttemptKey, SimAttempt> attempts;
};

struct Msg {
  std::string to, from, payload;  // to "" = the coordinator
};

struct TrialPlan {
  int64_t total = 0, ck_every = 0, step_ms = 0;
  int max_retries = 0;
};

class World {
 public:
  World(uint64_t seed, const SimOptions& opt) : opt_(opt) {
    rng_.g.seed(seed);
    res_.seed = seed;
    db_path_ = (fs::path(opt.dir) / ("sim-" + std::to_string(seed) + ".db")).string();
    fs::remove(db_path_);
    fs::remove(db_path_ + "-wal");
    fs::remove(db_path_ + "-shm");
    // Fault rates of this seed: some seeds are calm, some are storms.
    if (opt.faults) {
      p_loss_ = rng_.chance(0.5) ? rng_.uniform() * 0.05 : 0;
      p_dup_ = rng_.chance(0.5) ? rng_.uniform() * 0.05 : 0;
      max_delay_ = rng_.chance(0.3) ? 2500 : 150;
      p_worker_death_ = rng_.uniform() * 0.004;
      p_kill_ = rng_.uniform() * 0.004;
      p_crash_ = rng_.uniform() * 0.15;
      p_oom_ = rng_.uniform() * 0.03;
      p_coord_crash_ = rng_.uniform() * 0.002;
      p_crash_after_commit_ = rng_.uniform() * 0.002;
      p_commit_fail_ = rng_.uniform() * 0.004;
      p_clock_jump_ = rng_.uniform() * 0.001;
      p_drain_ = rng_.uniform() * 0.001;
    }
  }

  ~World() {
    core_.reset();
    std::error_code ec;
    for (const char* ext : {"", "-wal", "-shm"}) fs::remove(db_path_ + ext, ec);
  }

  SimResult run() {
    make_core();
    const int n_workers = static_cast<int>(rng_.range(2, 4));
    for (int i = 0; i < n_workers; ++i) {
      SimWorker w;
      w.id = "w" + std::to_string(i);
      w.key = "key-of-w" + std::to_string(i);
      w.slots = static_cast<int>(rng_.range(1, 2));
      w.last_heard = now_;
      workers_.push_back(std::move(w));
      send_hello(workers_.back());
    }
    const int n_sweeps = static_cast<int>(rng_.range(1, 2));
    for (int i = 0; i < n_sweeps; ++i) submit_sweep(i);
    const int64_t fault_end = now_ + opt_.fault_ms;
    const int64_t deadline = now_ + opt_.deadline_ms;
    int64_t next_done_check = now_;
    while (now_ < deadline) {
      now_ += kTickMs;
      faulting_ = opt_.faults && now_ < fault_end;
      if (faulting_) inject_faults();
      coordinator_tick();
      for (auto& w : workers_) worker_tick(w);
      if (now_ >= next_done_check) {
        next_done_check = now_ + 1000;
        if (core_ && all_done()) break;
      }
    }
    res_.sim_ms = now_;
    check_final();
    return std::move(res_);
  }

 private:
  // ---- bookkeeping ----
  void note(const std::string& kind, const std::string& what) {
    ++res_.faults[kind];
    res_.trace.push_back(fmt::format("t={} {}: {}", now_, kind, what));
  }
  void event(const std::string& what) {
    if (opt_.trace) res_.trace.push_back(fmt::format("t={} {}", now_, what));
  }
  void violation(const std::string& what) {
    if (res_.violations.size() >= 20) return;  // the first ones tell the story
    res_.violations.push_back(fmt::format("t={} {}", now_, what));
  }
  SimWorker* worker(const std::string& id) {
    for (auto& w : workers_) {
      if (w.id == id) return &w;
    }
    return nullptr;
  }

  // ---- the network ----
  void post(const std::string& to, const std::string& from, const std::string& bytes) {
    if (faulting_ && p_loss_ > 0 && rng_.chance(p_loss_)) {
      note("message_lost", from + " -> " + (to.empty() ? "coordinator" : to));
      return;
    }
    int copies = 1;
    if (faulting_ && p_dup_ > 0 && rng_.chance(p_dup_)) {
      copies = 2;
      note("message_duplicated", from + " -> " + (to.empty() ? "coordinator" : to));
    }
    for (int i = 0; i < copies; ++i) {
      const int64_t delay = faulting_ ? rng_.range(1, max_delay_) : 1;
      if (delay > 1000) ++res_.faults["message_delayed"];  // counted, not traced (too many)
      net_.emplace(std::make_pair(now_ + delay, order_++), Msg{to, from, bytes});
    }
  }
  void to_coordinator(const std::string& from, proto::Envelope env) {
    post("", from, wire::encode(std::move(env), from));
  }
  std::vector<Msg> due(const std::string& to) {
    std::vector<Msg> out;
    for (auto it = net_.begin(); it != net_.end() && it->first.first <= now_;) {
      if (it->second.to == to) {
        out.push_back(std::move(it->second));
        it = net_.erase(it);
      } else {
        ++it;
      }
    }
    return out;
  }

  // ---- the coordinator ----
  void make_core() {
    coordinator::CoordinatorOptions o;
    o.db_path = db_path_;
    o.heartbeat_ms = kHeartbeatMs;
    o.liveness = kLiveness;
    o.security.insecure = true;
    core_ = std::make_unique<Coordinator::Impl>(o, now_);
    core_->before_commit = [this] {
      if (fail_commit_) {
        fail_commit_ = false;
        throw Error("injected commit failure (disk I/O error)");
      }
    };
  }

  void submit_sweep(int index) {
    proto::Envelope env;
    auto* req = env.mutable_request();
    req->set_request_id(index + 1);
    auto* s = req->mutable_submit_sweep();
    s->set_name("sim" + std::to_string(index));
    s->set_metric_name(kMetric);
    const bool gang = rng_.chance(0.25);
    s->set_gpus_per_trial(gang ? 2 : 1);  // over all nodes
    s->set_nodes_per_trial(gang ? 2 : 1);
    s->set_max_retries(static_cast<int>(rng_.range(0, 3)));
    const int n = static_cast<int>(rng_.range(2, 6));
    for (int i = 0; i < n; ++i) {
      RunConfig cfg;
      cfg.set_seed(1000 * index + i);
      const RunConfig resolved = resolve_config(cfg);
      auto* t = s->add_trials();
      t->set_trial_index(i);
      t->set_config_json(config_to_json(resolved, false));
    }
    send_from_core(core_->step({Inbound{"client", true, "", wire::encode(env, "client")}}, now_));
    const int64_t sweep_id = index + 1;
    auto q = core_->store->db().prepare("SELECT trial_id FROM trials WHERE sweep_id = ?");
    q.bind(1, sweep_id);
    while (q.step()) {
      TrialPlan p;
      p.total = rng_.range(8, 40);
      p.ck_every = rng_.range(2, 8);
      p.step_ms = rng_.range(50, 300);
      p.max_retries = s->max_retries();
      plans_[q.int64(0)] = p;
      ++res_.trials;
    }
    if (plans_.empty()) violation("sweep " + std::to_string(sweep_id) + " was not stored");
  }

  void coordinator_tick() {
    std::vector<Msg> msgs = due("");
    if (!core_) {
      if (now_ >= core_up_at_) {
        event("coordinator restarts from the database");
        make_core();
      } else {
        return;  // messages to a dead coordinator are lost with its socket
      }
    }
    // The daemon's order (coordinator/inbox.h), with a small bulk so that batches split.
    coordinator::Inbox inbox(kInboxBulk);
    for (auto& m : msgs) {
      const SimWorker* w = worker(m.from);
      inbox.push(Inbound{m.from, false, w ? w->key : "", std::move(m.payload)});
    }
    do {
      std::vector<Outgoing> out = core_->step(inbox.next_batch(), now_);
      ++res_.coordinator_steps;
      check_core();
      if (faulting_ && !out.empty() && p_crash_after_commit_ > 0 && rng_.chance(p_crash_after_commit_)) {
        // What was read and not yet handled is lost with the process, as in the daemon.
        note("coordinator_crash_after_commit", fmt::format("{} replies never sent, {} messages unhandled",
                                                           out.size(), inbox.size()));
        core_.reset();
        core_up_at_ = now_ + rng_.range(0, 3000);
        return;
      }
      send_from_core(out);
    } while (!inbox.empty());
    core_->checkpoint_if_due(false, now_);
  }

  void send_from_core(const std::vector<Outgoing>& out) {
    std::map<AttemptKey, std::pair<int, std::set<std::string>>> gangs;
    std::map<AttemptKey, int> num_nodes;
    for (const auto& o : out) {
      std::string error;
      auto env = wire::decode(o.payload.data(), o.payload.size(), &error);
      if (!env) {
        violation("the coordinator sent an undecodable message: " + error);
        continue;
      }
      if (env->has_assign()) {
        const auto& as = env->assign();
        const AttemptKey key{as.trial_id(), as.attempt()};
        gangs[key].first += 1;
        gangs[key].second.insert(o.routing_id);
        num_nodes[key] = as.num_nodes();
        if (as.resume()) {
          const auto& trials = core_->trial_book.all();
          auto t = trials.find(as.trial_id());
          const int64_t ck = t == trials.end() ? -1 : t->second.checkpoint_step;
          if (!disk_[as.trial_id()].checkpoints.count(ck)) {
            violation(fmt::format("trial {} attempt {} resumes from step {}, which no trainer wrote",
                                  as.trial_id(), as.attempt(), ck));
          }
        }
      }
      if (o.routing_id == "client") continue;  // client replies are read from the store
      post(o.routing_id, "coordinator", o.payload);
    }
    for (const auto& [key, g] : gangs) {
      if (g.first != num_nodes[key] || static_cast<int>(g.second.size()) != num_nodes[key]) {
        violation(fmt::format("trial {} attempt {}: {} Assigns to {} workers for a gang of {} nodes",
                              key.first, key.second, g.first, g.second.size(), num_nodes[key]));
      }
    }
  }

  // No slot of a worker is held by two running attempts in the coordinator's books; the
  // scheduler's index agrees with the trials.
  void check_core() {
    if (const std::string why = core_->trial_book.check_index(); !why.empty()) violation("trial book index: " + why);
    std::map<std::pair<std::string, int>, int64_t> held;
    const auto& workers = core_->worker_book.all();
    for (const auto& [id, t] : core_->trial_book.all()) {
      if (t.state != proto::TRIAL_STATE_RUNNING) continue;
      for (const auto& n : t.run) {
        if (n.finished) continue;  // a gang node that exited: its slots are free again
        auto w = workers.find(n.worker_id);
        if (w != workers.end() && !w->second.assigned.count({id, t.attempt})) {
          violation(fmt::format("trial {} attempt {} runs on {}, which does not count it", id, t.attempt, n.worker_id));
        }
        for (int s : n.slots) {
          auto [it, fresh] = held.insert({{n.worker_id, s}, id});
          if (!fresh) {
            violation(fmt::format("slot {} of {} double-booked: trials {} and {}", s, n.worker_id,
                                  it->second, id));
          }
        }
      }
    }
  }

  bool all_done() {
    auto q = core_->store->db().prepare("SELECT COUNT(*) FROM sweeps WHERE state = 'running'");
    return q.step() && q.int64(0) == 0;
  }

  // ---- faults ----
  void inject_faults() {
    if (p_worker_death_ > 0 && rng_.chance(p_worker_death_)) {
      SimWorker& w = workers_[rng_.range(0, static_cast<int64_t>(workers_.size()) - 1)];
      if (w.alive) {
        note("worker_death", fmt::format("{} with {} attempts", w.id, w.attempts.size()));
        for (auto& [key, a] : w.attempts) {
          if (!a.exited) outcomes_[key].insert("lost");
        }
        w.attempts.clear();
        w.alive = false;
        w.restart_at = now_ + rng_.range(500, 8000);
      }
    }
    if (p_kill_ > 0 && rng_.chance(p_kill_)) {
      std::vector<std::pair<SimWorker*, SimAttempt*>> live;
      for (auto& w : workers_) {
        for (auto& [key, a] : w.attempts) {
          if (w.alive && a.running && !a.exited) live.push_back({&w, &a});
        }
      }
      if (!live.empty()) {
        auto [w, a] = live[rng_.range(0, static_cast<int64_t>(live.size()) - 1)];
        note("trainer_killed", fmt::format("trial {} attempt {} on {}", a->as.trial_id(), a->as.attempt(), w->id));
        exit_trainer(*a, proto::TRIAL_OUTCOME_FAILED, -9, "killed by signal 9", "killed");
      }
    }
    if (core_ && p_coord_crash_ > 0 && rng_.chance(p_coord_crash_)) {
      note("coordinator_crash", "restarts from the database");
      core_.reset();
      core_up_at_ = now_ + rng_.range(0, 3000);
    }
    if (p_commit_fail_ > 0 && rng_.chance(p_commit_fail_)) {
      note("commit_failure", "the next COMMIT fails");
      fail_commit_ = true;
    }
    if (p_clock_jump_ > 0 && rng_.chance(p_clock_jump_)) {
      const int64_t jump = rng_.range(2000, 12000);
      note("clock_jump", fmt::format("+{} ms", jump));
      now_ += jump;
    }
    if (core_ && p_drain_ > 0 && rng_.chance(p_drain_)) {
      SimWorker& w = workers_[rng_.range(0, static_cast<int64_t>(workers_.size()) - 1)];
      if (w.alive) {
        note("drain", w.id);
        proto::Envelope env;
        env.mutable_request()->set_request_id(100);
        env.mutable_request()->set_drain_worker(w.id);
        post("", "client", wire::encode(env, "client"));
      }
    }
  }

  // ---- workers ----
  void send(SimWorker& w, proto::Envelope env) { to_coordinator(w.id, std::move(env)); }

  void fill_held(const SimWorker& w, google::protobuf::RepeatedPtrField<proto::HeldTrial>* held) {
    for (const auto& [key, a] : w.attempts) {
      auto* h = held->Add();
      h->set_trial_id(key.first);
      h->set_attempt(key.second);
      for (int s : a.slots) h->add_slots(s);
      h->set_finished(a.exited);
      h->set_node_rank(a.as.node_rank());
    }
  }

  void send_hello(SimWorker& w) {
    proto::Envelope env;
    auto* h = env.mutable_hello();
    h->set_worker_id(w.id);
    h->set_host("host-" + w.id);
    h->set_pid(w.pid);
    h->set_slots(w.slots);
    h->set_mem_gib(8);
    h->set_cpus(2);
    h->set_draining(w.draining);
    h->set_work_dir("/sim/" + w.id);
    fill_held(w, h->mutable_held());
    send(w, env);
    w.next_beat = now_ + kHeartbeatMs;
  }

  void worker_tick(SimWorker& w) {
    if (!w.alive) {
      if (now_ < w.restart_at) {
        due(w.id);  // lost with the dead process
        return;
      }
      event(w.id + " starts again");
      const int pid = w.pid + 1;
      w = SimWorker{w.id, w.key, w.slots};
      w.pid = pid;
      w.last_heard = now_;
      send_hello(w);
    }
    for (auto& m : due(w.id)) {
      w.last_heard = now_;
      std::string error;
      auto env = wire::decode(m.payload.data(), m.payload.size(), &error);
      if (!env) {
        violation(w.id + " got an undecodable message: " + error);
        continue;
      }
      handle(w, *env);
    }
    for (auto& [key, a] : w.attempts) {
      advance(a);
      pump(w, a);
    }
    if (now_ >= w.next_beat) {
      w.next_beat = now_ + kHeartbeatMs;
      if (!w.welcomed) {
        send_hello(w);
      } else {
        proto::Envelope env;
        fill_held(w, env.mutable_heartbeat()->mutable_held());
        send(w, env);
        for (auto& [key, a] : w.attempts) retransmit(w, a, 5 * kHeartbeatMs, kHeartbeatMs);
      }
    }
    if (now_ - w.last_heard > kLiveness * kHeartbeatMs) {
      event(w.id + " hears nothing: registers again");
      w.welcomed = false;
      w.last_heard = now_;
      send_hello(w);
    }
    if (w.exit_when_idle && w.attempts.empty()) {
      event(w.id + " drained and idle: exits");
      w.alive = false;
      w.restart_at = now_ + rng_.range(1000, 5000);
    }
  }

  void retransmit(SimWorker& w, SimAttempt& a, int64_t metrics_after, int64_t finished_after) {
    for (auto& [seq, u] : a.unacked) {
      if (now_ - u.sent_ms >= metrics_after) {
        post("", w.id, u.bytes);
        u.sent_ms = now_;
      }
    }
    if (a.finished && now_ - a.finished->sent_ms >= finished_after) {
      post("", w.id, a.finished->bytes);
      a.finished->sent_ms = now_;
    }
  }

  void handle(SimWorker& w, const proto::Envelope& env) {
    using E = proto::Envelope;
    switch (env.kind_case()) {
      case E::kWelcome:
        w.welcomed = true;
        for (auto& [key, a] : w.attempts) retransmit(w, a, 0, 0);
        break;
      case E::kReregister:
        w.welcomed = false;
        send_hello(w);
        break;
      case E::kAssign: on_assign(w, env.assign()); break;
      case E::kCancel: {
        event(fmt::format("{} told to cancel trial {} attempt {}: {}", w.id, env.cancel().trial_id(),
                          env.cancel().attempt(), env.cancel().reason()));
        auto it = w.attempts.find({env.cancel().trial_id(), env.cancel().attempt()});
        if (it != w.attempts.end() && !it->second.exited) {
          exit_trainer(it->second, proto::TRIAL_OUTCOME_CANCELLED, -15, "cancelled", "cancelled");
        }
        break;
      }
      case E::kMetricsAck: {
        auto it = w.attempts.find({env.metrics_ack().trial_id(), env.metrics_ack().attempt()});
        if (it != w.attempts.end()) it->second.unacked.erase(env.metrics_ack().seq());
        break;
      }
      case E::kFinishedAck: {
        auto it = w.attempts.find({env.finished_ack().trial_id(), env.finished_ack().attempt()});
        if (it != w.attempts.end() && it->second.finished) w.attempts.erase(it);
        break;
      }
      case E::kDrain:
        w.draining = true;
        w.exit_when_idle = env.drain().exit_when_idle();
        break;
      case E::kRendezvous: {
        auto it = w.attempts.find({env.rendezvous().trial_id(), env.rendezvous().attempt()});
        if (it != w.attempts.end() && it->second.waiting_rendezvous && !it->second.exited) {
          it->second.waiting_rendezvous = false;
          launch(w, it->second);
        }
        break;
      }
      default: break;
    }
  }

  void on_assign(SimWorker& w, const proto::Assign& as) {
    const AttemptKey key{as.trial_id(), as.attempt()};
    if (auto it = w.attempts.find(key); it != w.attempts.end()) {
      if (it->second.running) send_started(w, it->second);
      return;
    }
    SimAttempt a;
    a.as = as;
    a.slots.assign(as.slots().begin(), as.slots().end());
    std::set<int> busy;
    for (const auto& [k, o] : w.attempts) busy.insert(o.slots.begin(), o.slots.end());
    std::string refuse;
    for (int s : a.slots) {
      if (s < 0 || s >= w.slots || busy.count(s)) refuse = fmt::format("slot {} is not free on worker {}", s, w.id);
    }
    if (w.draining) refuse = "the worker is draining";
    const TrialPlan& plan = plans_[as.trial_id()];
    a.total = plan.total;
    a.ck_every = plan.ck_every;
    a.step_ms = plan.step_ms;
    event(fmt::format("{} gets trial {} attempt {} node {}{}", w.id, as.trial_id(), as.attempt(), as.node_rank(),
                      refuse.empty() ? "" : " (refused: " + refuse + ")"));
    if (!refuse.empty()) {
      a.exited = true;
      a.outcome = proto::TRIAL_OUTCOME_PREEMPTED;
      a.reason = refuse;
      a.drained = true;
      w.attempts.emplace(key, std::move(a));
      return;
    }
    if (as.resume()) {
      const TrialDisk& d = disk_[as.trial_id()];
      if (!d.checkpoints.empty()) {
        a.step = *d.checkpoints.rbegin();
        if (a.writes()) relay_earlier_spools(a);
      }
    }
    if (faulting_ && a.step + 1 <= a.total) {
      if (p_crash_ > 0 && rng_.chance(p_crash_)) a.crash_at = rng_.range(a.step + 1, a.total);
      if (p_oom_ > 0 && rng_.chance(p_oom_)) a.oom_at = rng_.range(a.step + 1, a.total);
    }
    auto [it, inserted] = w.attempts.emplace(key, std::move(a));
    SimAttempt& at = it->second;
    if (as.num_nodes() > 1) {
      if (as.node_rank() == 0) {
        proto::Envelope env;
        env.mutable_rendezvous()->set_trial_id(as.trial_id());
        env.mutable_rendezvous()->set_attempt(as.attempt());
        env.mutable_rendezvous()->set_payload(w.id + ":29500");
        send(w, env);
      } else {
        at.waiting_rendezvous = true;
        return;
      }
    }
    launch(w, at);
  }

  // Like the worker: records of earlier attempts up to the checkpoint it resumes from, the
  // newest attempt's value of each step.
  void relay_earlier_spools(SimAttempt& a) {
    std::map<int64_t, int64_t> step_attempt;
    for (const auto& [attempt, recs] : disk_[a.as.trial_id()].spools) {
      if (attempt >= a.as.attempt()) continue;
      for (const auto& r : recs) {
        if (r.kind == Rec::kMetric && r.step <= a.step) step_attempt[r.step] = attempt;
      }
    }
    for (const auto& [step, attempt] : step_attempt) {
      proto::Metric m;
      m.set_step(step);
      m.set_name(kMetric);
      m.set_value(metric_value(a.as.trial_id(), step));
      m.set_wall_time(static_cast<double>(step));
      m.set_attempt(attempt);
      a.prelude.push_back(m);
    }
  }

  void launch(SimWorker& w, SimAttempt& a) {
    a.running = true;
    a.next_step_at = now_ + a.step_ms;
    send_started(w, a);
  }

  void send_started(SimWorker& w, const SimAttempt& a) {
    proto::Envelope env;
    env.mutable_started()->set_trial_id(a.as.trial_id());
    env.mutable_started()->set_attempt(a.as.attempt());
    env.mutable_started()->set_pid(1000 + static_cast<int>(a.as.attempt()));
    env.mutable_started()->set_run_dir("/sim/" + a.as.run_dir());
    send(w, env);
  }

  void exit_trainer(SimAttempt& a, proto::TrialOutcome outcome, int code, const std::string& reason,
                    const std::string& what) {
    a.exited = true;
    a.outcome = outcome;
    a.exit_code = code;
    a.reason = reason;
    outcomes_[{a.as.trial_id(), a.as.attempt()}].insert(what);
    event(fmt::format("trial {} attempt {} node {}: {}", a.as.trial_id(), a.as.attempt(), a.as.node_rank(), what));
  }

  void advance(SimAttempt& a) {
    while (a.running && !a.exited && now_ >= a.next_step_at) {
      if (a.step >= a.total) {  // resumed from the final checkpoint: only the summary is left
        if (a.writes()) disk_[a.as.trial_id()].spools[a.as.attempt()].push_back({Rec::kSummary, a.step});
        exit_trainer(a, proto::TRIAL_OUTCOME_SUCCEEDED, proto::TRAINER_EXIT_OK, "", "succeeded");
        return;
      }
      a.step += 1;
      a.next_step_at += a.step_ms;
      const int64_t trial_id = a.as.trial_id();
      if (a.step == a.crash_at) {
        note("trainer_crash", fmt::format("trial {} attempt {} at step {}", trial_id, a.as.attempt(), a.step));
        exit_trainer(a, proto::TRIAL_OUTCOME_FAILED, proto::TRAINER_EXIT_FAILED, "trainer error (simulated)", "crashed");
        return;
      }
      if (a.step == a.oom_at) {
        note("trainer_oom", fmt::format("trial {} attempt {} at step {}", trial_id, a.as.attempt(), a.step));
        exit_trainer(a, proto::TRIAL_OUTCOME_OOM, proto::TRAINER_EXIT_OOM, "CUDA out of memory (simulated)", "oom");
        return;
      }
      if (a.writes()) {
        TrialDisk& d = disk_[trial_id];
        auto& spool = d.spools[a.as.attempt()];
        spool.push_back({Rec::kMetric, a.step});
        if (a.step % a.ck_every == 0 || a.step == a.total) {
          d.checkpoints.insert(a.step);
          spool.push_back({Rec::kCheckpoint, a.step});
        }
        if (a.step == a.total) spool.push_back({Rec::kSummary, a.step});
      }
      if (a.step >= a.total) {
        exit_trainer(a, proto::TRIAL_OUTCOME_SUCCEEDED, proto::TRAINER_EXIT_OK, "", "succeeded");
        return;
      }
    }
  }

  void pump(SimWorker& w, SimAttempt& a) {
    if (!w.welcomed) return;
    const auto* spool = a.writes() && disk_.count(a.as.trial_id()) && disk_[a.as.trial_id()].spools.count(a.as.attempt())
                            ? &disk_[a.as.trial_id()].spools[a.as.attempt()] : nullptr;
    while (a.unacked.size() < kWindow) {
      const bool exited_before_read = a.exited;
      proto::Envelope env;
      auto* b = env.mutable_metrics();
      b->set_trial_id(a.as.trial_id());
      b->set_attempt(a.as.attempt());
      while (!a.prelude.empty() && b->metrics_size() < wire::kMaxMetricsPerBatch) {
        *b->add_metrics() = a.prelude.front();
        a.prelude.pop_front();
      }
      while (spool && a.spool_pos < spool->size() && b->metrics_size() < wire::kMaxMetricsPerBatch) {
        const Rec& r = (*spool)[a.spool_pos++];
        if (r.kind == Rec::kMetric) {
          auto* m = b->add_metrics();
          m->set_step(r.step);
          m->set_name(kMetric);
          m->set_value(metric_value(a.as.trial_id(), r.step));
          m->set_wall_time(static_cast<double>(r.step));
        } else if (r.kind == Rec::kCheckpoint) {
          b->set_checkpoint_step(std::max(b->checkpoint_step(), r.step));
        } else {
          b->mutable_summary()->set_steps(r.step);
          b->mutable_summary()->set_final_train_loss(metric_value(a.as.trial_id(), r.step));
          b->mutable_summary()->set_tok_per_s(1000);
        }
      }
      if (b->metrics_size() == 0 && !b->has_summary() && b->checkpoint_step() < 0) {
        if (exited_before_read && a.prelude.empty()) a.drained = true;
        break;
      }
      b->set_seq(a.next_seq++);
      Unacked u{wire::encode(env, w.id), now_};
      post("", w.id, u.bytes);
      a.unacked[b->seq()] = std::move(u);
    }
    if (a.exited && a.drained && a.unacked.empty() && !a.finished) {
      proto::Envelope env;
      auto* f = env.mutable_finished();
      f->set_trial_id(a.as.trial_id());
      f->set_attempt(a.as.attempt());
      f->set_outcome(a.outcome);
      f->set_exit_code(a.exit_code);
      f->set_reason(a.reason);
      a.finished = Unacked{wire::encode(env, w.id), now_};
      post("", w.id, a.finished->bytes);
    }
  }

  // ---- the invariants at the end ----
  void check_final() {
    core_.reset();  // a restart reads only what was committed
    make_core();
    auto& db = core_->store->db();
    auto sweeps = db.prepare("SELECT sweep_id, state FROM sweeps");
    while (sweeps.step()) {
      if (parse_sweep_state(sweeps.text(1)) != proto::SWEEP_STATE_COMPLETED) {
        violation(fmt::format("sweep {} is {} at the deadline", sweeps.int64(0), sweeps.text(1)));
      }
    }
    auto trials = db.prepare("SELECT trial_id, state, attempt, failures FROM trials ORDER BY trial_id");
    while (trials.step()) {
      const int64_t trial_id = trials.int64(0);
      const proto::TrialState state = parse_trial_state(trials.text(1));
      const int64_t attempt = trials.int64(2);
      const int64_t failures = trials.int64(3);
      const TrialPlan& plan = plans_[trial_id];
      const auto& what = outcomes_[{trial_id, attempt}];
      int64_t crashes = 0;
      for (int64_t a = 1; a <= attempt; ++a) crashes += outcomes_[{trial_id, a}].count("crashed");
      auto lq = db.prepare("SELECT COUNT(*) FROM trial_attempts WHERE trial_id = ? AND state = ?");
      lq.bind(1, trial_id).bind(2, to_string(proto::ATTEMPT_STATE_LOST));
      const int64_t losses = lq.step() ? lq.int64(0) : 0;
      if (failures > crashes) {
        violation(fmt::format("trial {} counts {} failures, but its trainers failed {} times", trial_id, failures, crashes));
      }
      if (state == proto::TRIAL_STATE_SUCCEEDED) {
        if (!what.count("succeeded")) {
          violation(fmt::format("trial {} succeeded, but its attempt {} did not: {}", trial_id, attempt, join(what)));
        }
      } else if (state == proto::TRIAL_STATE_OOM) {
        if (!what.count("oom")) violation(fmt::format("trial {} oom, but attempt {} was not: {}", trial_id, attempt, join(what)));
      } else if (state == proto::TRIAL_STATE_FAILED) {
        const bool by_errors = failures > plan.max_retries;
        const bool by_losses = losses > coordinator::kMaxLosses;
        if (!by_errors && !by_losses) {
          violation(fmt::format("trial {} failed with {} failures (max_retries {}) and {} losses (attempt {}: {})",
                                trial_id, failures, plan.max_retries, losses, attempt, join(what)));
        }
      } else {
        violation(fmt::format("trial {} ends {} (attempt {})", trial_id, to_string(state), attempt));
      }
      check_metrics(db, trial_id, state == proto::TRIAL_STATE_SUCCEEDED ? plan.total : -1);
    }
  }

  void check_metrics(store::Db& db, int64_t trial_id, int64_t total) {
    auto q = db.prepare("SELECT step, value FROM metrics WHERE trial_id = ? AND name = ? ORDER BY step");
    q.bind(1, trial_id).bind(2, std::string(kMetric));
    int64_t expect = 1;
    while (q.step()) {
      const int64_t step = q.int64(0);
      if (q.real(1) != metric_value(trial_id, step)) {
        violation(fmt::format("trial {} step {}: stored value {} is not the trainer's", trial_id, step, q.real(1)));
      }
      if (total >= 0 && step != expect) {
        violation(fmt::format("trial {}: metric step {} lost (next stored is {})", trial_id, expect, step));
        expect = step;
      }
      ++expect;
    }
    if (total >= 0 && expect - 1 != total) {
      violation(fmt::format("trial {}: {} metric steps stored of {}", trial_id, expect - 1, total));
    }
  }

  static std::string join(const std::set<std::string>& s) {
    std::string out;
    for (const auto& x : s) out += (out.empty() ? "" : ",") + x;
    return out.empty() ? "nothing" : out;
  }

  SimOptions opt_;
  Rng rng_;
  SimResult res_;
  std::string db_path_;
  int64_t now_ = 1'000'000;
  uint64_t order_ = 0;
  std::multimap<std::pair<int64_t, uint64_t>, Msg> net_;
  std::unique_ptr<Coordinator::Impl> core_;
  int64_t core_up_at_ = 0;
  bool fail_commit_ = false;
  bool faulting_ = false;  // within the fault window
  std::vector<SimWorker> workers_;
  std::map<int64_t, TrialDisk> disk_;
  std::map<int64_t, TrialPlan> plans_;
  std::map<AttemptKey, std::set<std::string>> outcomes_;  // what the trainers of an attempt did
  double p_loss_ = 0, p_dup_ = 0;
  int64_t max_delay_ = 1;
  double p_worker_death_ = 0, p_kill_ = 0, p_crash_ = 0, p_oom_ = 0, p_coord_crash_ = 0;
  double p_crash_after_commit_ = 0, p_commit_fail_ = 0, p_clock_jump_ = 0, p_drain_ = 0;
};

}  // namespace

SimResult run_seed(uint64_t seed, const SimOptions& opt) {
  World world(seed, opt);
  return world.run();
}

}  // namespace hylab::sim
