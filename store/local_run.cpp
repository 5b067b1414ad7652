#include "store/local_run.h"

#include <unistd.h>

#include <filesystem>

#include "common/check.h"
#include "store/db.h"
#include "store/schema.h"

namespace hylab::store {

struct LocalRun::Impl {
  std::unique_ptr<Db> db;
  int64_t trial_id = 0;
  int64_t attempt = 0;
  bool finished = false;
};

namespace {

constexpr const char* kLocalSweep = "local";

std::string local_worker_id() {
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  return std::string("local:") + host;
}

std::string normal_run_dir(const std::string& run_dir) {
  return std::filesystem::weakly_canonical(std::filesystem::absolute(run_dir)).string();
}

// The sweep that holds local runs; created on first use.
int64_t local_sweep_id(Db& db) {
  auto find = db.prepare("SELECT sweep_id FROM sweeps WHERE name = ? AND state = 'local' "
                         "ORDER BY sweep_id LIMIT 1");
  find.bind(1, kLocalSweep);
  if (find.step()) return find.int64(0);
  auto ins = db.prepare(
      "INSERT INTO sweeps(name, state, gpus_per_trial, max_retries, created_at) "
      "VALUES(?, 'local', 0, 0, ?)");
  ins.bind(1, kLocalSweep).bind(2, unix_time_now());
  ins.run();
  return db.last_insert_rowid();
}

void insert_attempt(Db& db, int64_t trial_id, int64_t attempt, bool resumed) {
  auto st = db.prepare(
      "INSERT OR REPLACE INTO trial_attempts(trial_id, attempt, worker_id, state, resumed, "
      "started_at) VALUES(?,?,?,'running',?,?)");
  st.bind(1, trial_id).bind(2, attempt).bind(3, local_worker_id()).bind(4, resumed ? 1 : 0);
  st.bind(5, unix_time_now());
  st.run();
}

}  // namespace

LocalRun::LocalRun(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

std::unique_ptr<LocalRun> LocalRun::open(const std::string& db_path, const RunConfig& resolved,
                                         const std::string& run_dir) {
  auto impl = std::make_unique<Impl>();
  impl->db = Db::open(db_path);
  Db& db = *impl->db;
  ensure_schema(db);
  Tx tx(db);
  const int64_t sweep_id = local_sweep_id(db);
  auto count = db.prepare("SELECT COUNT(*) FROM trials WHERE sweep_id = ?");
  count.bind(1, sweep_id);
  count.step();
  NewTrial t;
  t.sweep_id = sweep_id;
  t.trial_index = count.int64(0);
  count.reset();
  t.params = {{"name", resolved.name()}};
  t.resolved = resolved;
  t.gpus = 0;
  t.state = proto::TRIAL_STATE_RUNNING;
  t.attempt = 1;
  t.worker_id = local_worker_id();
  t.run_dir = normal_run_dir(run_dir);
  impl->trial_id = insert_trial(db, t);
  impl->attempt = 1;
  insert_attempt(db, impl->trial_id, 1, false);
  add_event(db, "trial_started", "local run in " + t.run_dir, sweep_id, impl->trial_id,
            t.worker_id, 1);
  tx.commit();
  return std::unique_ptr<LocalRun>(new LocalRun(std::move(impl)));
}

std::unique_ptr<LocalRun> LocalRun::reopen(const std::string& db_path, const std::string& run_dir) {
  auto impl = std::make_unique<Impl>();
  impl->db = Db::open(db_path);
  Db& db = *impl->db;
  ensure_schema(db);
  const std::string dir = normal_run_dir(run_dir);
  Tx tx(db);
  auto find = db.prepare(
      "SELECT t.trial_id, t.attempt, t.sweep_id FROM trials t JOIN sweeps s USING(sweep_id) "
      "WHERE s.state = 'local' AND t.run_dir = ? ORDER BY t.trial_id DESC LIMIT 1");
  find.bind(1, dir);
  if (!find.step()) {
    HYLAB_FAIL("database {} has no local run recorded for run_dir {}; --resume needs the "
               "database the first run wrote to (--db)",
               db_path, dir);
  }
  impl->trial_id = find.int64(0);
  impl->attempt = find.int64(1) + 1;
  const int64_t sweep_id = find.int64(2);
  find.reset();
  db.prepare("UPDATE trials SET state='running', attempt=?, reason='', finished_at=NULL, "
             "worker_id=? WHERE trial_id=?")
      .bind(1, impl->attempt)
      .bind(2, local_worker_id())
      .bind(3, impl->trial_id)
      .run();
  insert_attempt(db, impl->trial_id, impl->attempt, true);
  add_event(db, "trial_resumed", "local run resumed in " + dir, sweep_id, impl->trial_id,
            local_worker_id(), impl->attempt);
  tx.commit();
  return std::unique_ptr<LocalRun>(new LocalRun(std::move(impl)));
}

LocalRun::~LocalRun() {
  if (impl_ && !impl_->finished) {
    try {
      finish(proto::TRIAL_STATE_FAILED, "the trainer ended without recording an outcome");
    } catch (...) {
      // Destructors do not throw; the trial stays 'running' in the database.
    }
  }
}

void LocalRun::write(const std::vector<MetricPoint>& points) {
  Tx tx(*impl_->db);
  put_metrics(*impl_->db, impl_->trial_id, impl_->attempt, points);
  tx.commit();
}

void LocalRun::write_summary(const RunSummary& summary) {
  Tx tx(*impl_->db);
  put_summary(*impl_->db, impl_->trial_id, summary);
  tx.commit();
}

void LocalRun::flush() {
  // Every write() commits its own transaction; nothing is buffered here.
}

void LocalRun::finish(proto::TrialState state, const std::string& reason) {
  if (!is_final(state) || state == proto::TRIAL_STATE_STOPPED) {
    HYLAB_FAIL("LocalRun::finish: state {} is not a final state of a local run; allowed: "
               "succeeded, failed, diverged, oom, cancelled",
               proto::TrialState_Name(state));
  }
  const std::string word = to_string(state);
  Db& db = *impl_->db;
  Tx tx(db);
  const double now = unix_time_now();
  db.prepare("UPDATE trials SET state=?, reason=?, finished_at=? WHERE trial_id=?")
      .bind(1, word)
      .bind(2, reason)
      .bind(3, now)
      .bind(4, impl_->trial_id)
      .run();
  db.prepare("UPDATE trial_attempts SET state=?, reason=?, finished_at=? "
             "WHERE trial_id=? AND attempt=?")
      .bind(1, word)
      .bind(2, reason)
      .bind(3, now)
      .bind(4, impl_->trial_id)
      .bind(5, impl_->attempt)
      .run();
  add_event(db, "trial_finished", word + (reason.empty() ? "" : ": " + reason), 0,
            impl_->trial_id, local_worker_id(), impl_->attempt);
  tx.commit();
  impl_->finished = true;
}

int64_t LocalRun::trial_id() const { return impl_->trial_id; }

}  // namespace hylab::store
