// The load generator (load_bench.h).
#include "sim/load_bench.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <thread>
#include <unordered_map>

#include <zmq.hpp>

#include "common/check.h"
#include "common/metrics.h"
#include "common/run_config.h"
#include "common/spawn.h"
#include "coordinator/coordinator.h"
#include "store/db.h"
#include "wire/client.h"
#include "wire/wire.h"

namespace hylab::sim {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::atomic<bool> g_stop{false};
void on_term(int) { g_stop = true; }

int64_t ms_since(Clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
}

struct LoadWorker {
  std::string id;
  std::unique_ptr<zmq::socket_t> s;
  int64_t free_since = -1;           // ms; -1 while it holds a trial
  bool registering = true;           // free since its Hello (not since a Finished)
  int64_t connect_ms = -1;           // when connect() was called (ms after t0)
  int64_t connected_ms = -1;         // when its connection came up (the socket turned writable)
  double hello_unix_s = 0;           // when its first Hello was sent (system clock)
  int64_t registered_ms = -1;        // its first Assign's latency (from that Hello)
  std::optional<std::pair<int64_t, int64_t>> held;  // (trial_id, attempt)
  int64_t ends_at = 0, next_metric = 0, next_beat = 0, step = 0, seq = 0;
  int64_t sent = 0;                  // messages of every kind
  bool finished_sent = false;
};

// One generator thread's share of the workers (their sockets are used by this thread only:
// ZeroMQ sockets are not thread-safe) and what it measured.
struct Shard {
  std::vector<LoadWorker> ws;
  std::vector<int64_t> latencies;    // ms, slot free -> Assign received
  std::vector<int64_t> freed_at;     // ms after t0: when each of those slots became free
  std::vector<bool> after_hello;     // each of those: free since a Hello (else a Finished)
  std::vector<int64_t> lateness;     // ms, each metric batch and heartbeat: sent - due
  int64_t assigns = 0;
  int64_t metrics_asked = 0;         // batches a punctual generator sends (10 Hz while running)
  int64_t metrics_sent = 0, beats_sent = 0;
  int64_t sends_dropped = 0;         // metric batches refused by a full socket queue
};

// /proc/<pid>: resident set (MiB) and CPU seconds (user + system).
std::pair<double, double> proc_usage(pid_t pid) {
  double rss = 0, cpu = 0;
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) rss = std::stod(line.substr(6)) / 1024.0;
  }
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  std::istringstream rest(all.substr(all.rfind(')') + 2));
  std::vector<std::string> f((std::istream_iterator<std::string>(rest)), std::istream_iterator<std::string>());
  if (f.size() > 13) cpu = (std::stod(f[11]) + std::stod(f[12])) / static_cast<double>(sysconf(_SC_CLK_TCK));
  return {rss, cpu};
}

double percentile(std::vector<int64_t> v, double p) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return static_cast<double>(v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))]);
}

void submit(const std::string& endpoint, int trials) {
  wire::Client client(endpoint, wire::peer_security(true, "", ""), 120'000);
  for (const auto& req : bench_sweep_requests("load", trials)) client.call_json(req);
}

constexpr int64_t kMetricPeriodMs = 100;  // 10 Hz
constexpr int64_t kBeatPeriodMs = 1000;

// False when the socket's queue is full (the coordinator is not reading): the message is lost.
bool send(LoadWorker& w, proto::Envelope env) {
  const std::string b = wire::encode(std::move(env), w.id);
  const bool sent = w.s->send(zmq::buffer(b), zmq::send_flags::dontwait).has_value();
  w.sent += sent;
  return sent;
}

void hello(LoadWorker& w, int64_t now) {
  proto::Envelope env;
  auto* h = env.mutable_hello();
  h->set_worker_id(w.id);
  h->set_host("loopback");
  h->set_slots(1);
  if (w.held) {
    auto* x = h->add_held();
    x->set_trial_id(w.held->first);
    x->set_attempt(w.held->second);
    x->add_slots(0);
    x->set_finished(w.finished_sent);
  }
  send(w, env);
  w.next_beat = now + kBeatPeriodMs;
}

// One generator thread: plays its share of the workers until `end` (ms after t0). It waits
// in zmq::poll on its sockets, so an Assign is timed when it arrives, and sends each metric
// batch and heartbeat when due; a send later than due is recorded as lateness (a generator
// that cannot keep up shows it there, not as coordinator latency alone).
void drive(Shard& sh, zmq::context_t& ctx, const std::string& endpoint, Clock::time_point t0, int64_t end,
           uint64_t seed) {
  std::mt19937_64 rng(seed);
  // A worker says Hello once its connection is up (with `immediate` the socket is writable
  // only when TCP and the ZMTP handshake are done), and its registration is timed from there.
  // The real worker queues its Hello at connect() and libzmq sends it at the same point; the
  // time before it, connection setup, is `registration.connect`, not scheduling.
  for (auto& w : sh.ws) {
    w.s = std::make_unique<zmq::socket_t>(ctx, zmq::socket_type::dealer);
    w.s->set(zmq::sockopt::linger, 0);
    w.s->set(zmq::sockopt::routing_id, w.id);
    w.s->set(zmq::sockopt::sndhwm, 100000);
    w.s->set(zmq::sockopt::immediate, true);
    w.next_beat = std::numeric_limits<int64_t>::max();  // none before the Hello
    w.connect_ms = ms_since(t0);
    w.s->connect(endpoint);
  }
  std::vector<zmq::pollitem_t> items;
  for (auto& w : sh.ws) items.push_back({w.s->handle(), 0, ZMQ_POLLIN | ZMQ_POLLOUT, 0});
  while (true) {
    int64_t now = ms_since(t0);
    if (now >= end) break;
    // Sleep until the next send is due (at most 5 ms), or a message arrives.
    int64_t next_due = now + 5;
    for (const auto& w : sh.ws) {
      next_due = std::min(next_due, w.next_beat);
      if (w.held && !w.finished_sent) next_due = std::min(next_due, std::min(w.next_metric, w.ends_at));
    }
    wire::poll(items.data(), items.size(), static_cast<int>(std::max<int64_t>(0, next_due - now)));
    for (size_t i = 0; i < sh.ws.size(); ++i) {
      LoadWorker& w = sh.ws[i];
      if ((items[i].revents & ZMQ_POLLOUT) && w.connected_ms < 0) {
        w.connected_ms = ms_since(t0);
        w.free_since = w.connected_ms;
        w.hello_unix_s = unix_time_now();
        hello(w, w.free_since);
        items[i].events = ZMQ_POLLIN;  // writable from here on: no longer worth a wake-up
      }
      if (!(items[i].revents & ZMQ_POLLIN)) continue;
      zmq::message_t m;
      while (w.s->recv(m, zmq::recv_flags::dontwait)) {
        std::string err;
        auto env = wire::decode(m.data(), m.size(), &err);
        if (!env) continue;
        if (env->has_assign() && !w.held) {
          const int64_t t = ms_since(t0);
          if (w.free_since >= 0) {
            sh.latencies.push_back(t - w.free_since);
            sh.freed_at.push_back(w.free_since);
            sh.after_hello.push_back(w.registering);
            if (w.registering) w.registered_ms = t - w.free_since;
          }
          ++sh.assigns;
          w.held = {env->assign().trial_id(), env->assign().attempt()};
          w.free_since = -1;
          w.registering = false;
          w.ends_at = t + 2000 + static_cast<int64_t>(rng() % 2000);
          w.next_metric = t + kMetricPeriodMs;
          // What a punctual generator sends for this trial before it ends or the run does.
          sh.metrics_asked += std::max<int64_t>(0, (std::min(w.ends_at, end) - t - 1) / kMetricPeriodMs);
          w.step = 0;
          w.seq = 0;
          w.finished_sent = false;
          proto::Envelope st;
          st.mutable_started()->set_trial_id(w.held->first);
          st.mutable_started()->set_attempt(w.held->second);
          st.mutable_started()->set_pid(1);
          st.mutable_started()->set_run_dir("/load");
          send(w, st);
        } else if (env->has_finished_ack() && w.held && env->finished_ack().trial_id() == w.held->first) {
          w.held.reset();
        } else if (env->has_reregister()) {
          hello(w, ms_since(t0));
        }
      }
    }
    now = ms_since(t0);
    for (auto& w : sh.ws) {
      if (w.held && !w.finished_sent) {
        while (now >= w.next_metric && w.next_metric < w.ends_at && w.next_metric < end) {
          proto::Envelope b;
          auto* mb = b.mutable_metrics();
          mb->set_trial_id(w.held->first);
          mb->set_attempt(w.held->second);
          mb->set_seq(++w.seq);
          auto* x = mb->add_metrics();
          x->set_step(++w.step);
          x->set_name("train_loss");
          x->set_value(1.0 / static_cast<double>(w.step));
          x->set_wall_time(static_cast<double>(now) / 1000.0);
          if (send(w, b)) ++sh.metrics_sent;
          else ++sh.sends_dropped;
          sh.lateness.push_back(now - w.next_metric);
          w.next_metric += kMetricPeriodMs;
        }
        if (now >= w.ends_at) {
          proto::Envelope f;
          f.mutable_finished()->set_trial_id(w.held->first);
          f.mutable_finished()->set_attempt(w.held->second);
          f.mutable_finished()->set_outcome(proto::TRIAL_OUTCOME_SUCCEEDED);
          send(w, f);
          w.finished_sent = true;
          w.free_since = now;  // the slot is free from here on, as far as the worker knows
        }
      }
      if (now >= w.next_beat) {
        sh.lateness.push_back(now - w.next_beat);
        w.next_beat += kBeatPeriodMs;
        if (w.next_beat <= now) w.next_beat = now + kBeatPeriodMs;  // far behind: do not burst
        proto::Envelope hb;
        if (w.held) {
          auto* h = hb.mutable_heartbeat()->add_held();
          h->set_trial_id(w.held->first);
          h->set_attempt(w.held->second);
          h->add_slots(0);
          h->set_finished(w.finished_sent);
        } else {
          hb.mutable_heartbeat();
        }
        send(w, hb);
        ++sh.beats_sent;
      }
    }
  }
  for (auto& w : sh.ws) w.s->close();
}

// Every simulated worker is a socket here and a connection in the coordinator: both
// processes need an open file per worker (plus libzmq's own). Raises the soft limit toward
// the hard one (the child inherits it) and refuses, by name, a count the hard limit cannot
// hold, instead of letting libzmq throw EMFILE in a generator thread.
void ensure_open_files(int n_workers) {
  const rlim_t want = static_cast<rlim_t>(n_workers) + 512;
  struct rlimit rl {};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) HYLAB_FAIL("load bench: getrlimit: {}", std::strerror(errno));
  if (rl.rlim_cur >= want) return;
  rl.rlim_cur = std::min(want, rl.rlim_max);
  if (rl.rlim_cur < want || ::setrlimit(RLIMIT_NOFILE, &rl) != 0) {
    HYLAB_FAIL("load bench: {} workers need about {} open files, but this process may open at most {} "
               "(ulimit -n; raise the hard limit, e.g. `ulimit -Hn {}` as root)",
               n_workers, static_cast<uint64_t>(want), static_cast<uint64_t>(rl.rlim_max),
               static_cast<uint64_t>(want));
  }
}

}  // namespace

std::vector<proto::ClientRequest> bench_sweep_requests(const std::string& name, int trials) {
  std::vector<proto::ClientRequest> out;
  for (int first = 0; first < trials; first += 2000) {
    auto* s = out.emplace_back().mutable_submit_sweep();
    s->set_name(name);
    s->set_gpus_per_trial(1);
    s->set_max_retries(0);
    for (int i = first; i < std::min(trials, first + 2000); ++i) {
      RunConfig cfg;
      cfg.set_seed(i);
      auto* t = s->add_trials();
      t->set_trial_index(i);
      t->set_config_json(config_to_json(resolve_config(cfg), false));
    }
  }
  return out;
}

int default_load_threads() {
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  return std::max(1, std::min(8, cores - 1));
}

nlohmann::json run_load(int n_workers, int seconds, const std::string& folder, int threads, int io_threads,
                        int coordinator_io_threads) {
  const fs::path dir(folder);
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string db = (dir / "hylab.db").string();
  const std::string ep_file = (dir / "endpoint").string();
  ensure_open_files(n_workers);
  const int coord_io =
      coordinator_io_threads > 0 ? coordinator_io_threads : coordinator::CoordinatorOptions{}.io_threads;
  // The coordinator in a child process of its own (forked before this process starts any
  // thread), so its RSS and CPU are its own.
  Process coord = Process::fork_call([&]() -> int {
    // Its log goes to a file of the run (this process's stdout is the JSON).
    if (!std::freopen((dir / "coordinator.log").c_str(), "w", stdout)) std::_Exit(1);
    spdlog::set_level(spdlog::level::warn);
    ::signal(SIGTERM, on_term);
    int rc = 0;
    try {
      coordinator::CoordinatorOptions o;
      o.db_path = db;
      o.bind = "tcp://127.0.0.1:*";
      o.endpoint_file = ep_file;
      o.security.insecure = true;
      o.io_threads = coord_io;
      coordinator::Coordinator c(o);
      c.run(g_stop);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "load coordinator: %s\n", e.what());
      rc = 1;
    }
    return rc;
  }, SpawnOptions{});
  std::string endpoint;
  for (int i = 0; i < 600 && endpoint.empty(); ++i) {
    std::ifstream f(ep_file);
    std::getline(f, endpoint);
    if (endpoint.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (endpoint.empty()) {
    coord.signal(SIGKILL);
    coord.wait();
    HYLAB_FAIL("the load coordinator did not start");
  }
  // Enough trials that no worker runs out: a trial lasts 3 s on average.
  submit(endpoint, n_workers * (seconds / 3 + 2));
  // What the coordinator spent on the submission (thousands of trials) is left out of its
  // CPU per message.
  const double cpu_submitted = proc_usage(coord.pid()).second;

  // The generator: `threads` threads, each owning an equal share of the workers.
  const int n_threads = std::max(1, std::min(threads > 0 ? threads : default_load_threads(), n_workers));
  // libzmq I/O threads for the sockets' TCP work: the simulated workers' network stacks
  // (eight instead of two did not shorten the registration wave: docs/RELIABILITY.md).
  const int n_io = io_threads > 0 ? io_threads : std::max(1, n_threads / 2);
  zmq::context_t ctx(n_io);
  ctx.set(zmq::ctxopt::max_sockets, n_workers + 64);  // libzmq's default is 1,023
  std::vector<Shard> shards(static_cast<size_t>(n_threads));
  for (int i = 0; i < n_workers; ++i) {
    LoadWorker w;
    w.id = "load-" + std::to_string(i);
    shards[static_cast<size_t>(i % n_threads)].ws.push_back(std::move(w));
  }
  struct rusage ru0 {};
  ::getrusage(RUSAGE_SELF, &ru0);
  const auto t0 = Clock::now();
  const int64_t end = static_cast<int64_t>(seconds) * 1000;
  std::vector<std::thread> threads_run;
  // An error in a generator thread (a socket that cannot be opened, ...) ends the run with
  // its message rather than std::terminate.
  std::vector<std::string> errors(static_cast<size_t>(n_threads));
  for (int k = 0; k < n_threads; ++k) {
    threads_run.emplace_back([&, k] {
      try {
        drive(shards[static_cast<size_t>(k)], ctx, endpoint, t0, end,
              static_cast<uint64_t>(n_workers) * 1000 + static_cast<uint64_t>(k));
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(k)] = e.what();
      }
    });
  }
  for (auto& t : threads_run) t.join();
  for (const std::string& e : errors) {
    if (e.empty()) continue;
    coord.signal(SIGKILL);
    coord.wait();
    HYLAB_FAIL("load bench: a generator thread failed with {} workers: {}", n_workers, e);
  }
  const double wall = static_cast<double>(ms_since(t0)) / 1000.0;
  const auto [rss, cpu] = proc_usage(coord.pid());
  coord.signal(SIGTERM);
  coord.wait();
  int64_t rows = 0;
  std::unordered_map<std::string, double> handled_at;  // worker -> its Hello handled (unix s)
  {
    auto d = store::Db::open(db, true);
    auto q = d->prepare("SELECT COUNT(*) FROM metrics");
    if (q.step()) rows = q.int64(0);
    auto w = d->prepare("SELECT worker_id, first_seen FROM workers");
    while (w.step()) handled_at[w.text(0)] = w.real(1);
  }
  struct rusage ru1 {};
  ::getrusage(RUSAGE_SELF, &ru1);
  auto secs = [](const timeval& tv) { return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6; };
  const double generator_cpu = secs(ru1.ru_utime) + secs(ru1.ru_stime) - secs(ru0.ru_utime) - secs(ru0.ru_stime);
  std::vector<int64_t> latencies, lateness, freed_at;
  std::vector<bool> after_hello;
  int64_t assigns = 0, metrics_asked = 0, metrics_sent = 0, beats_sent = 0, sends_dropped = 0, messages = 0;
  for (auto& sh : shards) {
    for (const auto& w : sh.ws) messages += w.sent;
    latencies.insert(latencies.end(), sh.latencies.begin(), sh.latencies.end());
    freed_at.insert(freed_at.end(), sh.freed_at.begin(), sh.freed_at.end());
    after_hello.insert(after_hello.end(), sh.after_hello.begin(), sh.after_hello.end());
    lateness.insert(lateness.end(), sh.lateness.begin(), sh.lateness.end());
    assigns += sh.assigns;
    metrics_asked += sh.metrics_asked;
    metrics_sent += sh.metrics_sent;
    beats_sent += sh.beats_sent;
    sends_dropped += sh.sends_dropped;
  }
  // A registration around its latency: before it, the connection setup (connect() to the
  // connection up: TCP and the ZMTP handshake in both processes' I/O threads); then the
  // latency split where the coordinator handled the Hello: the Hello's wait (transit, the
  // coordinator's inbox) and from there to the Assign arriving (the rest of its batch, the
  // commit, the send). "Handled" is the workers row's first_seen, written by the coordinator
  // as it handles the Hello (one host, one system clock). connect_to_assign is the whole
  // join: a new worker's connect() to its first Assign.
  std::vector<int64_t> connect, to_handled, handled_to_assign, connect_to_assign;
  const int64_t now = ms_since(t0);
  for (auto& sh : shards) {
    for (const auto& w : sh.ws) {
      if (w.connected_ms >= 0) connect.push_back(w.connected_ms - w.connect_ms);
      if (w.registered_ms < 0) continue;
      connect_to_assign.push_back(w.connected_ms - w.connect_ms + w.registered_ms);
      const auto it = handled_at.find(w.id);
      if (it == handled_at.end()) continue;
      const auto part = static_cast<int64_t>(std::lround((it->second - w.hello_unix_s) * 1000.0));
      to_handled.push_back(part);
      handled_to_assign.push_back(w.registered_ms - part);
    }
  }
  // Workers still waiting for an Assign at the end count with their wait so far: a
  // coordinator that falls behind cannot hide it by never answering. A worker whose
  // connection never came up counts from its connect().
  int64_t waiting = 0, never_connected = 0;
  for (auto& sh : shards) {
    for (auto& w : sh.ws) {
      const int64_t since = w.connected_ms < 0 ? w.connect_ms : w.free_since;
      if (!w.held && since >= 0) {
        latencies.push_back(now - since);
        freed_at.push_back(since);
        after_hello.push_back(w.registering);
        ++waiting;
        never_connected += w.connected_ms < 0;
      }
    }
  }
  // The generator kept up when it sent what the schedule asked for, on time: else the row
  // measures the generator (or the machine), not the coordinator, and is marked invalid.
  const double lag_p99 = percentile(lateness, 0.99);
  // (A batch refused by a full queue was the coordinator's doing: it counts as attempted.)
  const bool kept_up = static_cast<double>(metrics_sent + sends_dropped) >= 0.99 * static_cast<double>(metrics_asked) &&
                       lag_p99 <= static_cast<double>(kMetricPeriodMs);
  // Where the latency comes from: slots free since their worker's Hello (registration,
  // all at once at the start) against slots freed by a Finished (steady state); and in
  // which second of the run the slow ones (over 50 ms, the target) became free.
  std::vector<int64_t> by_kind[2];
  std::vector<int64_t> slow_by_second(static_cast<size_t>(seconds) + 1, 0);
  for (size_t i = 0; i < latencies.size(); ++i) {
    by_kind[after_hello[i] ? 0 : 1].push_back(latencies[i]);
    if (latencies[i] > 50) {
      ++slow_by_second[std::min(slow_by_second.size() - 1, static_cast<size_t>(std::max<int64_t>(0, freed_at[i]) / 1000))];
    }
  }
  auto summary = [](const std::vector<int64_t>& v) {
    return nlohmann::json{{"count", v.size()},
                          {"p50_ms", percentile(v, 0.50)},
                          {"p99_ms", percentile(v, 0.99)},
                          {"max_ms", v.empty() ? -1.0 : static_cast<double>(*std::max_element(v.begin(), v.end()))}};
  };
  fs::remove_all(dir);
  return {{"workers", n_workers},
          {"seconds", wall},
          {"assignments", assigns},
          {"waiting_at_end", waiting},
          {"p50_ms", percentile(latencies, 0.50)},
          {"p99_ms", percentile(latencies, 0.99)},
          {"after_hello", summary(by_kind[0])},
          {"after_finished", summary(by_kind[1])},
          {"never_connected", never_connected},
          {"registration", {{"connect", summary(connect)},
                            {"hello_to_handled", summary(to_handled)},
                            {"handled_to_assign", summary(handled_to_assign)},
                            {"connect_to_assign", summary(connect_to_assign)}}},
          {"over_50ms_by_second_freed", slow_by_second},
          {"coordinator_rss_mib", rss},
          {"coordinator_cpu_s", cpu},
          {"worker_messages_sent", messages},
          {"coordinator_cpu_us_per_message",
           messages > 0 ? 1e6 * (cpu - cpu_submitted) / static_cast<double>(messages) : 0.0},
          {"metric_messages_sent", metrics_sent},
          {"metric_messages_asked", metrics_asked},
          {"heartbeats_sent", beats_sent},
          {"metric_messages_dropped", sends_dropped},
          {"sqlite_metric_rows_per_s", static_cast<double>(rows) / wall},
          {"generator_threads", n_threads},
          {"generator_io_threads", n_io},
          {"coordinator_io_threads", coord_io},
          {"generator_cpu_s", generator_cpu},
          {"generator_lag_p99_ms", lag_p99},
          {"generator_lag_max_ms", lateness.empty() ? 0.0 : static_cast<double>(*std::max_element(lateness.begin(), lateness.end()))},
          {"generator_kept_up", kept_up},
          {"valid", kept_up}};
}


}  // namespace hylab::sim
