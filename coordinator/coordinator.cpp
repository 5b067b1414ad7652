// The coordinator's loop, sockets and client requests. Worker messages and trial state
// transitions are in trial_book.cpp.
#include "coordinator/coordinator.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>

#include <zmq.hpp>

#include "common/check.h"
#include "common/proto_log.h"
#include "common/run_config.h"
#include "coordinator/coordinator_impl.h"
#include "sweep/sweep_expander.h"
#include "sweep/sweep_spec.h"
#include "wire/wire.h"
#include "store/search_rows.h"

namespace hylab::coordinator {
namespace {

constexpr int kMaxMessagesPerIteration = 1000;
constexpr const char* kZapEndpoint = "inproc://zeromq.zap.01";

int64_t steady_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

std::string random_id() {
  std::random_device rd;
  return fmt::format("{:08x}{:08x}", rd(), rd());
}

}  // namespace

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

Coordinator::Impl::Impl(CoordinatorOptions o, int64_t now_ms) : opt(std::move(o)) {
  limit_protobuf_logs();  // what peers send can make libprotobuf log (proto_log.h)
  liveness.interval_ms = opt.heartbeat_ms;
  liveness.misses = opt.liveness;
  if (opt.recovery_grace_ms <= 0) opt.recovery_grace_ms = 4 * opt.liveness * opt.heartbeat_ms;
  coordinator_id = random_id();
  store = store::Store::open(opt.db_path);
  now = now_ms;
  next_heartbeat_ms = now_ms;
  load_state();
}

// The sockets of the daemon: the ROUTER every peer talks to and the ZAP handler that checks
// CurveZMQ keys. Only Coordinator::run touches them.
struct Coordinator::Net {
  zmq::context_t ctx{1};
  zmq::socket_t router{ctx, zmq::socket_type::router};
  std::optional<zmq::socket_t> zap;
  std::string endpoint;
  LogLimit log_limit;  // peers can provoke these lines

  void bind(const CoordinatorOptions& opt, const std::string& coordinator_id);
  void handle_zap(const wire::Security& security);
  bool read(Inbound* m, bool insecure);  // false when nothing is waiting
  void write(const std::vector<Outgoing>& out);
};

void Coordinator::Net::bind(const CoordinatorOptions& opt, const std::string& coordinator_id) {
  if (!opt.security.insecure) {
    // The ZAP handler must exist before the CURVE socket binds, or libzmq lets everyone in.
    zap.emplace(ctx, zmq::socket_type::rep);
    zap->set(zmq::sockopt::linger, 0);
    zap->bind(kZapEndpoint);
  }
  router.set(zmq::sockopt::linger, 0);
  router.set(zmq::sockopt::router_mandatory, true);   // unroutable sends fail instead of vanishing
  router.set(zmq::sockopt::router_handover, true);    // a re-registering worker takes its id over
  router.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(wire::kMaxMessageBytes));
  // Pending TCP connections (libzmq's default is 100). After a restart every worker connects
  // at once; past the backlog the kernel drops their SYNs and each retries a second later
  // (bench load, 300 workers starting together: 9-36 of them registered ~1 s late, which was
  // the p99). The kernel caps it at net.core.somaxconn.
  router.set(zmq::sockopt::backlog, 4096);
  wire::apply_server(router, opt.security);
  wire::check_bind(opt.bind, opt.security);  // insecure: loopback only unless told
  try {
    router.bind(opt.bind);
  } catch (const zmq::error_t& e) {
    HYLAB_FAIL("cannot bind {}: {} (expected e.g. tcp://*:5555; is the port in use?)", opt.bind, e.what());
  }
  endpoint = router.get(zmq::sockopt::last_endpoint);
  if (!opt.endpoint_file.empty()) {
    const std::string tmp = opt.endpoint_file + ".tmp";
    {
      std::ofstream out(tmp);
      out << endpoint << "\n";
    }
    std::filesystem::rename(tmp, opt.endpoint_file);
  }
  spdlog::info("coordinator {} listening on {} ({}), database {}", coordinator_id, endpoint,
               opt.security.insecure ? "INSECURE plain TCP" : "CurveZMQ, " +
               std::to_string(opt.security.allow.size()) + " allowed keys", opt.db_path);
}

void Coordinator::Impl::load_sweep(const store::SweepRow& row) {
  SweepInfo s;
  s.row = row;
  s.early_stop = early_stop_from_json(row.early_stop_json);
  s.minimize = row.metric_goal != "maximize";
  if (!s.early_stop.type().empty()) {
    for (auto& [trial_id, pts] : store->metric_series(row.sweep_id, row.metric_name)) {
      s.series[trial_id] = std::move(pts);
    }
  }
  load_search(s);
  sweeps[row.sweep_id] = std::move(s);
  for (const auto& tr : store->active_trials(row.sweep_id)) {
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
    auto lost = store->db().prepare("SELECT COUNT(*) FROM trial_attempts WHERE trial_id = ? AND state = ?");
    lost.bind(1, t.trial_id).bind(2, to_string(proto::ATTEMPT_STATE_LOST));
    if (lost.step()) t.losses = static_cast<int>(lost.int64(0));
    if (t.state == proto::TRIAL_STATE_RUNNING) {
      // Its workers will say whether they still hold it.
      t.recover_deadline_ms = now + opt.recovery_grace_ms;
      t.recover_worker = tr.worker_id;
      t.assigned_ms = now;
    }
    trials[t.trial_id] = std::move(t);
  }
}

void Coordinator::Impl::load_state() {
  int recovered = 0;
  for (const auto& row : store->sweeps(proto::SWEEP_STATE_RUNNING)) load_sweep(row);
  for (const auto& [id, t] : trials) recovered += t.state == proto::TRIAL_STATE_RUNNING;
  {
    store::Tx tx(store->db());
    // Workers must register again with this coordinator.
    store->db()
        .prepare("UPDATE workers SET state = ?1 WHERE state != ?1")
        .bind(1, to_string(proto::WORKER_STATE_LOST))
        .run();
    for (const auto& [id, s] : sweeps) finish_sweep_if_done(id);
    tx.commit();
  }
  spdlog::info("loaded {} running sweeps, {} active trials ({} were running: waiting up to {} ms "
               "for their workers)", sweeps.size(), trials.size(), recovered, opt.recovery_grace_ms);
}

void Coordinator::Impl::send(const std::string& routing_id, proto::Envelope env, bool delimiter) {
  outbox.push_back({routing_id, delimiter, wire::encode(std::move(env), "coordinator")});
}

void Coordinator::Net::write(const std::vector<Outgoing>& out) {
  for (const auto& m : out) {
    try {
      router.send(zmq::buffer(m.routing_id), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
      if (m.delimiter) router.send(zmq::message_t(), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
      router.send(zmq::buffer(m.payload), zmq::send_flags::dontwait);
    } catch (const zmq::error_t& e) {
      log_limit.warn("send failed", steady_ms(), fmt::format("cannot send to {}: {} (peer gone?)", m.routing_id, e.what()));
    }
  }
}

void Coordinator::Net::handle_zap(const wire::Security& security) {
  std::vector<std::string> req;
  while (true) {
    zmq::message_t part;
    if (!zap->recv(part, zmq::recv_flags::dontwait)) break;
    req.push_back(part.to_string());
    if (!part.more()) break;
  }
  std::string log;
  const auto reply = wire::zap_reply(req, security.allow, &log);
  if (!log.empty()) log_limit.warn("ZAP", steady_ms(), "ZAP: " + log);
  for (size_t i = 0; i < reply.size(); ++i) {
    zap->send(zmq::buffer(reply[i]), i + 1 < reply.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
  }
}

bool Coordinator::Net::read(Inbound* m, bool insecure) {
  while (true) {
    std::vector<zmq::message_t> frames;
    while (true) {
      zmq::message_t part;
      if (!router.recv(part, zmq::recv_flags::dontwait)) break;
      const bool more = part.more();
      frames.push_back(std::move(part));
      if (!more) break;
    }
    if (frames.empty()) return false;
    // [routing id][payload] from DEALER peers, [routing id][empty][payload] from REQ peers.
    m->routing_id = frames[0].to_string();
    m->delimiter = frames.size() == 3 && frames[1].size() == 0;
    if (!(frames.size() == 2 || m->delimiter)) {
      log_limit.warn("frames", steady_ms(), fmt::format("dropped a message of {} frames from peer \"{}\": "
                                                        "expected [id][payload]", frames.size(), m->routing_id));
      continue;
    }
    zmq::message_t& payload = frames.back();
    m->user_id.clear();
    try {
      if (!insecure) m->user_id = payload.gets("User-Id");
    } catch (const zmq::error_t&) {
    }
    m->payload = payload.to_string();
    return true;
  }
}

void Coordinator::Impl::handle_inbound(const Inbound& m) {
  std::string error;
  auto env = wire::decode(m.payload.data(), m.payload.size(), &error);
  if (!env) {
    log_limit.warn("undecodable", now, fmt::format("dropped a message from peer \"{}\": {}", m.routing_id, error));
    return;
  }
  // A savepoint per message, so that a message that fails leaves the batch's others standing.
  auto& db = store->db();
  db.cached("SAVEPOINT message").run();
  const size_t outbox_mark = outbox.size();
  try {
    dispatch(*env, m.routing_id, m.delimiter, m.user_id);
    db.cached("RELEASE message").run();
  } catch (const std::exception& e) {
    log_limit.warn("message failed", now, fmt::format("dropped a {} message from {}: {}", wire::kind_name(*env),
                                                      env->sender(), e.what()));
    outbox.resize(outbox_mark);
    db.exec("ROLLBACK TO message");
    db.exec("RELEASE message");
  }
}

void Coordinator::Impl::dispatch(const proto::Envelope& env, const std::string& routing_id,
                                 bool delimiter, const std::string& user_id) {
  using E = proto::Envelope;
  if (env.kind_case() != E::kMetrics) all_slots_busy = false;  // it may free a slot (schedule())
  if (env.kind_case() == E::kRequest) {
    handle_request(env.request(), routing_id, delimiter);
    return;
  }
  if (routing_id != env.sender()) {
    log_limit.warn("sender mismatch", now, fmt::format("dropped a {} message: sender \"{}\" differs from its "
                                                       "connection id \"{}\"", wire::kind_name(env), env.sender(),
                                                       routing_id));
    return;
  }
  if (env.kind_case() == E::kHello) {
    on_hello(env.hello(), user_id);
    return;
  }
  auto it = workers.find(env.sender());
  if (it == workers.end()) {
    // Not registered with this coordinator (e.g. it restarted): ask for a Hello, drop this.
    auto [asked, fresh] = reregister_asked.try_emplace(env.sender(), now - opt.heartbeat_ms);
    if (now - asked->second >= opt.heartbeat_ms) {
      asked->second = now;
      proto::Envelope r;
      r.set_reregister(true);
      send(routing_id, r);
      log_limit.warn("unregistered peer", now, fmt::format("{} from unregistered worker {}: asked it to register",
                                                           wire::kind_name(env), env.sender()));
    }
    return;
  }
  WorkerInfo& w = it->second;
  // The identity belongs to the key it registered with: another key cannot speak for it.
  if (w.public_key != user_id) {
    log_limit.warn("wrong key", now, fmt::format("dropped a {} message from {}: sent with another key than the "
                                                 "worker registered with", wire::kind_name(env), w.worker_id));
    return;
  }
  w.last_heard_ms = now;
  switch (env.kind_case()) {
    case E::kHeartbeat: on_heartbeat(w, env.heartbeat()); break;
    case E::kStarted: on_started(w, env.started()); break;
    case E::kMetrics: on_metrics(w, env.metrics()); break;
    case E::kFinished: on_finished(w, env.finished()); break;
    case E::kRendezvous: on_rendezvous(w, env.rendezvous()); break;
    default:
      log_limit.warn("bad kind", now, fmt::format("dropped a {} message from worker {}: workers do not send it",
                                                  wire::kind_name(env), w.worker_id));
  }
}

void Coordinator::Impl::handle_request(const proto::ClientRequest& req, const std::string& routing_id,
                                       bool delimiter) {
  proto::Envelope env;
  auto* reply = env.mutable_reply();
  reply->set_request_id(req.request_id());
  reply->set_ok(true);
  try {
    switch (req.kind_case()) {
      case proto::ClientRequest::kSubmitSweep: reply->set_json(submit_sweep(req.submit_sweep())); break;
      case proto::ClientRequest::kListSweeps: list_sweeps(req, reply); break;
      case proto::ClientRequest::kShowSweep: show_sweep(req, reply); break;
      case proto::ClientRequest::kCancelSweep: reply->set_json(cancel_sweep(req.cancel_sweep())); break;
      case proto::ClientRequest::kResumeSweep: reply->set_json(resume_sweep(req.resume_sweep())); break;
      case proto::ClientRequest::kListWorkers: list_workers(req, reply); break;
      case proto::ClientRequest::kExtendSweep: reply->set_json(extend_sweep(req.extend_sweep())); break;
      case proto::ClientRequest::kSuggestSweep: reply->set_json(suggest_sweep(req.suggest_sweep())); break;
      case proto::ClientRequest::kDrainWorker: {
        auto it = workers.find(req.drain_worker());
        if (it == workers.end()) HYLAB_FAIL("no registered worker {}", req.drain_worker());
        it->second.draining = true;
        store->set_worker_state(it->first, proto::WORKER_STATE_DRAINING);
        proto::Envelope d;
        d.mutable_drain()->set_exit_when_idle(true);
        send(it->first, d);
        reply->set_json(nlohmann::json{{"worker_id", it->first}, {"state", to_string(proto::WORKER_STATE_DRAINING)}}.dump());
        break;
      }
      default: HYLAB_FAIL("unknown request");
    }
    // The lists are built in pages under this limit (client_pages.cpp); this guards the rest.
    const int64_t limit = max_reply_bytes();
    if (static_cast<int64_t>(reply->json().size()) > limit) {
      HYLAB_FAIL("the answer is {:.1f} MiB, over the {:.1f} MiB a reply may carry",
                 static_cast<double>(reply->json().size()) / (1 << 20), static_cast<double>(limit) / (1 << 20));
    }
  } catch (const std::exception& e) {
    // Roll back this request's writes but answer the client with the reason.
    store->db().exec("ROLLBACK TO message");
    reply->set_ok(false);
    reply->set_error(dynamic_cast<const Error*>(&e) ? e.what() : std::string("internal error: ") + e.what());
    reply->clear_json();
  }
  send(routing_id, env, delimiter);
}

std::string Coordinator::Impl::submit_sweep(const proto::SubmitSweep& s) {
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
  const int64_t sweep_id = store->create_sweep(row, std::move(rows));
  store::set_sweep_search_json(store->db(), sweep_id, s.search_json());
  load_sweep(store->sweep(sweep_id));
  spdlog::info("sweep {} ({}) submitted: {} trials, {} slots each", sweep_id, row.name,
               s.trials_size(), row.gpus_per_trial);
  return nlohmann::json{{"sweep_id", sweep_id}, {"trials", s.trials_size()}}.dump();
}

std::string Coordinator::Impl::cancel_sweep(int64_t sweep_id) {
  const store::SweepRow row = store->sweep(sweep_id);
  if (row.state != proto::SWEEP_STATE_RUNNING) {
    HYLAB_FAIL("sweep {} is {}, not running", sweep_id, to_string(row.state));
  }
  std::vector<int64_t> ids;
  for (const auto& [id, t] : trials) {
    if (t.sweep_id == sweep_id) ids.push_back(id);
  }
  for (int64_t id : ids) stop_trial(id, proto::TRIAL_STATE_CANCELLED, "sweep cancelled");
  store->set_sweep_state(sweep_id, proto::SWEEP_STATE_CANCELLED);
  sweeps.erase(sweep_id);
  spdlog::info("sweep {} cancelled ({} trials stopped or dequeued)", sweep_id, ids.size());
  return nlohmann::json{{"sweep_id", sweep_id}, {"state", to_string(proto::SWEEP_STATE_CANCELLED)}, {"trials_cancelled", ids.size()}}.dump();
}

std::string Coordinator::Impl::resume_sweep(int64_t sweep_id) {
  const store::SweepRow row = store->sweep(sweep_id);
  int n = 0;
  for (const auto& t : store->trials_of(sweep_id)) {
    if (t.state != proto::TRIAL_STATE_FAILED && t.state != proto::TRIAL_STATE_CANCELLED) continue;
    if (trials.count(t.trial_id)) continue;
    store->set_trial_state(t.trial_id, proto::TRIAL_STATE_PENDING, 0, "resumed");
    store::add_event(store->db(), "trial_resumed", "", sweep_id, t.trial_id);
    ++n;
  }
  if (n == 0 && row.state != proto::SWEEP_STATE_RUNNING) {
    HYLAB_FAIL("sweep {} has no failed or cancelled trials to run again", sweep_id);
  }
  if (row.state != proto::SWEEP_STATE_RUNNING) store->set_sweep_state(sweep_id, proto::SWEEP_STATE_RUNNING);
  // Reload the sweep's active trials (keeps those already known).
  auto kept = trials;
  load_sweep(store->sweep(sweep_id));
  for (auto& [id, t] : kept) trials[id] = std::move(t);
  spdlog::info("sweep {} resumed: {} trials pending again", sweep_id, n);
  return nlohmann::json{{"sweep_id", sweep_id}, {"state", to_string(proto::SWEEP_STATE_RUNNING)}, {"trials_resumed", n}}.dump();
}

void Coordinator::Impl::reload() {
  workers.clear();
  trials.clear();
  sweeps.clear();
  reregister_asked.clear();
  outbox.clear();
  all_slots_busy = false;
  load_state();
}

std::vector<Outgoing> Coordinator::Impl::step(const std::vector<Inbound>& in, int64_t now_ms) {
  now = now_ms;
  if (needs_reload) {
    try {
      reload();
      needs_reload = false;
    } catch (const std::exception& e) {
      spdlog::error("reloading state from the database failed: {}; trying again", e.what());
      return {};
    }
  }
  const bool tick = now >= next_heartbeat_ms;
  if (in.empty() && !tick) return {};
  try {
    store::Tx tx(store->db());
    for (const auto& m : in) handle_inbound(m);
    if (tick) {
      periodic();
      next_heartbeat_ms = now + opt.heartbeat_ms;
      all_slots_busy = false;
    }
    check_early_stop();
    propose_search_trials();
    if (!all_slots_busy || now >= cooldown_over_ms) schedule();
    if (before_commit) before_commit();
    tx.commit();
  } catch (const std::exception& e) {
    // The database refused a write or the commit: nothing of this iteration happened. Memory
    // went ahead of the database, so it is rebuilt from it, as after a restart: workers are
    // asked to register again and list what they hold; peers retransmit what was not acked.
    spdlog::error("event loop iteration rolled back: {}; reloading state from the database", e.what());
    outbox.clear();
    needs_reload = true;
    try {
      reload();
      needs_reload = false;
    } catch (const std::exception& e2) {
      spdlog::error("reloading state from the database failed: {}; trying again", e2.what());
    }
    return {};
  }
  std::vector<Outgoing> out;
  out.swap(outbox);
  return out;
}

Coordinator::Coordinator(CoordinatorOptions options)
    : impl_(std::make_unique<Impl>(std::move(options), steady_ms())), net_(std::make_unique<Net>()) {
  net_->bind(impl_->opt, impl_->coordinator_id);
}

Coordinator::~Coordinator() = default;

void Coordinator::run(const std::atomic<bool>& stop) {
  Impl& core = *impl_;
  Net& net = *net_;
  const bool insecure = core.opt.security.insecure;
  while (!stop.load()) {
    std::vector<zmq::pollitem_t> items = {{net.router.handle(), 0, ZMQ_POLLIN, 0}};
    if (net.zap) items.push_back({net.zap->handle(), 0, ZMQ_POLLIN, 0});
    const int timeout = std::max(5, std::min(100, core.opt.heartbeat_ms / 4));
    wire::poll(items.data(), items.size(), timeout);
    if (net.zap && (items[1].revents & ZMQ_POLLIN)) net.handle_zap(core.opt.security);
    std::vector<Inbound> in;
    if (items[0].revents & ZMQ_POLLIN) {
      Inbound m;
      while (static_cast<int>(in.size()) < kMaxMessagesPerIteration && net.read(&m, insecure)) {
        in.push_back(std::move(m));
      }
    }
    net.write(core.step(in, steady_ms()));
  }
  spdlog::info("coordinator stopping; workers keep their trials and re-register on restart");
}

std::string Coordinator::endpoint() const { return net_->endpoint; }

}  // namespace hylab::coordinator
