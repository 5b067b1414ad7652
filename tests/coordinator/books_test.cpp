// The coordinator's logic driven directly through step(messages, now), with a real SQLite
// file and an injected clock: no sockets, no sleeps. Each test is a defect that was found
// (issue 15) and fails without its fix.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/check.h"
#include "common/metrics.h"
#include "common/run_config.h"
#include "coordinator/coordinator_impl.h"
#include "wire/wire.h"

namespace hylab::coordinator {
namespace {

namespace fs = std::filesystem;

class BooksTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("hylab-books-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    opt_.db_path = (dir_ / "hylab.db").string();
    opt_.heartbeat_ms = 1000;
    opt_.liveness = 3;
    opt_.security.insecure = true;
    start();
  }
  void TearDown() override {
    core_.reset();
    fs::remove_all(dir_);
  }
  void start() { core_ = std::make_unique<Coordinator::Impl>(opt_, now_); }

  std::vector<proto::Envelope> step(const std::vector<Inbound>& in, int64_t advance_ms = 10) {
    now_ += advance_ms;
    std::vector<proto::Envelope> out;
    for (const auto& o : core_->step(in, now_)) {
      std::string error;
      auto env = wire::decode(o.payload.data(), o.payload.size(), &error);
      EXPECT_TRUE(env) << error;
      if (env) {
        env->set_sender(o.routing_id);  // who it goes to, for the checks
        out.push_back(*env);
      }
    }
    return out;
  }
  static Inbound from(const std::string& worker, const std::string& key, proto::Envelope env) {
    return Inbound{worker, false, key, wire::encode(std::move(env), worker)};
  }
  static proto::Envelope hello(const std::string& worker, int slots = 1,
                               std::vector<std::pair<int64_t, int64_t>> held = {}, bool finished = false) {
    proto::Envelope env;
    auto* h = env.mutable_hello();
    h->set_worker_id(worker);
    h->set_host("host");
    h->set_slots(slots);
    for (auto [t, a] : held) {
      auto* x = h->add_held();
      x->set_trial_id(t);
      x->set_attempt(a);
      x->add_slots(0);
      x->set_finished(finished);
    }
    return env;
  }
  static proto::Envelope metrics(int64_t trial, int64_t attempt, int64_t seq, int64_t step) {
    proto::Envelope env;
    auto* b = env.mutable_metrics();
    b->set_trial_id(trial);
    b->set_attempt(attempt);
    b->set_seq(seq);
    auto* m = b->add_metrics();
    m->set_step(step);
    m->set_name("train_loss");
    m->set_value(1.5);
    m->set_wall_time(1);
    return env;
  }
  static proto::Envelope finished(int64_t trial, int64_t attempt) {
    proto::Envelope env;
    env.mutable_finished()->set_trial_id(trial);
    env.mutable_finished()->set_attempt(attempt);
    env.mutable_finished()->set_outcome(proto::TRIAL_OUTCOME_SUCCEEDED);
    return env;
  }
  static proto::Envelope started(int64_t trial, int64_t attempt) {
    proto::Envelope env;
    env.mutable_started()->set_trial_id(trial);
    env.mutable_started()->set_attempt(attempt);
    env.mutable_started()->set_pid(1);
    env.mutable_started()->set_run_dir("/tmp/x");
    return env;
  }
  // One sweep of `n` trials; returns nothing (trial ids are 1..n).
  void submit(int n, int max_retries) {
    proto::Envelope env;
    auto* req = env.mutable_request();
    req->set_request_id(1);
    auto* s = req->mutable_submit_sweep();
    s->set_name("books");
    s->set_gpus_per_trial(1);
    s->set_max_retries(max_retries);
    for (int i = 0; i < n; ++i) {
      RunConfig cfg;
      cfg.set_seed(i);
      auto* t = s->add_trials();
      t->set_trial_index(i);
      t->set_config_json(config_to_json(resolve_config(cfg), false));
    }
    auto out = step({Inbound{"client", true, "", wire::encode(env, "client")}});
    ASSERT_FALSE(out.empty());
    ASSERT_TRUE(out.back().reply().ok()) << out.back().reply().error();
  }
  std::string query(const std::string& sql) {
    auto q = core_->store->db().prepare(sql);
    return q.step() ? (q.is_null(0) ? "NULL" : q.text(0)) : "";
  }
  static int count(const std::vector<proto::Envelope>& out, proto::Envelope::KindCase kind,
                   const std::string& to = "") {
    int n = 0;
    for (const auto& e : out) n += e.kind_case() == kind && (to.empty() || e.sender() == to);
    return n;
  }

  fs::path dir_;
  CoordinatorOptions opt_;
  int64_t now_ = 1'000'000;
  std::unique_ptr<Coordinator::Impl> core_;
};

// Only the worker holding the current attempt may report on it: any other registered
// worker's metrics and outcome are refused (acked, not stored), also after the trial ended.
TEST_F(BooksTest, OnlyTheWorkerHoldingTheAttemptMayReportOnIt) {
  submit(1, 0);
  auto out = step({from("w1", "", hello("w1"))});
  ASSERT_EQ(count(out, proto::Envelope::kAssign, "w1"), 1);
  step({from("w2", "", hello("w2"))});
  out = step({from("w2", "", metrics(1, 1, 1, 7)), from("w2", "", finished(1, 1))});
  EXPECT_EQ(count(out, proto::Envelope::kMetricsAck, "w2"), 1);
  EXPECT_EQ(query("SELECT COUNT(*) FROM metrics"), "0");
  EXPECT_EQ(query("SELECT state FROM trials WHERE trial_id = 1"), "running");
  step({from("w1", "", started(1, 1)), from("w1", "", metrics(1, 1, 1, 1)), from("w1", "", finished(1, 1))});
  EXPECT_EQ(query("SELECT COUNT(*) FROM metrics"), "1");
  EXPECT_EQ(query("SELECT state FROM trials WHERE trial_id = 1"), "succeeded");
  // After the end, another worker still cannot overwrite its curve.
  step({from("w2", "", metrics(1, 1, 2, 1))});
  EXPECT_EQ(query("SELECT value FROM metrics WHERE step = 1"), "1.5");
  step({from("w2", "", metrics(1, 1, 3, 2))});
  EXPECT_EQ(query("SELECT COUNT(*) FROM metrics"), "1");
}

// A trial's progress columns (trials.last_step, trial_attempts.last_seq) are written behind
// its metric rows, which are stored with their batch: they reach the database at the next
// heartbeat tick, from the metric rows after a crash, and when the attempt ends.
TEST_F(BooksTest, ProgressWrittenBehindReachesTheDatabaseAtTheTickAfterACrashAndAtTheEnd) {
  submit(1, 0);
  auto out = step({from("w1", "", hello("w1"))});
  ASSERT_EQ(count(out, proto::Envelope::kAssign, "w1"), 1);
  step({from("w1", "", started(1, 1)), from("w1", "", metrics(1, 1, 1, 5))});
  step({from("w1", "", metrics(1, 1, 2, 9))});
  EXPECT_EQ(query("SELECT COUNT(*) FROM metrics"), "2");
  step({}, 1000);  // the heartbeat tick
  EXPECT_EQ(query("SELECT last_step FROM trials WHERE trial_id = 1"), "9");
  EXPECT_EQ(query("SELECT last_seq FROM trial_attempts WHERE trial_id = 1 AND attempt = 1"), "2");
  step({from("w1", "", metrics(1, 1, 3, 12))});
  core_.reset();  // a crash before the next tick
  start();
  EXPECT_EQ(query("SELECT last_step FROM trials WHERE trial_id = 1"), "12");
  step({from("w1", "", hello("w1", 1, {{1, 1}}))});  // it still runs the attempt
  out = step({from("w1", "", metrics(1, 1, 4, 15)), from("w1", "", finished(1, 1))});
  ASSERT_EQ(count(out, proto::Envelope::kFinishedAck, "w1"), 1);
  EXPECT_EQ(query("SELECT state FROM trials WHERE trial_id = 1"), "succeeded");
  EXPECT_EQ(query("SELECT last_step FROM trials WHERE trial_id = 1"), "15");
  EXPECT_EQ(query("SELECT last_seq FROM trial_attempts WHERE trial_id = 1 AND attempt = 1"), "4");
}

// A second worker with the same identity and another key is refused, also by a coordinator
// that restarted (the key is in the database); the first keeps its place.
TEST_F(BooksTest, AWorkerIdentityIsBoundToItsKey) {
  auto out = step({from("w1", "KEY-A", hello("w1"))});
  EXPECT_EQ(count(out, proto::Envelope::kWelcome, "w1"), 1);
  out = step({from("w1", "KEY-B", hello("w1"))});
  EXPECT_EQ(count(out, proto::Envelope::kWelcome), 0);
  EXPECT_EQ(query("SELECT public_key FROM workers WHERE worker_id = 'w1'"), "KEY-A");
  proto::Envelope hb;
  hb.mutable_heartbeat();
  const int64_t before = core_->worker_book.all().at("w1").last_heard_ms;
  step({from("w1", "KEY-B", hb)}, 500);
  EXPECT_EQ(core_->worker_book.all().at("w1").last_heard_ms, before);  // not taken as a sign of life
  core_.reset();
  start();
  out = step({from("w1", "KEY-B", hello("w1"))});
  EXPECT_EQ(count(out, proto::Envelope::kWelcome), 0);
  out = step({from("w1", "KEY-A", hello("w1"))});
  EXPECT_EQ(count(out, proto::Envelope::kWelcome, "w1"), 1);
}

// A failed COMMIT must not leave memory ahead of the database: the succeeded trial was not
// stored, so the worker's retransmitted outcome completes it and the sweep.
TEST_F(BooksTest, AFailedCommitRollsMemoryBackWithTheDatabase) {
  submit(1, 0);
  step({from("w1", "", hello("w1"))});
  step({from("w1", "", started(1, 1))});
  bool fail = true;
  core_->before_commit = [&] {
    if (fail) {
      fail = false;
      throw Error("disk I/O error (injected)");
    }
  };
  auto out = step({from("w1", "", metrics(1, 1, 1, 1)), from("w1", "", finished(1, 1))});
  EXPECT_TRUE(out.empty());  // nothing acked
  EXPECT_EQ(query("SELECT state FROM trials WHERE trial_id = 1"), "running");
  EXPECT_EQ(query("SELECT state FROM sweeps"), "running");
  ASSERT_TRUE(core_->trial_book.contains(1));  // memory agrees with the database
  // The worker retransmits; the coordinator asks it to register again (it forgot it), then
  // recovers the attempt from its Hello and takes the outcome.
  out = step({from("w1", "", metrics(1, 1, 1, 1))}, 1000);
  EXPECT_EQ(count(out, proto::Envelope::kReregister, "w1"), 1);
  step({from("w1", "", hello("w1", 1, {{1, 1}}, true))});
  out = step({from("w1", "", metrics(1, 1, 1, 1)), from("w1", "", finished(1, 1))});
  EXPECT_EQ(count(out, proto::Envelope::kFinishedAck, "w1"), 1);
  EXPECT_EQ(query("SELECT state FROM trials WHERE trial_id = 1"), "succeeded");
  EXPECT_EQ(query("SELECT state FROM sweeps"), "completed");
  EXPECT_EQ(query("SELECT COUNT(*) FROM metrics"), "1");
}

// A lost worker counts against the infrastructure budget, not max_retries: with
// max_retries 0, two lost workers do not fail a healthy trial.
TEST_F(BooksTest, LostWorkersDoNotSpendMaxRetries) {
  submit(1, 0);
  for (int attempt = 1; attempt <= 2; ++attempt) {
    const std::string w = "w" + std::to_string(attempt);
    auto out = step({from(w, "", hello(w))}, 10);
    ASSERT_EQ(count(out, proto::Envelope::kAssign, w), 1) << attempt;
    step({from(w, "", started(1, attempt))});
    step({}, 5000);  // silence: the worker is lost
    EXPECT_EQ(query("SELECT state FROM trials WHERE trial_id = 1"), "pending") << attempt;
    EXPECT_EQ(query("SELECT state FROM trial_attempts WHERE attempt = " + std::to_string(attempt)), "lost");
  }
  EXPECT_EQ(query("SELECT failures FROM trials WHERE trial_id = 1"), "0");
}

// A worker that refused an attempt is given none for a heartbeat interval; when that ends,
// the next batch assigns it one, also a batch of nothing but metric batches (which let the
// coordinator skip scheduling while every slot is busy) and before the next tick.
TEST_F(BooksTest, ACooledDownWorkerIsAssignedWhenItsCooldownEnds) {
  submit(3, 0);  // the tick at this step: the next one is 1000 ms later
  auto out = step({from("w1", "", hello("w1")), from("w2", "", hello("w2"))});
  ASSERT_EQ(count(out, proto::Envelope::kAssign, "w1"), 1);
  ASSERT_EQ(count(out, proto::Envelope::kAssign, "w2"), 1);
  int64_t w1_trial = 0, w2_trial = 0;
  for (const auto& e : out) {
    if (e.kind_case() != proto::Envelope::kAssign) continue;
    (e.sender() == "w1" ? w1_trial : w2_trial) = e.assign().trial_id();
  }
  step({from("w1", "", started(w1_trial, 1)), from("w2", "", started(w2_trial, 1))});
  auto refused = finished(w1_trial, 1);
  refused.mutable_finished()->set_outcome(proto::TRIAL_OUTCOME_PREEMPTED);
  out = step({from("w1", "", refused)}, 400);  // cooling down until 1000 ms from here
  EXPECT_EQ(count(out, proto::Envelope::kAssign), 0);
  out = step({from("w2", "", metrics(w2_trial, 1, 1, 1))}, 200);
  EXPECT_EQ(count(out, proto::Envelope::kAssign), 0);
  out = step({}, 500);  // the tick: w1 still cools down
  EXPECT_EQ(count(out, proto::Envelope::kAssign), 0);
  out = step({from("w2", "", metrics(w2_trial, 1, 2, 2))}, 250);  // before its end
  EXPECT_EQ(count(out, proto::Envelope::kAssign), 0);
  out = step({from("w2", "", metrics(w2_trial, 1, 3, 3))}, 100);  // after it, before a tick
  EXPECT_EQ(count(out, proto::Envelope::kAssign, "w1"), 1);
}

// A worker drained with exit_when_idle leaves as planned: not logged as a lost worker.
TEST_F(BooksTest, APlannedDrainIsNotALostWorker) {
  step({from("w1", "", hello("w1"))});
  proto::Envelope req;
  req.mutable_request()->set_request_id(2);
  req.mutable_request()->set_drain_worker("w1");
  auto out = step({Inbound{"client", true, "", wire::encode(req, "client")}});
  EXPECT_EQ(count(out, proto::Envelope::kDrain, "w1"), 1);
  step({}, 5000);  // it exits once idle: silence
  EXPECT_EQ(query("SELECT state FROM workers WHERE worker_id = 'w1'"), "drained");
  EXPECT_EQ(query("SELECT COUNT(*) FROM events WHERE kind = 'worker_lost'"), "0");
  EXPECT_EQ(query("SELECT COUNT(*) FROM events WHERE kind = 'worker_drained'"), "1");
}

// Rows of dead workers are deleted after worker_expiry_s.
TEST_F(BooksTest, DeadWorkersExpire) {
  core_.reset();
  opt_.worker_expiry_s = 1;
  start();
  step({from("w1", "", hello("w1")), from("w2", "", hello("w2"))});
  proto::Envelope hb;
  hb.mutable_heartbeat();
  for (int i = 0; i < 4; ++i) step({from("w2", "", hb)}, 1000);  // w1 silent: lost
  EXPECT_EQ(query("SELECT state FROM workers WHERE worker_id = 'w1'"), "lost");
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // last_seen is wall-clock time
  step({from("w2", "", hb)}, 61'000);
  EXPECT_EQ(query("SELECT COUNT(*) FROM workers WHERE worker_id = 'w1'"), "0");
  EXPECT_EQ(query("SELECT COUNT(*) FROM workers WHERE worker_id = 'w2'"), "1");
}

// Garbage input: log lines are bounded, and the memory kept per unknown peer is released.
TEST_F(BooksTest, GarbageIsRateLimitedAndUnknownPeersAreForgotten) {
  std::vector<Inbound> junk;
  for (int i = 0; i < 500; ++i) junk.push_back(Inbound{"peer" + std::to_string(i), false, "", "not a protobuf"});
  step(junk);
  EXPECT_GE(core_->log_limit.total_suppressed(), 480);
  proto::Envelope hb;
  hb.mutable_heartbeat();
  std::vector<Inbound> strangers;
  for (int i = 0; i < 200; ++i) strangers.push_back(from("stranger" + std::to_string(i), "", hb));
  auto out = step(strangers);
  EXPECT_EQ(count(out, proto::Envelope::kReregister), 200);
  EXPECT_EQ(core_->worker_book.reregister_asked(), 200u);
  step({}, 11'000);
  step({}, 1000);
  EXPECT_EQ(core_->worker_book.reregister_asked(), 0u);
}

}  // namespace
}  // namespace hylab::coordinator

namespace hylab::coordinator {
namespace {

// A reply over the client's size limit used to vanish (the client dropped the frame and said
// the coordinator "did not answer"); now the client hears why.
TEST_F(BooksTest, AnOversizedReplySaysSo) {
  core_.reset();
  opt_.max_reply_bytes = 4000;
  start();
  std::vector<Inbound> hellos;
  for (int i = 0; i < 60; ++i) hellos.push_back(from("worker-" + std::to_string(i), "", hello("worker-" + std::to_string(i))));
  step(hellos);
  proto::Envelope req;
  req.mutable_request()->set_request_id(7);
  req.mutable_request()->set_list_workers(true);
  auto out = step({Inbound{"client", true, "", wire::encode(req, "client")}});
  ASSERT_EQ(count(out, proto::Envelope::kReply, "client"), 1);
  const auto& reply = out.back().reply();
  EXPECT_FALSE(reply.ok());
  EXPECT_NE(reply.error().find("MiB a reply may carry"), std::string::npos) << reply.error();
}

// The same list asked for in pages (issue 15): every worker exactly once, in worker_id order,
// each page under the limit; a token from another list, or garbage, is refused.
TEST_F(BooksTest, ALongWorkerListComesWholeInPagesUnderTheLimit) {
  core_.reset();
  opt_.max_reply_bytes = 4000;
  start();
  std::vector<Inbound> hellos;
  std::set<std::string> want;
  for (int i = 0; i < 60; ++i) {
    // One id of 250 bytes: its page token (hex) is over 500 bytes.
    const std::string id = i == 30 ? "worker-3" + std::string(242, 'x') : "worker-" + std::to_string(i);
    hellos.push_back(from(id, "", hello(id)));
    want.insert(id);
  }
  step(hellos);
  auto ask = [&](int page_size, const std::string& token) {
    proto::Envelope req;
    req.mutable_request()->set_request_id(7);
    req.mutable_request()->set_list_workers(true);
    req.mutable_request()->set_page_size(page_size);
    req.mutable_request()->set_page_token(token);
    auto out = step({Inbound{"client", true, "", wire::encode(req, "client")}});
    EXPECT_EQ(count(out, proto::Envelope::kReply, "client"), 1);
    return out.back().reply();
  };
  for (int page_size : {1000, 7, 1}) {
    std::vector<std::string> seen;
    std::string token;
    int pages = 0;
    do {
      const auto reply = ask(page_size, token);
      ASSERT_TRUE(reply.ok()) << reply.error();
      EXPECT_LE(static_cast<int64_t>(reply.ByteSizeLong()), opt_.max_reply_bytes);
      const auto rows = nlohmann::json::parse(reply.json());
      EXPECT_LE(static_cast<int>(rows.size()), page_size);
      EXPECT_FALSE(rows.empty());
      for (const auto& w : rows) seen.push_back(w["worker_id"].get<std::string>());
      token = reply.next_page_token();
      ++pages;
    } while (!token.empty() && pages < 200);
    EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()), want) << "page_size " << page_size;
    EXPECT_EQ(seen.size(), want.size());
    EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
    EXPECT_GE(pages, page_size == 7 ? 9 : 2);  // 60 rows of ~200 bytes do not fit in 4000 bytes
  }
  for (const std::string bad : {"s1", "wzz", "t1:2", "w"}) {
    const auto reply = ask(10, bad);
    EXPECT_FALSE(reply.ok()) << bad;
    EXPECT_NE(reply.error().find("is not a page of the worker list"), std::string::npos) << reply.error();
  }
}

TEST_F(BooksTest, TheWalIsCheckpointedBetweenStepsAndNotWhileSlotMessagesWait) {
  // Commits do not checkpoint (that stalled whatever the commit answered); the driver asks
  // between steps: at 1,000 pages when nothing that can free a slot waits, else at 4,000.
  auto& db = core_->store->db();
  auto write = [&](int pages) {
    db.exec("CREATE TABLE IF NOT EXISTS filler(x BLOB)");
    store::Tx tx(db);
    for (int i = 0; i < pages; ++i) db.exec("INSERT INTO filler VALUES(zeroblob(4000))");
    tx.commit();
  };
  write(1200);
  ASSERT_GE(db.wal_pages(), 1000);  // no checkpoint inside the commit
  core_->checkpoint_if_due(/*slot_messages_waiting=*/true, now_);
  EXPECT_GE(db.wal_pages(), 1000);  // a Finished waits: not now
  core_->checkpoint_if_due(false, now_);
  EXPECT_EQ(db.wal_pages(), 0);
  write(4100);
  core_->checkpoint_if_due(true, now_);  // past 4,000 pages it runs whatever waits
  EXPECT_EQ(db.wal_pages(), 0);
  write(500);
  core_->checkpoint_if_due(false, now_);
  EXPECT_GT(db.wal_pages(), 400);  // under 1,000: not yet
}

}  // namespace
}  // namespace hylab::coordinator
