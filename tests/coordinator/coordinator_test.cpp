// The coordinator's event loop over real ZeroMQ sockets on loopback with a real SQLite file.
// The test plays the worker side of the protocol message by message (a protocol driver, so
// every retransmit, stale attempt and malformed frame can be provoked exactly); the real
// worker and trainer are exercised by tests/e2e.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <deque>
#include <set>
#include <filesystem>
#include <thread>

#include <spdlog/fmt/fmt.h>

#include "common/check.h"
#include "wire/client.h"
#include "coordinator/coordinator.h"
#include "sweep/search.h"
#include "sweep/sweep_expander.h"
#include "sweep/sweep_spec.h"
#include "wire/wire.h"
#include "store/db.h"

namespace hylab::coordinator {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr int kHeartbeatMs = 200;  // liveness 600 ms: robust to a loaded 2-core CI machine

class Running {
 public:
  explicit Running(CoordinatorOptions opt, int heartbeat_ms = kHeartbeatMs) {
    opt.bind = "tcp://127.0.0.1:*";
    opt.heartbeat_ms = heartbeat_ms;
    c_ = std::make_unique<Coordinator>(opt);
    thread_ = std::thread([this] { c_->run(stop_); });
  }
  ~Running() {
    stop_ = true;
    thread_.join();
  }
  std::string endpoint() const { return c_->endpoint(); }

 private:
  std::atomic<bool> stop_{false};
  std::unique_ptr<Coordinator> c_;
  std::thread thread_;
};

// The worker end of the protocol, driven by the test.
class Peer {
 public:
  Peer(const std::string& endpoint, const std::string& id) : id_(id), s_(ctx_, zmq::socket_type::dealer) {
    s_.set(zmq::sockopt::linger, 0);
    s_.set(zmq::sockopt::routing_id, id);
    s_.connect(endpoint);
  }
  void send(proto::Envelope env) {
    const std::string b = wire::encode(std::move(env), id_);
    s_.send(zmq::buffer(b), zmq::send_flags::none);
  }
  void send_raw(const std::string& bytes) { s_.send(zmq::buffer(bytes), zmq::send_flags::none); }
  // The next message of `kind` (others are kept for later; heartbeats dropped); nullopt on
  // timeout. Meanwhile it heartbeats like a worker, listing the attempts it holds.
  std::optional<proto::Envelope> expect(proto::Envelope::KindCase kind, int timeout_ms = 3000) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (true) {
      for (auto it = inbox_.begin(); it != inbox_.end(); ++it) {
        if (it->kind_case() == kind) {
          proto::Envelope env = *it;
          inbox_.erase(it);
          return env;
        }
      }
      if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
      if (beating_ && std::chrono::steady_clock::now() - last_beat_ > 50ms) heartbeat(held_);
      zmq::pollitem_t items[] = {{s_.handle(), 0, ZMQ_POLLIN, 0}};
      zmq::poll(items, 1, 10ms);
      if (!(items[0].revents & ZMQ_POLLIN)) continue;
      zmq::message_t m;
      (void)s_.recv(m);
      std::string err;
      auto env = wire::decode(m.data(), m.size(), &err);
      if (!env || env->has_heartbeat()) continue;
      if (env->has_assign()) held_.insert({env->assign().trial_id(), env->assign().attempt()});
      inbox_.push_back(*env);
    }
  }
  // Stop heartbeating (a worker that hangs or is killed).
  void go_silent() { beating_ = false; }
  void hello(int slots, const std::vector<std::pair<int64_t, int64_t>>& held = {}) {
    held_ = {held.begin(), held.end()};
    proto::Envelope env;
    auto* h = env.mutable_hello();
    h->set_worker_id(id_);
    h->set_host("test");
    h->set_slots(slots);
    for (auto [t, a] : held) {
      auto* x = h->add_held();
      x->set_trial_id(t);
      x->set_attempt(a);
      x->add_slots(0);
    }
    send(env);
  }
  void heartbeat(const std::set<std::pair<int64_t, int64_t>>& held) {
    last_beat_ = std::chrono::steady_clock::now();
    proto::Envelope env;
    auto* hb = env.mutable_heartbeat();
    for (auto [t, a] : held) {
      auto* x = hb->add_held();
      x->set_trial_id(t);
      x->set_attempt(a);
      x->add_slots(0);
    }
    send(env);
  }
  void started(int64_t t, int64_t a) {
    proto::Envelope env;
    env.mutable_started()->set_trial_id(t);
    env.mutable_started()->set_attempt(a);
    env.mutable_started()->set_pid(1234);
    env.mutable_started()->set_run_dir("/work/trial-" + std::to_string(t));
    send(env);
  }
  void metrics(int64_t t, int64_t a, int64_t seq, int64_t from, int64_t to, double base,
               int64_t checkpoint = -1) {
    proto::Envelope env;
    auto* b = env.mutable_metrics();
    b->set_trial_id(t);
    b->set_attempt(a);
    b->set_seq(seq);
    for (int64_t s = from; s <= to; ++s) {
      auto* m = b->add_metrics();
      m->set_step(s);
      m->set_name("train_loss");
      m->set_value(base + s);
      m->set_wall_time(1.0);
    }
    b->set_checkpoint_step(checkpoint);
    send(env);
  }
  void finished(int64_t t, int64_t a, proto::TrialOutcome outcome, int code = 0) {
    held_.erase({t, a});
    proto::Envelope env;
    env.mutable_finished()->set_trial_id(t);
    env.mutable_finished()->set_attempt(a);
    env.mutable_finished()->set_outcome(outcome);
    env.mutable_finished()->set_exit_code(code);
    send(env);
  }

 private:
  std::string id_;
  zmq::context_t ctx_{1};
  zmq::socket_t s_;
  std::deque<proto::Envelope> inbox_;
  std::set<std::pair<int64_t, int64_t>> held_;
  bool beating_ = true;
  std::chrono::steady_clock::time_point last_beat_{};
};

class CoordinatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("hylab_coord_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    opt_.db_path = (dir_ / "hylab.db").string();
    opt_.security.insecure = true;
  }
  void TearDown() override { fs::remove_all(dir_); }

  proto::ClientRequest submit_request(int n_trials, int max_retries, const std::string& extra = "",
                                      int gpus = 1, int nodes = 1) {
    std::string values;
    for (int i = 0; i < n_trials; ++i) values += (i ? ", " : "") + std::to_string(i);
    const auto spec = parse_sweep_yaml("name: t\nbase: b\nmax_retries: " + std::to_string(max_retries) +
                                           "\n" + extra + "parameters: {seed: {values: [" + values + "]}}\n",
                                       "t");
    RunConfig base;
    base.set_depth(2);
    base.set_max_seq_len(32);
    const Expansion e = expand_sweep(spec, base);
    proto::ClientRequest req;
    auto* s = req.mutable_submit_sweep();
    s->set_name(spec.name());
    s->set_gpus_per_trial(gpus);
    s->set_nodes_per_trial(nodes);
    s->set_max_retries(spec.max_retries());
    s->set_early_stop_json(early_stop_to_json(spec));
    s->set_metric_name(spec.metric().name());
    s->set_metric_goal(spec.metric().goal());
    for (const auto& t : e.trials) {
      auto* d = s->add_trials();
      d->set_trial_index(t.trial_index);
      d->add_param_names("seed");
      d->add_param_values(std::to_string(t.resolved.seed()));
      d->set_config_json(config_to_json(t.resolved, false));
      d->set_config_hash(t.config_hash);
    }
    return req;
  }

  int64_t submit(const std::string& endpoint, int n_trials, int max_retries, const std::string& extra = "",
                 int gpus = 1, int nodes = 1) {
    return client(endpoint)->call_json(submit_request(n_trials, max_retries, extra, gpus, nodes))
        .at("sweep_id").get<int64_t>();
  }
  std::unique_ptr<wire::Client> client(const std::string& endpoint) {
    wire::Security insecure;
    insecure.insecure = true;
    return std::make_unique<wire::Client>(endpoint, insecure, 5000);
  }

  // One value from the database (the coordinator commits every loop iteration, before it
  // sends the replies the test waits for).
  std::string query(const std::string& sql) {
    auto db = store::Db::open(opt_.db_path);
    auto st = db->prepare(sql);
    return st.step() ? st.text(0) : "<no row>";
  }
  bool wait_for(const std::string& sql, const std::string& want, int timeout_ms = 5000) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (std::chrono::steady_clock::now() < deadline) {
      if (query(sql) == want) return true;
      std::this_thread::sleep_for(20ms);
    }
    ADD_FAILURE() << sql << ": wanted " << want << ", got " << query(sql);
    return false;
  }

  fs::path dir_;
  CoordinatorOptions opt_;
};

TEST_F(CoordinatorTest, RunsTrialsStoresEachMetricOnceAndCompletesTheSweep) {
  Running c(opt_);
  const int64_t sweep_id = submit(c.endpoint(), 2, 2);
  Peer w(c.endpoint(), "w1");
  w.hello(1);
  ASSERT_TRUE(w.expect(proto::Envelope::kWelcome));
  auto a1 = w.expect(proto::Envelope::kAssign);
  ASSERT_TRUE(a1);
  const int64_t t1 = a1->assign().trial_id();
  EXPECT_EQ(a1->assign().attempt(), 1);
  EXPECT_FALSE(a1->assign().resume());
  EXPECT_EQ(a1->assign().run_dir(), "sweep-" + std::to_string(sweep_id) + "/trial-" + std::to_string(t1));
  EXPECT_EQ(config_from_json(a1->assign().config_json()).seed(), 0);
  // One slot: the second trial waits.
  EXPECT_FALSE(w.expect(proto::Envelope::kAssign, 400));
  w.started(t1, 1);
  w.metrics(t1, 1, 1, 0, 4, 10.0);
  auto ack = w.expect(proto::Envelope::kMetricsAck);
  ASSERT_TRUE(ack);
  EXPECT_EQ(ack->metrics_ack().seq(), 1);
  w.metrics(t1, 1, 1, 0, 4, 10.0);  // a retransmit: acked again, stored once
  ASSERT_TRUE(w.expect(proto::Envelope::kMetricsAck));
  w.metrics(t1, 1, 2, 3, 6, 20.0, /*checkpoint=*/5);  // steps 3, 4 again with new values
  ASSERT_TRUE(w.expect(proto::Envelope::kMetricsAck));
  const std::string id = std::to_string(t1);
  EXPECT_EQ(query("SELECT COUNT(*) FROM metrics WHERE trial_id=" + id), "7");
  EXPECT_EQ(query("SELECT value FROM metrics WHERE trial_id=" + id + " AND step=4"), "24.0");
  EXPECT_EQ(query("SELECT checkpoint_step FROM trials WHERE trial_id=" + id), "5");
  w.finished(t1, 1, proto::TRIAL_OUTCOME_SUCCEEDED);
  ASSERT_TRUE(w.expect(proto::Envelope::kFinishedAck));
  // Written behind the metric rows, at the latest with the attempt's end.
  EXPECT_EQ(query("SELECT last_seq FROM trial_attempts WHERE trial_id=" + id), "2");
  EXPECT_EQ(query("SELECT last_step FROM trials WHERE trial_id=" + id), "6");
  w.finished(t1, 1, proto::TRIAL_OUTCOME_SUCCEEDED);  // a repeat: acked, nothing changes
  ASSERT_TRUE(w.expect(proto::Envelope::kFinishedAck));
  EXPECT_EQ(query("SELECT state FROM trials WHERE trial_id=" + id), "succeeded");

  auto a2 = w.expect(proto::Envelope::kAssign);
  ASSERT_TRUE(a2);
  const int64_t t2 = a2->assign().trial_id();
  EXPECT_NE(t2, t1);
  w.started(t2, 1);
  w.finished(t2, 1, proto::TRIAL_OUTCOME_OOM, 4);  // a result: recorded, not retried
  ASSERT_TRUE(w.expect(proto::Envelope::kFinishedAck));
  EXPECT_FALSE(w.expect(proto::Envelope::kAssign, 400));
  wait_for("SELECT state FROM sweeps WHERE sweep_id=" + std::to_string(sweep_id), "completed");
  EXPECT_EQ(query("SELECT state FROM trials WHERE trial_id=" + std::to_string(t2)), "oom");
  EXPECT_EQ(query("SELECT state FROM workers"), "alive");
}

TEST_F(CoordinatorTest, StartedRecordsTheRunDirAndTheSummaryItsProvenance) {
  Running c(opt_);
  submit(c.endpoint(), 1, 1);
  Peer w(c.endpoint(), "w1");
  w.hello(1);
  ASSERT_TRUE(w.expect(proto::Envelope::kWelcome));
  auto a = w.expect(proto::Envelope::kAssign);
  ASSERT_TRUE(a);
  const int64_t t = a->assign().trial_id();
  const std::string id = std::to_string(t);
  w.started(t, 1);
  proto::Envelope env;
  auto* b = env.mutable_metrics();
  b->set_trial_id(t);
  b->set_attempt(1);
  b->set_seq(1);
  auto* s = b->mutable_summary();
  s->set_steps(3);
  s->set_provenance_json(R"({"hylab_commit":"abc123","gpu_name":"NVIDIA H200","host":"n1"})");
  s->set_disk_bytes(4096);
  w.send(env);
  ASSERT_TRUE(w.expect(proto::Envelope::kMetricsAck));
  EXPECT_EQ(query("SELECT run_dir FROM trial_attempts WHERE trial_id=" + id), "/work/trial-" + id);
  EXPECT_EQ(query("SELECT hylab_commit || ',' || gpu_name || ',' || host || ',' || disk_bytes || ',' || "
                  "torch_version || '.' FROM trial_summary WHERE trial_id=" + id),
            "abc123,NVIDIA H200,n1,4096,.");
}

TEST_F(CoordinatorTest, FailedAttemptsAreRetriedFromTheirCheckpointUpToMaxRetries) {
  Running c(opt_);
  submit(c.endpoint(), 1, 1);
  Peer w(c.endpoint(), "w1");
  w.hello(1);
  auto a = w.expect(proto::Envelope::kAssign);
  ASSERT_TRUE(a);
  const int64_t t = a->assign().trial_id();
  w.started(t, 1);
  w.metrics(t, 1, 1, 0, 9, 1.0, /*checkpoint=*/5);
  ASSERT_TRUE(w.expect(proto::Envelope::kMetricsAck));
  w.finished(t, 1, proto::TRIAL_OUTCOME_FAILED, 1);
  auto again = w.expect(proto::Envelope::kAssign);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->assign().trial_id(), t);
  EXPECT_EQ(again->assign().attempt(), 2);
  EXPECT_TRUE(again->assign().resume());
  // Metrics of the old attempt arriving late are acknowledged but not stored.
  w.metrics(t, 1, 2, 6, 9, 100.0);
  ASSERT_TRUE(w.expect(proto::Envelope::kMetricsAck));
  EXPECT_EQ(query("SELECT value FROM metrics WHERE step=7"), "8.0");
  w.started(t, 2);
  w.finished(t, 2, proto::TRIAL_OUTCOME_FAILED, 1);
  ASSERT_TRUE(w.expect(proto::Envelope::kFinishedAck));
  wait_for("SELECT state FROM trials", "failed");
  EXPECT_EQ(query("SELECT failures FROM trials"), "2");
  EXPECT_EQ(query("SELECT COUNT(*) FROM trial_attempts WHERE state='failed'"), "2");
  EXPECT_FALSE(w.expect(proto::Envelope::kAssign, 300));
}

TEST_F(CoordinatorTest, MalformedAndOversizedMessagesAreDroppedNeverFatal) {
  Running c(opt_);
  {
    Peer bad(c.endpoint(), "intruder");
    bad.send_raw("\x08\x01 definitely not an envelope");
    bad.send_raw(std::string(wire::kMaxMessageBytes + 100, 'x'));  // libzmq drops the peer
    proto::Envelope env;
    env.mutable_metrics()->set_trial_id(-5);
    bad.send(env);
    std::this_thread::sleep_for(200ms);
  }
  {
    // A registered worker that sends a message for a trial that does not exist.
    Peer w(c.endpoint(), "w1");
    w.hello(1);
    ASSERT_TRUE(w.expect(proto::Envelope::kWelcome));
    w.metrics(999, 1, 1, 0, 1, 0.0);
    ASSERT_TRUE(w.expect(proto::Envelope::kMetricsAck));
    w.finished(999, 1, proto::TRIAL_OUTCOME_SUCCEEDED);
    ASSERT_TRUE(w.expect(proto::Envelope::kFinishedAck));
  }
  // Still serving.
  const int64_t sweep_id = submit(c.endpoint(), 1, 0);
  EXPECT_GT(sweep_id, 0);
  EXPECT_EQ(query("SELECT COUNT(*) FROM metrics"), "0");
}

// Input probes (issue 15): requests that used to cost the coordinator gigabytes, text that
// used to break every later JSON reply, and an insecure socket open to every interface.
TEST_F(CoordinatorTest, ASmallSubmitCannotExpandAHugeBlockPattern) {
  Running c(opt_);
  proto::ClientRequest req = submit_request(1, 0);
  // ~100 bytes that expand to 10^15 layers: refused from its size, before expansion.
  auto* t = req.mutable_submit_sweep()->mutable_trials(0);
  t->set_config_json(R"({"block_pattern": ["((((T*1000)*1000)*1000)*1000)*1000"], "max_seq_len": 32})");
  t->clear_config_hash();
  const auto t0 = std::chrono::steady_clock::now();
  try {
    client(c.endpoint())->call(req);
    ADD_FAILURE() << "the pattern was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("more than 1024 layers"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  EXPECT_GT(submit(c.endpoint(), 1, 0), 0);  // still serving
}

TEST_F(CoordinatorTest, NonUtf8TextFromAWorkerKeepsTheWorkerListAndSweepReadable) {
  Running c(opt_);
  const int64_t sweep_id = submit(c.endpoint(), 1, 0);
  Peer w(c.endpoint(), "w1");
  proto::Envelope hello;
  hello.mutable_hello()->set_worker_id("w1");
  hello.mutable_hello()->set_host("gpu\xff\xfe-node");
  hello.mutable_hello()->set_slots(1);
  w.send(hello);
  ASSERT_TRUE(w.expect(proto::Envelope::kWelcome));
  auto a = w.expect(proto::Envelope::kAssign);
  ASSERT_TRUE(a);
  proto::Envelope fin;
  fin.mutable_finished()->set_trial_id(a->assign().trial_id());
  fin.mutable_finished()->set_attempt(a->assign().attempt());
  fin.mutable_finished()->set_outcome(proto::TRIAL_OUTCOME_FAILED);
  fin.mutable_finished()->set_exit_code(1);
  fin.mutable_finished()->set_reason("trainer said \xc3\x28 and died");
  w.send(fin);
  ASSERT_TRUE(w.expect(proto::Envelope::kFinishedAck));
  proto::ClientRequest workers;
  workers.set_list_workers(true);
  const auto list = client(c.endpoint())->call_json(workers);
  EXPECT_NE(list.dump().find("gpu\xEF\xBF\xBD\xEF\xBF\xBD-node"), std::string::npos) << list.dump();
  proto::ClientRequest show;
  show.set_show_sweep(sweep_id);
  const auto sweep = client(c.endpoint())->call_json(show);
  EXPECT_NE(sweep.dump().find("said \xEF\xBF\xBD( and died"), std::string::npos) << sweep.dump();
}

TEST_F(CoordinatorTest, AnInsecureCoordinatorBindsOnlyLoopbackUnlessTold) {
  CoordinatorOptions o = opt_;
  o.bind = "tcp://*:*";
  try {
    Coordinator refused(o);
    ADD_FAILURE() << "an insecure coordinator listened on every interface";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--insecure_any_interface"), std::string::npos) << e.what();
  }
  o.security.insecure_any_interface = true;
  EXPECT_NO_THROW(Coordinator allowed(o));
}

// libzmq takes 0 I/O threads (inproc only): such a coordinator would bind TCP and never
// accept a connection.
TEST_F(CoordinatorTest, RefusesZeroIoThreads) {
  CoordinatorOptions o = opt_;
  o.bind = "tcp://127.0.0.1:*";
  o.io_threads = 0;
  try {
    Coordinator refused(o);
    ADD_FAILURE() << "a coordinator with no I/O thread started";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("io_threads"), std::string::npos) << e.what();
  }
  o.io_threads = 1;
  EXPECT_NO_THROW(Coordinator allowed(o));
}

TEST_F(CoordinatorTest, ASilentWorkerIsLostAndItsTrialRunsElsewhere) {
  Running c(opt_);
  submit(c.endpoint(), 1, 2);
  Peer a(c.endpoint(), "wa");
  a.hello(1);
  auto as = a.expect(proto::Envelope::kAssign);
  ASSERT_TRUE(as);
  const int64_t t = as->assign().trial_id();
  a.started(t, 1);
  a.metrics(t, 1, 1, 0, 3, 1.0, 2);
  ASSERT_TRUE(a.expect(proto::Envelope::kMetricsAck));
  a.go_silent();
  Peer b(c.endpoint(), "wb");
  b.hello(1);
  // wa is silent; wb keeps beating until it gets the trial.
  auto moved = b.expect(proto::Envelope::kAssign, 3000);
  ASSERT_TRUE(moved);
  EXPECT_EQ(moved->assign().trial_id(), t);
  EXPECT_EQ(moved->assign().attempt(), 2);
  EXPECT_TRUE(moved->assign().resume());
  EXPECT_EQ(query("SELECT state FROM workers WHERE worker_id='wa'"), "lost");
  EXPECT_NE(query("SELECT reason FROM trial_attempts WHERE attempt=1").find("lost"), std::string::npos);
}

TEST_F(CoordinatorTest, RestartRecoversRunningTrialsFromTheDatabase) {
  int64_t t = 0;
  std::string endpoint;
  {
    Running c(opt_);
    submit(c.endpoint(), 1, 0);  // max_retries 0: a lost attempt would fail the trial
    Peer w(c.endpoint(), "w1");
    w.hello(1);
    auto as = w.expect(proto::Envelope::kAssign);
    ASSERT_TRUE(as);
    t = as->assign().trial_id();
    w.started(t, 1);
    w.metrics(t, 1, 1, 0, 4, 1.0);
    ASSERT_TRUE(w.expect(proto::Envelope::kMetricsAck));
  }  // the coordinator goes away; the trial keeps running on w1
  Running c2(opt_);
  Peer w(c2.endpoint(), "w1");
  w.heartbeat({{t, 1}});  // unknown to the new coordinator -> asked to register
  ASSERT_TRUE(w.expect(proto::Envelope::kReregister));
  w.hello(1, {{t, 1}});
  ASSERT_TRUE(w.expect(proto::Envelope::kWelcome));
  EXPECT_FALSE(w.expect(proto::Envelope::kAssign, 300));  // carries on: no new attempt
  w.metrics(t, 1, 1, 0, 4, 1.0);  // unacked batch resent after the reconnect
  w.metrics(t, 1, 2, 5, 9, 1.0);
  ASSERT_TRUE(w.expect(proto::Envelope::kMetricsAck));
  ASSERT_TRUE(w.expect(proto::Envelope::kMetricsAck));
  w.finished(t, 1, proto::TRIAL_OUTCOME_SUCCEEDED);
  ASSERT_TRUE(w.expect(proto::Envelope::kFinishedAck));
  wait_for("SELECT state FROM trials", "succeeded");
  EXPECT_EQ(query("SELECT COUNT(*) FROM metrics"), "10");
  EXPECT_EQ(query("SELECT attempt FROM trials"), "1");
  EXPECT_EQ(query("SELECT state FROM sweeps"), "completed");
}

TEST_F(CoordinatorTest, RecoveredAttemptsNobodyClaimsAreLost) {
  opt_.recovery_grace_ms = 300;
  {
    Running c(opt_);
    submit(c.endpoint(), 1, 1);
    Peer w(c.endpoint(), "w1");
    w.hello(1);
    auto as = w.expect(proto::Envelope::kAssign);
    ASSERT_TRUE(as);
    w.started(as->assign().trial_id(), 1);
    std::this_thread::sleep_for(200ms);
  }
  Running c2(opt_);
  Peer w2(c2.endpoint(), "w2");  // a different worker; w1 never comes back
  w2.hello(1);
  auto as = w2.expect(proto::Envelope::kAssign, 3000);
  ASSERT_TRUE(as);
  EXPECT_EQ(as->assign().attempt(), 2);
}

TEST_F(CoordinatorTest, CancelStopsRunningAndPendingTrials) {
  Running c(opt_);
  const int64_t sweep_id = submit(c.endpoint(), 3, 2);
  Peer w(c.endpoint(), "w1");
  w.hello(1);
  auto as = w.expect(proto::Envelope::kAssign);
  ASSERT_TRUE(as);
  const int64_t t = as->assign().trial_id();
  w.started(t, 1);
  wire::Security insecure;
  insecure.insecure = true;
  wire::Client client(c.endpoint(), insecure, 5000);
  proto::ClientRequest req;
  req.set_cancel_sweep(sweep_id);
  EXPECT_EQ(client.call_json(req)["trials_cancelled"], 3);
  auto cancel = w.expect(proto::Envelope::kCancel);
  ASSERT_TRUE(cancel);
  EXPECT_EQ(cancel->cancel().trial_id(), t);
  EXPECT_EQ(query("SELECT COUNT(*) FROM trials WHERE state='cancelled'"), "3");
  EXPECT_EQ(query("SELECT state FROM sweeps"), "cancelled");
  w.finished(t, 1, proto::TRIAL_OUTCOME_CANCELLED, 143);
  ASSERT_TRUE(w.expect(proto::Envelope::kFinishedAck));
  // Resume reruns the cancelled trials.
  proto::ClientRequest res;
  res.set_resume_sweep(sweep_id);
  EXPECT_EQ(client.call_json(res)["trials_resumed"], 3);
  ASSERT_TRUE(w.expect(proto::Envelope::kAssign));
  // Errors come back as sentences.
  proto::ClientRequest bad;
  bad.set_show_sweep(12345);
  try {
    client.call(bad);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no sweep with sweep_id 12345"), std::string::npos) << e.what();
  }
}

TEST_F(CoordinatorTest, EarlyStoppingStopsTrialsThatCannotWin) {
  Running c(opt_);
  submit(c.endpoint(), 4, 0, "early_stop: {type: median, min_steps: 10, min_trials: 3}\nmetric: {name: train_loss}\n");
  // Three finished trials with low loss, then one running with a high loss.
  Peer w(c.endpoint(), "w1");
  w.hello(1);
  for (int i = 0; i < 3; ++i) {
    auto as = w.expect(proto::Envelope::kAssign);
    ASSERT_TRUE(as);
    const int64_t t = as->assign().trial_id();
    w.started(t, 1);
    w.metrics(t, 1, 1, 0, 20, 1.0 + 0.1 * i);
    ASSERT_TRUE(w.expect(proto::Envelope::kMetricsAck));
    w.finished(t, 1, proto::TRIAL_OUTCOME_SUCCEEDED);
    ASSERT_TRUE(w.expect(proto::Envelope::kFinishedAck));
  }
  auto as = w.expect(proto::Envelope::kAssign);
  ASSERT_TRUE(as);
  const int64_t t = as->assign().trial_id();
  w.started(t, 1);
  w.metrics(t, 1, 1, 0, 5, 50.0);  // before min_steps: nothing happens
  ASSERT_TRUE(w.expect(proto::Envelope::kMetricsAck));
  EXPECT_FALSE(w.expect(proto::Envelope::kCancel, 300));
  w.metrics(t, 1, 2, 6, 12, 50.0);
  auto cancel = w.expect(proto::Envelope::kCancel);
  ASSERT_TRUE(cancel);
  EXPECT_EQ(cancel->cancel().trial_id(), t);
  EXPECT_EQ(query("SELECT state FROM trials WHERE trial_id=" + std::to_string(t)), "stopped");
  EXPECT_NE(query("SELECT reason FROM trials WHERE trial_id=" + std::to_string(t)).find("median"),
            std::string::npos);
}

TEST_F(CoordinatorTest, MultiNodeTrialsAreGangScheduledAndTheirRendezvousRelayed) {
  Running c(opt_, /*heartbeat_ms=*/500);  // two peers beat only while the test waits on them
  submit(c.endpoint(), 1, 0, "", /*gpus=*/2, /*nodes=*/2);
  Peer a(c.endpoint(), "wa");
  a.hello(1);
  EXPECT_FALSE(a.expect(proto::Envelope::kAssign, 400));  // one node is not enough
  Peer b(c.endpoint(), "wb");
  b.hello(1);
  auto as_a = a.expect(proto::Envelope::kAssign);
  auto as_b = b.expect(proto::Envelope::kAssign);
  ASSERT_TRUE(as_a && as_b);
  EXPECT_EQ(as_a->assign().num_nodes(), 2);
  EXPECT_EQ(as_a->assign().trial_id(), as_b->assign().trial_id());
  EXPECT_NE(as_a->assign().node_rank(), as_b->assign().node_rank());
  Peer& rank0 = as_a->assign().node_rank() == 0 ? a : b;
  Peer& rank1 = as_a->assign().node_rank() == 0 ? b : a;
  const int64_t t = as_a->assign().trial_id();
  proto::Envelope rv;
  rv.mutable_rendezvous()->set_trial_id(t);
  rv.mutable_rendezvous()->set_attempt(1);
  rv.mutable_rendezvous()->set_payload("node0:29500");
  rank1.send(rv);  // not node 0: dropped
  rank0.send(rv);
  auto relayed = rank1.expect(proto::Envelope::kRendezvous);
  ASSERT_TRUE(relayed);
  EXPECT_EQ(relayed->rendezvous().payload(), "node0:29500");
  EXPECT_FALSE(rank1.expect(proto::Envelope::kRendezvous, 300));  // exactly once
  // A failure on one node ends the attempt everywhere.
  rank1.started(t, 1);
  rank0.started(t, 1);
  rank1.finished(t, 1, proto::TRIAL_OUTCOME_FAILED, 1);
  auto cancel = rank0.expect(proto::Envelope::kCancel);
  ASSERT_TRUE(cancel);
  EXPECT_EQ(cancel->cancel().trial_id(), t);
}

TEST_F(CoordinatorTest, DrainedWorkersGetNoNewTrials) {
  Running c(opt_);
  Peer w(c.endpoint(), "w1");
  w.hello(1);
  ASSERT_TRUE(w.expect(proto::Envelope::kWelcome));
  proto::ClientRequest req;
  req.set_drain_worker("w1");
  EXPECT_EQ(client(c.endpoint())->call_json(req)["state"], "draining");
  ASSERT_TRUE(w.expect(proto::Envelope::kDrain));
  submit(c.endpoint(), 1, 0);
  EXPECT_FALSE(w.expect(proto::Envelope::kAssign, 500));
  EXPECT_EQ(query("SELECT state FROM workers"), "draining");
  proto::ClientRequest unknown;
  unknown.set_drain_worker("nobody");
  EXPECT_THROW(client(c.endpoint())->call(unknown), Error);
}

// method tpe (sweep/search.h): no trials at submit, one proposed whenever a slot is
// free, each seeing the finished ones; suggest adds nothing; a grid grows from a spec.
TEST_F(CoordinatorTest, TpeTrialsAreProposedForFreeSlotsAndGridsGrowFromASpec) {
  Running c(opt_);
  const auto spec = parse_sweep_yaml("name: tpe\nbase: b\nmethod: tpe\ncount: 3\nseed: 2\n"
                                     "tpe: {startup_trials: 1}\nmetric: {name: train_loss}\n"
                                     "parameters: {seed: {values: [0, 1, 2, 3, 4, 5]}}\n", "t");
  RunConfig base;
  base.set_depth(2);
  base.set_max_seq_len(32);
  proto::ClientRequest req;
  auto* s = req.mutable_submit_sweep();
  s->set_name("tpe");
  s->set_gpus_per_trial(1);
  s->set_max_retries(0);
  s->set_metric_name("train_loss");
  s->set_metric_goal("minimize");
  s->set_search_json(search_state_to_json(make_search_state(spec, base)));
  const std::string id = std::to_string(client(c.endpoint())->call_json(req).at("sweep_id").get<int64_t>());
  std::this_thread::sleep_for(300ms);  // no worker, no free slot: nothing proposed
  EXPECT_EQ(query("SELECT COUNT(*) FROM trials"), "0");
  EXPECT_EQ(query("SELECT state FROM sweeps WHERE sweep_id=" + id), "running");
  proto::ClientRequest sug;
  sug.mutable_suggest_sweep()->set_sweep_id(std::stoll(id));
  sug.mutable_suggest_sweep()->set_count(2);
  const auto proposals = client(c.endpoint())->call_json(sug)["proposals"];
  ASSERT_EQ(proposals.size(), 2u);
  EXPECT_EQ(query("SELECT COUNT(*) FROM trials"), "0");
  Peer w(c.endpoint(), "w1");
  w.hello(1);
  ASSERT_TRUE(w.expect(proto::Envelope::kWelcome));
  for (int i = 0; i < 3; ++i) {
    auto a = w.expect(proto::Envelope::kAssign);
    ASSERT_TRUE(a) << "trial " << i;
    EXPECT_EQ(query("SELECT COUNT(*) FROM trials"), std::to_string(i + 1));  // one slot, one at a time
    const int64_t t = a->assign().trial_id();
    w.started(t, 1);
    w.metrics(t, 1, 1, 0, 2, 10.0 + i);
    ASSERT_TRUE(w.expect(proto::Envelope::kMetricsAck));
    w.finished(t, 1, proto::TRIAL_OUTCOME_SUCCEEDED);
    ASSERT_TRUE(w.expect(proto::Envelope::kFinishedAck));
  }
  ASSERT_TRUE(wait_for("SELECT state FROM sweeps WHERE sweep_id=" + id, "completed"));
  EXPECT_EQ(query("SELECT COUNT(DISTINCT config_hash) || ',' || MAX(trial_index) FROM trials"), "3,2");
  // The first trial is what suggest showed (nothing had changed in between).
  EXPECT_EQ(query("SELECT config_hash FROM trials WHERE trial_index=0"), proposals[0]["config_hash"].get<std::string>());
  EXPECT_EQ(query("SELECT COUNT(*) FROM events WHERE kind='trial_proposed'"), "3");

  const std::string grid = std::to_string(submit(c.endpoint(), 2, 0));
  proto::ClientRequest ext;
  ext.mutable_extend_sweep()->set_sweep_id(std::stoll(grid));
  ext.mutable_extend_sweep()->set_count(5);
  *ext.mutable_extend_sweep()->mutable_trials() = submit_request(3, 0).submit_sweep().trials();
  EXPECT_EQ(client(c.endpoint())->call_json(ext)["added"], 1);  // seeds 0, 1 are there; 2 is new
  EXPECT_EQ(query("SELECT COUNT(*) || ',' || MAX(trial_index) FROM trials WHERE sweep_id=" + grid), "3,2");
  EXPECT_THROW(client(c.endpoint())->call_json(ext), Error);  // nothing new left
  ext.mutable_extend_sweep()->clear_trials();
  EXPECT_THROW(client(c.endpoint())->call_json(ext), Error);  // a grid without a spec cannot grow
}

// Issue 15: a list over the client's frame limit (a sweep of ~5,500 trials, ~45k workers)
// was dropped by the client's socket and reported as "did not answer ... are the keys
// right?". Now the client reads it in pages, and a client that does not page hears why.
// The reply limit is set low so that 6,000 trials span many pages (the same code path as
// 8 MiB with ~30,000 trials, at a fraction of the test's time).
TEST_F(CoordinatorTest, ALargeSweepAndManyWorkersAreListedCompletelyInPages) {
  opt_.max_reply_bytes = 256 << 10;
  Running c(opt_);
  wire::Security insecure;
  insecure.insecure = true;
  wire::Client slow(c.endpoint(), insecure, 120000);  // 6,000 configs to resolve and insert
  const int64_t sweep_id = slow.call_json(submit_request(6000, 0)).at("sweep_id").get<int64_t>();
  std::vector<std::unique_ptr<Peer>> workers;
  for (int i = 0; i < 120; ++i) {
    workers.push_back(std::make_unique<Peer>(c.endpoint(), fmt::format("w{:03d}", i)));
    workers.back()->hello(1);
  }
  for (auto& w : workers) ASSERT_TRUE(w->expect(proto::Envelope::kWelcome, 20000));

  proto::ClientRequest show;
  show.set_show_sweep(sweep_id);
  // A client that asks for everything in one reply: refused with the reason, at once.
  const auto t0 = std::chrono::steady_clock::now();
  try {
    client(c.endpoint())->call(show);
    ADD_FAILURE() << "6,000 trials fit in 256 KiB";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("MiB a reply may carry"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find("did not answer"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 4s);

  // Page by page: each reply under the limit, every trial once, in trial_index order.
  int pages = 0;
  std::vector<int64_t> indexes;
  show.set_page_size(100000);
  do {
    const auto reply = client(c.endpoint())->call(show);
    EXPECT_LE(static_cast<int64_t>(reply.ByteSizeLong()), opt_.max_reply_bytes);
    const auto page = nlohmann::json::parse(reply.json());
    int64_t total = 0;
    for (const auto& [state, n] : page["counts"].items()) total += n.get<int64_t>();
    EXPECT_EQ(total, 6000);
    for (const auto& t : page["trials"]) indexes.push_back(t["trial_index"].get<int64_t>());
    show.set_page_token(reply.next_page_token());
    ++pages;
  } while (!show.page_token().empty() && pages < 1000);
  EXPECT_GE(pages, 5);
  ASSERT_EQ(indexes.size(), 6000u);
  for (int i = 0; i < 6000; ++i) EXPECT_EQ(indexes[static_cast<size_t>(i)], i) << "position " << i;

  // What `hylab sweep show` and `hylab workers` do.
  const auto sweep = client(c.endpoint())->call_all_pages(show, "trials", 512);
  EXPECT_EQ(sweep["trials"].size(), 6000u);
  EXPECT_EQ(sweep["sweep_id"].get<int64_t>(), sweep_id);
  proto::ClientRequest list;
  list.set_list_workers(true);
  const auto all = client(c.endpoint())->call_all_pages(list, "", 7);
  std::set<std::string> ids;
  for (const auto& w : all) ids.insert(w["worker_id"].get<std::string>());
  EXPECT_EQ(all.size(), 120u);
  EXPECT_EQ(ids.size(), 120u);
  EXPECT_EQ(*ids.begin(), "w000");
  EXPECT_EQ(*ids.rbegin(), "w119");
  proto::ClientRequest sweeps;
  sweeps.set_list_sweeps(true);
  EXPECT_EQ(client(c.endpoint())->call_all_pages(sweeps, "", 1).size(), 1u);
}

TEST_F(CoordinatorTest, CurveAdmitsOnlyKeysInTheAllowList) {
  const wire::KeyPair server = wire::generate_keypair(), known = wire::generate_keypair(),
                      stranger = wire::generate_keypair();
  opt_.security.insecure = false;
  opt_.security.own = server;
  opt_.security.allow.add(known.public_z85);
  Running c(opt_);
  proto::ClientRequest req;
  req.set_list_sweeps(true);
  wire::Security ok;
  ok.own = known;
  ok.server_public = server.public_z85;
  EXPECT_NO_THROW(wire::Client(c.endpoint(), ok, 3000).call(req));
  wire::Security bad = ok;
  bad.own = stranger;
  EXPECT_THROW(wire::Client(c.endpoint(), bad, 700).call(req), Error);
  wire::Security plain;
  plain.insecure = true;
  EXPECT_THROW(wire::Client(c.endpoint(), plain, 700).call(req), Error);
  // Still serving the known key afterwards.
  EXPECT_NO_THROW(wire::Client(c.endpoint(), ok, 3000).call(req));
}

}  // namespace
}  // namespace hylab::coordinator
