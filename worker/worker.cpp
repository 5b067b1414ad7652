#include "worker/worker.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <deque>
#include <filesystem>
#include <map>
#include <optional>
#include <random>
#include <set>

#include <zmq.hpp>

#include "common/check.h"
#include "common/checkpoint_dirs.h"
#include "wire/wire.h"
#include "worker/gpu_inventory.h"
#include "worker/metrics_tail.h"
#include "worker/trial_runner.h"

namespace hylab::worker {
namespace {

namespace fs = std::filesystem;
using AttemptKey = std::pair<int64_t, int64_t>;

constexpr size_t kWindow = 16;  // unacknowledged batches per attempt

int64_t steady_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

std::string self_exe() {
  std::error_code ec;
  auto p = fs::read_symlink("/proc/self/exe", ec);
  if (ec) HYLAB_FAIL("cannot find this executable (/proc/self/exe): {}; pass --hylab_bin", ec.message());
  return p.string();
}

int free_tcp_port() {
  // Let the kernel choose, via a throwaway ZeroMQ bind.
  zmq::context_t ctx(1);
  zmq::socket_t s(ctx, zmq::socket_type::rep);
  s.set(zmq::sockopt::linger, 0);
  s.bind("tcp://0.0.0.0:*");
  const std::string ep = s.get(zmq::sockopt::last_endpoint);
  return std::stoi(ep.substr(ep.rfind(':') + 1));
}

struct Unacked {
  std::string bytes;
  int64_t sent_ms = 0;
};

struct Attempt {
  proto::Assign assign;
  std::vector<int> slots;
  std::unique_ptr<TrialRunner> runner;
  std::unique_ptr<MetricsTail> tail;
  std::deque<proto::Metric> prelude;  // an earlier attempt's undelivered records (resume)
  int64_t next_seq = 1;
  std::map<int64_t, Unacked> unacked;
  std::optional<ExitInfo> failed_to_start;
  bool waiting_rendezvous = false;
  bool drained = false;               // everything after the exit has been read
  std::optional<Unacked> finished;    // the Finished message, until acknowledged
  LaunchSpec spec;

  bool done() const { return failed_to_start || (runner && runner->exited()); }
};

}  // namespace

struct Worker::Impl {
  WorkerOptions opt;
  Inventory inv;
  std::string work_dir;  // absolute
  zmq::context_t ctx{1};
  std::optional<zmq::socket_t> socket;
  bool welcomed = false;
  int heartbeat_ms;
  int64_t now = 0, last_heard_ms = 0, next_beat_ms = 0;
  std::string coordinator_id;
  std::map<AttemptKey, Attempt> attempts;
  bool draining = false, exit_when_idle = false, shutting_down = false;
  int64_t shutdown_deadline_ms = 0;

  explicit Impl(WorkerOptions o) : opt(std::move(o)), heartbeat_ms(opt.heartbeat_ms) {
    inv = detect_inventory(opt.gpus, opt.slots);
    if (opt.hylab_bin.empty()) opt.hylab_bin = self_exe();
    if (opt.worker_id.empty()) {
      std::random_device rd;
      opt.worker_id = fmt::format("{}:{}:{:04x}", inv.host, getpid(), rd() & 0xffff);
    }
    fs::create_directories(opt.work_dir);
    work_dir = fs::canonical(opt.work_dir).string();
    spdlog::info("worker {}: {} slots ({}), work_dir {}, coordinator {} ({})", opt.worker_id,
                 inv.slots, inv.gpus.empty() ? "CPU" : std::to_string(inv.gpus.size()) + " GPUs",
                 work_dir, opt.coordinator, opt.security.insecure ? "INSECURE plain TCP" : "CurveZMQ");
    now = steady_ms();
    connect();
  }

  // ---- connection ----

  void connect() {
    if (socket) socket->close();
    socket.emplace(ctx, zmq::socket_type::dealer);
    socket->set(zmq::sockopt::linger, 0);
    socket->set(zmq::sockopt::routing_id, opt.worker_id);
    socket->set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(wire::kMaxMessageBytes));
    socket->set(zmq::sockopt::sndhwm, 100000);
    wire::apply_client(*socket, opt.security);
    try {
      socket->connect(opt.coordinator);
    } catch (const zmq::error_t& e) {
      HYLAB_FAIL("cannot connect to {}: {} (expected e.g. tcp://HOST:5555)", opt.coordinator, e.what());
    }
    welcomed = false;
    last_heard_ms = now;
    send_hello();
  }

  void send(proto::Envelope env) { send_bytes(wire::encode(std::move(env), opt.worker_id)); }

  void send_bytes(const std::string& bytes) {
    try {
      if (!socket->send(zmq::buffer(bytes), zmq::send_flags::dontwait)) {
        spdlog::warn("send queue to the coordinator is full; message dropped (will be retried)");
      }
    } catch (const zmq::error_t& e) {
      spdlog::warn("send to the coordinator failed: {}", e.what());
    }
  }

  void fill_held(google::protobuf::RepeatedPtrField<proto::HeldTrial>* held) {
    for (const auto& [key, a] : attempts) {
      auto* h = held->Add();
      h->set_trial_id(key.first);
      h->set_attempt(key.second);
      for (int s : a.slots) h->add_slots(s);
      h->set_finished(a.done());
      h->set_node_rank(a.assign.node_rank());
    }
  }

  void send_hello() {
    proto::Envelope env;
    auto* h = env.mutable_hello();
    h->set_worker_id(opt.worker_id);
    h->set_host(inv.host);
    h->set_pid(getpid());
    for (const auto& g : inv.gpus) {
      auto* pg = h->add_gpus();
      pg->set_index(g.index);
      pg->set_name(g.name);
      pg->set_mem_gib(g.mem_gib);
    }
    h->set_slots(inv.slots);
    h->set_mem_gib(inv.mem_gib);
    h->set_cpus(inv.cpus);
    h->set_draining(draining || shutting_down);
    h->set_work_dir(work_dir);
    fill_held(h->mutable_held());
    send(env);
    next_beat_ms = now + heartbeat_ms;
  }

  // Sends again the metrics batches unacknowledged for at least `metrics_after_ms` and the
  // Finished message unacknowledged for at least `finished_after_ms`. The one retransmit
  // loop: a new session (Welcome) passes 0, the heartbeat passes its patience.
  void retransmit(Attempt& a, int64_t metrics_after_ms, int64_t finished_after_ms) {
    for (auto& [seq, u] : a.unacked) {
      if (now - u.sent_ms >= metrics_after_ms) {
        send_bytes(u.bytes);
        u.sent_ms = now;
      }
    }
    if (a.finished && now - a.finished->sent_ms >= finished_after_ms) {
      send_bytes(a.finished->bytes);
      a.finished->sent_ms = now;
    }
  }

  void on_welcome(const proto::Welcome& w) {
    const bool restarted = !coordinator_id.empty() && coordinator_id != w.coordinator_id();
    welcomed = true;
    heartbeat_ms = w.heartbeat_ms();
    coordinator_id = w.coordinator_id();
    spdlog::info("registered with coordinator {}{} (heartbeat {} ms)", coordinator_id,
                 restarted ? " (it restarted)" : "", heartbeat_ms);
    // Everything not acknowledged goes again, in order.
    for (auto& [key, a] : attempts) retransmit(a, 0, 0);  // a new session: everything unacked
  }

  // ---- messages from the coordinator ----

  void handle(const proto::Envelope& env) {
    using E = proto::Envelope;
    switch (env.kind_case()) {
      case E::kWelcome: on_welcome(env.welcome()); break;
      case E::kHeartbeat: break;
      case E::kReregister:
        spdlog::info("the coordinator does not know this worker (it restarted?): registering again");
        welcomed = false;
        send_hello();
        break;
      case E::kAssign: on_assign(env.assign()); break;
      case E::kCancel: on_cancel(env.cancel()); break;
      case E::kMetricsAck: {
        auto it = attempts.find({env.metrics_ack().trial_id(), env.metrics_ack().attempt()});
        if (it != attempts.end()) it->second.unacked.erase(env.metrics_ack().seq());
        break;
      }
      case E::kFinishedAck: {
        const AttemptKey key{env.finished_ack().trial_id(), env.finished_ack().attempt()};
        auto it = attempts.find(key);
        if (it != attempts.end() && it->second.finished) {
          spdlog::info("trial {} attempt {}: outcome delivered", key.first, key.second);
          attempts.erase(it);
        }
        break;
      }
      case E::kDrain:
        draining = true;
        exit_when_idle = env.drain().exit_when_idle();
        spdlog::info("draining: no new trials{}", exit_when_idle ? "; exiting once idle" : "");
        break;
      case E::kRendezvous: on_rendezvous(env.rendezvous()); break;
      default:
        spdlog::warn("dropped a {} message: the coordinator does not send it", wire::kind_name(env));
    }
  }

  std::set<int> busy_slots() const {
    std::set<int> busy;
    for (const auto& [k, a] : attempts) busy.insert(a.slots.begin(), a.slots.end());
    return busy;
  }

  void on_assign(const proto::Assign& as) {
    const AttemptKey key{as.trial_id(), as.attempt()};
    if (auto it = attempts.find(key); it != attempts.end()) {
      if (it->second.runner && it->second.runner->started()) send_started(it->second);
      return;  // a repeat
    }
    Attempt a;
    a.assign = as;
    a.slots.assign(as.slots().begin(), as.slots().end());
    const std::set<int> busy = busy_slots();
    for (int s : a.slots) {
      if (s < 0 || s >= inv.slots || busy.count(s)) {
        a.failed_to_start = ExitInfo{proto::TRIAL_OUTCOME_PREEMPTED, 0,
                                     fmt::format("slot {} is not free on worker {}", s, opt.worker_id)};
      }
    }
    if (draining || shutting_down) {
      a.failed_to_start = ExitInfo{proto::TRIAL_OUTCOME_PREEMPTED, 0, "the worker is draining"};
    }
    LaunchSpec& spec = a.spec;
    spec.trial_id = as.trial_id();
    spec.attempt = as.attempt();
    spec.run_dir = (fs::path(work_dir) / as.run_dir()).lexically_normal().string();
    if (const std::string escape = run_dir_escape(work_dir, as.run_dir()); !escape.empty()) {
      spdlog::error("trial {} attempt {}: {}", as.trial_id(), as.attempt(), escape);
      a.failed_to_start = ExitInfo{proto::TRIAL_OUTCOME_FAILED, 0, escape};
    }
    spec.config_json = as.config_json();
    spec.resume = as.resume();
    spec.nproc = static_cast<int>(a.slots.size());
    spec.hylab_bin = opt.hylab_bin;
    if (!inv.gpus.empty()) {
      for (int s : a.slots) {
        if (s >= 0 && s < static_cast<int>(inv.gpus.size())) spec.gpu_indices.push_back(inv.gpus[s].index);
      }
    }
    if (spec.resume && !a.failed_to_start) {
      // The newest checkpoint on disk, which may be newer than the last checkpoint record the
      // coordinator heard of: the trainer loads exactly this one, and the earlier attempts'
      // records are relayed up to its step.
      const CheckpointRef ck = newest_checkpoint(spec.run_dir);
      if (ck.step < 0) {
        spdlog::warn("trial {} attempt {}: asked to resume, but {}/checkpoints holds no complete "
                     "checkpoint (no shared work_dir?); starting from step 0",
                     spec.trial_id, spec.attempt, spec.run_dir);
        spec.resume = false;
      } else {
        spec.resume_step = ck.step;
        replay_earlier_spools(a);
      }
    }
    a.tail = std::make_unique<MetricsTail>(spec.run_dir + "/metrics.a" + std::to_string(spec.attempt) + ".jsonl");
    if (as.num_nodes() > 1) {
      spec.env["HYLAB_NODE_RANK"] = std::to_string(as.node_rank());
      spec.env["HYLAB_NUM_NODES"] = std::to_string(as.num_nodes());
      if (as.node_rank() == 0 && !a.failed_to_start) {
        const std::string payload = inv.host + ":" + std::to_string(free_tcp_port());
        spec.env["HYLAB_RENDEZVOUS"] = payload;
        proto::Envelope env;
        env.mutable_rendezvous()->set_trial_id(as.trial_id());
        env.mutable_rendezvous()->set_attempt(as.attempt());
        env.mutable_rendezvous()->set_payload(payload);
        send(env);
      } else {
        a.waiting_rendezvous = true;
      }
    }
    auto [it, inserted] = attempts.emplace(key, std::move(a));
    if (!it->second.failed_to_start && !it->second.waiting_rendezvous) launch(it->second);
  }

  // Records of earlier attempts up to the checkpoint the trainer resumes from (relayed_metrics):
  // what came before must reach the coordinator even if the earlier worker died before
  // delivering it. The coordinator stores each (name, step) once.
  void replay_earlier_spools(Attempt& a) {
    const auto sorted = relayed_metrics(a.spec.run_dir, a.spec.attempt, a.spec.resume_step);
    a.prelude.assign(sorted.begin(), sorted.end());
    if (!sorted.empty()) {
      spdlog::info("trial {} attempt {}: relaying {} records of earlier attempts", a.spec.trial_id,
                   a.spec.attempt, sorted.size());
    }
  }

  void launch(Attempt& a) {
    a.runner = std::make_unique<TrialRunner>(a.spec);
    try {
      a.runner->start();
    } catch (const std::exception& e) {
      spdlog::error("trial {} attempt {}: cannot start the trainer: {}", a.spec.trial_id, a.spec.attempt, e.what());
      a.failed_to_start = ExitInfo{proto::TRIAL_OUTCOME_FAILED, 0, std::string("cannot start: ") + e.what()};
      return;
    }
    send_started(a);
  }

  void send_started(const Attempt& a) {
    proto::Envelope env;
    auto* s = env.mutable_started();
    s->set_trial_id(a.spec.trial_id);
    s->set_attempt(a.spec.attempt);
    s->set_pid(a.runner->pid());
    s->set_run_dir(a.spec.run_dir);
    send(env);
  }

  void on_rendezvous(const proto::Rendezvous& r) {
    auto it = attempts.find({r.trial_id(), r.attempt()});
    if (it == attempts.end() || !it->second.waiting_rendezvous) return;
    it->second.waiting_rendezvous = false;
    it->second.spec.env["HYLAB_RENDEZVOUS"] = r.payload();
    launch(it->second);
  }

  void on_cancel(const proto::Cancel& c) {
    auto it = attempts.find({c.trial_id(), c.attempt()});
    if (it == attempts.end()) return;
    Attempt& a = it->second;
    spdlog::info("trial {} attempt {}: cancel ({})", c.trial_id(), c.attempt(), c.reason());
    if (a.runner && a.runner->started()) {
      a.runner->cancel(now, opt.kill_grace_ms, false);
    } else if (!a.failed_to_start) {
      a.failed_to_start = ExitInfo{proto::TRIAL_OUTCOME_CANCELLED, 0, "cancelled before it started"};
    }
  }

  // ---- attempts ----

  // Sends new records of one attempt while the window allows; then, once the trainer has
  // exited and everything is acknowledged, its Finished.
  void pump(Attempt& a) {
    if (a.runner) a.runner->poll(now);
    if (!welcomed) return;
    while (a.unacked.size() < kWindow && a.tail) {
      const bool exited_before_read = a.done();
      proto::Envelope env;
      auto* b = env.mutable_metrics();
      b->set_trial_id(a.spec.trial_id);
      b->set_attempt(a.spec.attempt);
      while (!a.prelude.empty() && b->metrics_size() < wire::kMaxMetricsPerBatch) {
        *b->add_metrics() = a.prelude.front();
        a.prelude.pop_front();
      }
      const size_t room = static_cast<size_t>(wire::kMaxMetricsPerBatch - b->metrics_size());
      const auto records = room > 0 ? a.tail->read(room) : std::vector<Record>{};
      for (const auto& r : records) {
        if (r.kind == Record::Kind::kMetric) *b->add_metrics() = r.metric;
        else if (r.kind == Record::Kind::kCheckpoint) b->set_checkpoint_step(std::max(b->checkpoint_step(), r.step));
        else *b->mutable_summary() = r.summary;
      }
      if (b->metrics_size() == 0 && !b->has_summary() && b->checkpoint_step() < 0) {
        if (exited_before_read && a.prelude.empty()) a.drained = true;
        break;
      }
      b->set_seq(a.next_seq++);
      Unacked u{wire::encode(env, opt.worker_id), now};
      send_bytes(u.bytes);
      a.unacked[b->seq()] = std::move(u);
    }
    if (a.failed_to_start) a.drained = a.drained || a.prelude.empty();
    if (a.done() && a.drained && a.unacked.empty() && !a.finished) {
      ExitInfo e = a.failed_to_start ? *a.failed_to_start : a.runner->exit_info();
      if (e.outcome == proto::TRIAL_OUTCOME_BAD_CONFIG && a.runner) {
        const std::string why = config_error_of(a.runner->log_tail());
        if (!why.empty()) e.reason += ": " + why;
      }
      proto::Envelope env;
      auto* f = env.mutable_finished();
      f->set_trial_id(a.spec.trial_id);
      f->set_attempt(a.spec.attempt);
      f->set_outcome(e.outcome);
      f->set_exit_code(e.exit_code);
      f->set_reason(e.reason);
      if (a.runner && e.outcome != proto::TRIAL_OUTCOME_SUCCEEDED) f->set_log_tail(a.runner->log_tail());
      a.finished = Unacked{wire::encode(env, opt.worker_id), now};
      send_bytes(a.finished->bytes);
      spdlog::info("trial {} attempt {} finished: {} (exit {}){}", a.spec.trial_id, a.spec.attempt,
                   proto::TrialOutcome_Name(e.outcome), e.exit_code, e.reason.empty() ? "" : ": " + e.reason);
    }
  }

  void periodic() {
    if (now < next_beat_ms) return;
    next_beat_ms = now + heartbeat_ms;
    if (!welcomed) {
      send_hello();
      return;
    }
    proto::Envelope env;
    fill_held(env.mutable_heartbeat()->mutable_held());
    send(env);
    // Retransmit what stayed unacknowledged too long (a lost ack, a rolled-back iteration).
    for (auto& [key, a] : attempts) retransmit(a, 5 * heartbeat_ms + 1, heartbeat_ms + 1);
  }

  int run(const std::atomic<bool>& stop) {
    next_beat_ms = steady_ms();
    while (true) {
      zmq::pollitem_t items[] = {{socket->handle(), 0, ZMQ_POLLIN, 0}};
      wire::poll(items, 1, std::max(5, std::min(100, heartbeat_ms / 4)));
      now = steady_ms();
      while (items[0].revents & ZMQ_POLLIN) {
        zmq::message_t msg;
        if (!socket->recv(msg, zmq::recv_flags::dontwait)) break;
        last_heard_ms = now;
        std::string error;
        auto env = wire::decode(msg.data(), msg.size(), &error);
        if (!env) {
          spdlog::warn("dropped a message from the coordinator: {}", error);
          continue;
        }
        try {
          handle(*env);
        } catch (const std::exception& e) {
          spdlog::error("dropped a {} message: {}", wire::kind_name(*env), e.what());
        }
      }
      for (auto& [key, a] : attempts) {
        try {
          pump(a);
        } catch (const std::exception& e) {
          spdlog::error("trial {} attempt {}: {}", key.first, key.second, e.what());
        }
      }
      periodic();
      if (now - last_heard_ms > static_cast<int64_t>(opt.liveness) * heartbeat_ms) {
        spdlog::warn("no word from the coordinator for {} ms: reconnecting", now - last_heard_ms);
        connect();
      }
      if (stop.load() && !shutting_down) {
        shutting_down = true;
        shutdown_deadline_ms = now + opt.shutdown_timeout_ms;
        spdlog::info("stopping: terminating {} trials (preempted), then delivering their outcome", attempts.size());
        for (auto& [key, a] : attempts) {
          if (a.runner && a.runner->started()) a.runner->cancel(now, opt.kill_grace_ms, true);
          else if (!a.failed_to_start) a.failed_to_start = ExitInfo{proto::TRIAL_OUTCOME_PREEMPTED, 0, "the worker shut down"};
        }
      }
      if (shutting_down && (attempts.empty() || now > shutdown_deadline_ms)) break;
      if (exit_when_idle && attempts.empty()) {
        spdlog::info("drained and idle: exiting");
        break;
      }
    }
    attempts.clear();  // kills anything left (shutdown timeout)
    return 0;
  }
};

Worker::Worker(WorkerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Worker::~Worker() = default;
int Worker::run(const std::atomic<bool>& stop) { return impl_->run(stop); }
const std::string& Worker::worker_id() const { return impl_->opt.worker_id; }

}  // namespace hylab::worker
