// The coordinator's driver and daemon: Impl::step routes each message to its book
// (worker_book.h, trial_book.h, sweep_book.h) and commits; Coordinator::run polls the sockets.
#include "coordinator/coordinator.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>

#include <zmq.hpp>

#include "common/check.h"
#include "common/proto_log.h"
#include "coordinator/coordinator_impl.h"
#include "wire/wire.h"

namespace hylab::coordinator {
namespace {

// Messages handled per iteration (one transaction) when only metrics batches wait, or on
// their turn after a batch of slot-changing ones (inbox.h).
constexpr size_t kBulkPerIteration = 256;
// WAL pages between checkpoints: SQLite's automatic interval.
constexpr int64_t kCheckpointPages = 1000;
// Messages read ahead of handling; past it they wait in the socket (and its high-water mark).
constexpr size_t kMaxInbox = 4096;
constexpr const char* kZapEndpoint = "inproc://zeromq.zap.01";

int64_t steady_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

std::string random_id() {
  std::random_device rd;
  return fmt::format("{:08x}{:08x}", rd(), rd());
}

// Applied before anything reads the options: opt is the Impl's first member.
CoordinatorOptions with_defaults(CoordinatorOptions o) {
  limit_protobuf_logs();  // what peers send can make libprotobuf log (proto_log.h)
  if (o.recovery_grace_ms <= 0) o.recovery_grace_ms = 4 * o.liveness * o.heartbeat_ms;
  if (o.io_threads < 1) HYLAB_FAIL("coordinator io_threads = {}: expected at least 1", o.io_threads);
  return o;
}

}  // namespace

Coordinator::Impl::Impl(CoordinatorOptions o, int64_t now_ms)
    : opt(with_defaults(std::move(o))),
      coordinator_id(random_id()),
      store(store::Store::open(opt.db_path)),
      worker_book(BookEnv{opt, *store, log_limit}, coordinator_id, trial_book),
      trial_book(BookEnv{opt, *store, log_limit}, worker_book, sweep_book),
      sweep_book(BookEnv{opt, *store, log_limit}, trial_book, worker_book) {
  next_heartbeat_ms = now_ms;
  store->db().manual_checkpoints();
  load_state(now_ms);
}

void Coordinator::Impl::checkpoint_if_due(bool slot_messages_waiting, int64_t now) {
  const int64_t pages = store->db().wal_pages();
  if (pages < kCheckpointPages || (slot_messages_waiting && pages < 4 * kCheckpointPages)) return;
  try {
    store->db().checkpoint();
  } catch (const std::exception& e) {
    // The WAL keeps the data; the next checkpoint tries again.
    log_limit.warn("checkpoint", now, fmt::format("WAL checkpoint failed: {}", e.what()));
  }
}

// The sockets of the daemon: the ROUTER every peer talks to and the ZAP handler that checks
// CurveZMQ keys. Only Coordinator::run touches them.
struct Coordinator::Net {
  explicit Net(int io_threads) : ctx(io_threads) {}
  zmq::context_t ctx;
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

void Coordinator::Impl::load_state(int64_t now) {
  sweep_book.load_running(now);
  int recovered = 0;
  for (const auto& [id, t] : trial_book.all()) recovered += t.state == proto::TRIAL_STATE_RUNNING;
  {
    store::Tx tx(store->db());
    worker_book.load();  // workers must register again with this coordinator
    trial_book.recover_progress();
    sweep_book.finish_all_done();
    tx.commit();
  }
  spdlog::info("loaded {} running sweeps, {} active trials ({} were running: waiting up to {} ms "
               "for their workers)", sweep_book.all().size(), trial_book.all().size(), recovered,
               opt.recovery_grace_ms);
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

// ---- the driver: route each message to its book ----

void Coordinator::Impl::handle_inbound(const Inbound& m, int64_t now, Effects& fx) {
  std::string error;
  auto env = wire::decode(m.payload.data(), m.payload.size(), &error);
  if (!env) {
    log_limit.warn("undecodable", now, fmt::format("dropped a message from peer \"{}\": {}", m.routing_id, error));
    return;
  }
  // A savepoint per message, so that a message that fails leaves the batch's others standing;
  // what it would have sent goes with it.
  auto& db = store->db();
  db.cached("SAVEPOINT message").run();
  Effects mine;
  try {
    dispatch(*env, m.routing_id, m.delimiter, m.user_id, now, mine);
    db.cached("RELEASE message").run();
    fx.append(std::move(mine));
  } catch (const std::exception& e) {
    log_limit.warn("message failed", now, fmt::format("dropped a {} message from {}: {}", wire::kind_name(*env),
                                                      env->sender(), e.what()));
    db.exec("ROLLBACK TO message");
    db.exec("RELEASE message");
  }
}

void Coordinator::Impl::dispatch(const proto::Envelope& env, const std::string& routing_id,
                                 bool delimiter, const std::string& user_id, int64_t now, Effects& fx) {
  using E = proto::Envelope;
  if (env.kind_case() != E::kMetrics) trial_book.slots_may_have_changed();
  if (env.kind_case() == E::kRequest) {
    handle_request(env.request(), routing_id, delimiter, now, fx);
    return;
  }
  if (routing_id != env.sender()) {
    log_limit.warn("sender mismatch", now, fmt::format("dropped a {} message: sender \"{}\" differs from its "
                                                       "connection id \"{}\"", wire::kind_name(env), env.sender(),
                                                       routing_id));
    return;
  }
  if (env.kind_case() == E::kHello) {
    worker_book.on_hello(env.hello(), user_id, now, fx);
    return;
  }
  if (!worker_book.admit(env, routing_id, user_id, now, fx)) return;
  const std::string& worker_id = env.sender();
  switch (env.kind_case()) {
    case E::kHeartbeat: worker_book.on_heartbeat(worker_id, env.heartbeat(), now, fx); break;
    case E::kStarted: trial_book.on_started(worker_id, env.started(), now, fx); break;
    case E::kMetrics: trial_book.on_metrics(worker_id, env.metrics(), now, fx); break;
    case E::kFinished: trial_book.on_finished(worker_id, env.finished(), now, fx); break;
    case E::kRendezvous: trial_book.on_rendezvous(worker_id, env.rendezvous(), now, fx); break;
    default:
      log_limit.warn("bad kind", now, fmt::format("dropped a {} message from worker {}: workers do not send it",
                                                  wire::kind_name(env), worker_id));
  }
}

void Coordinator::Impl::handle_request(const proto::ClientRequest& req, const std::string& routing_id,
                                       bool delimiter, int64_t now, Effects& fx) {
  proto::Envelope env;
  auto* reply = env.mutable_reply();
  reply->set_request_id(req.request_id());
  reply->set_ok(true);
  try {
    switch (req.kind_case()) {
      case proto::ClientRequest::kSubmitSweep: reply->set_json(sweep_book.submit(req.submit_sweep(), now)); break;
      case proto::ClientRequest::kListSweeps: list_sweeps(req, reply); break;
      case proto::ClientRequest::kShowSweep: show_sweep(req, reply); break;
      case proto::ClientRequest::kCancelSweep: reply->set_json(sweep_book.cancel(req.cancel_sweep(), fx)); break;
      case proto::ClientRequest::kResumeSweep: reply->set_json(sweep_book.resume(req.resume_sweep(), now)); break;
      case proto::ClientRequest::kListWorkers: list_workers(req, now, reply); break;
      case proto::ClientRequest::kExtendSweep: reply->set_json(sweep_book.extend(req.extend_sweep(), now)); break;
      case proto::ClientRequest::kSuggestSweep: reply->set_json(sweep_book.suggest(req.suggest_sweep())); break;
      case proto::ClientRequest::kDrainWorker: reply->set_json(worker_book.drain(req.drain_worker(), fx)); break;
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
  fx.to(routing_id, env, delimiter);
}

void Coordinator::Impl::reload(int64_t now) {
  worker_book.clear();
  trial_book.clear();
  sweep_book.clear();
  load_state(now);
}

std::vector<Outgoing> Coordinator::Impl::step(const std::vector<Inbound>& in, int64_t now) {
  if (needs_reload) {
    try {
      reload(now);
      needs_reload = false;
    } catch (const std::exception& e) {
      spdlog::error("reloading state from the database failed: {}; trying again", e.what());
      return {};
    }
  }
  const bool tick = now >= next_heartbeat_ms;
  if (in.empty() && !tick) return {};
  Effects fx;
  try {
    store::Tx tx(store->db());
    for (const auto& m : in) handle_inbound(m, now, fx);
    if (tick) {
      worker_book.tick(now, fx);  // heartbeats, liveness
      trial_book.tick(now, fx);   // recovered attempts nobody claimed in time
      next_heartbeat_ms = now + opt.heartbeat_ms;
      trial_book.slots_may_have_changed();
    }
    sweep_book.check_early_stop(fx);
    sweep_book.propose();
    if (trial_book.schedule_due(now)) trial_book.schedule(now, fx);
    if (before_commit) before_commit();
    tx.commit();
  } catch (const std::exception& e) {
    // The database refused a write or the commit: nothing of this iteration happened. Memory
    // went ahead of the database, so it is rebuilt from it, as after a restart: workers are
    // asked to register again and list what they hold; peers retransmit what was not acked.
    spdlog::error("event loop iteration rolled back: {}; reloading state from the database", e.what());
    needs_reload = true;
    try {
      reload(now);
      needs_reload = false;
    } catch (const std::exception& e2) {
      spdlog::error("reloading state from the database failed: {}; trying again", e2.what());
    }
    return {};
  }
  return std::move(fx.send);
}

Coordinator::Coordinator(CoordinatorOptions options)
    : impl_(std::make_unique<Impl>(std::move(options), steady_ms())),
      net_(std::make_unique<Net>(impl_->opt.io_threads)) {
  net_->bind(impl_->opt, impl_->coordinator_id);
}

Coordinator::~Coordinator() = default;

void Coordinator::run(const std::atomic<bool>& stop) {
  Impl& core = *impl_;
  Net& net = *net_;
  const bool insecure = core.opt.security.insecure;
  Inbox inbox(kBulkPerIteration);
  while (!stop.load()) {
    std::vector<zmq::pollitem_t> items = {{net.router.handle(), 0, ZMQ_POLLIN, 0}};
    if (net.zap) items.push_back({net.zap->handle(), 0, ZMQ_POLLIN, 0});
    const int timeout = inbox.empty() ? std::max(5, std::min(100, core.opt.heartbeat_ms / 4)) : 0;
    wire::poll(items.data(), items.size(), timeout);
    if (net.zap && (items[1].revents & ZMQ_POLLIN)) net.handle_zap(core.opt.security);
    if (items[0].revents & ZMQ_POLLIN) {
      Inbound m;
      while (inbox.size() < kMaxInbox && net.read(&m, insecure)) inbox.push(std::move(m));
    }
    net.write(core.step(inbox.next_batch(), steady_ms()));
    core.checkpoint_if_due(inbox.has_urgent(), steady_ms());
  }
  spdlog::info("coordinator stopping; workers keep their trials and re-register on restart");
}

std::string Coordinator::endpoint() const { return net_->endpoint; }

}  // namespace hylab::coordinator
