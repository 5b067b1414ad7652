// The coordinator's view of the database: the writes its event loop makes and the reads it
// needs to start again after a restart or to answer clients.
//
// The coordinator is the only writer of sweep trials (LocalRun writes only "local" trials).
// Methods do not open transactions: the event loop wraps one iteration's writes in one Tx
// (store.db()), commits, and only then sends acknowledgements.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/metrics.h"
#include "common/states.h"
#include "store/db.h"
#include "store/schema.h"

namespace hylab::store {

struct SweepRow {
  int64_t sweep_id = 0;
  std::string name;
  std::string spec_yaml;
  std::string spec_path;
  std::string metric_name = "val_bpb";
  std::string metric_goal = "minimize";
  int priority = 0;
  int gpus_per_trial = 1;
  int nodes_per_trial = 1;
  int max_retries = 2;
  std::string early_stop_json;
  proto::SweepState state = proto::SWEEP_STATE_RUNNING;
  double created_at = 0;
};

struct TrialRow {
  int64_t trial_id = 0;
  int64_t sweep_id = 0;
  int64_t trial_index = 0;
  int gpus = 1;
  int priority = 0;
  proto::TrialState state = proto::TRIAL_STATE_UNSPECIFIED;
  int64_t attempt = 0;
  int failures = 0;
  std::string worker_id;
  std::string run_dir;
  std::string config_json;
  std::string reason;
  int64_t last_step = -1;
  int64_t checkpoint_step = -1;
};

struct WorkerRow {
  std::string worker_id;
  std::string host;
  int gpus = 0;
  std::string gpu_names;  // JSON list
  double gpu_mem_gib = 0;
  double mem_gib = 0;
  int cpus = 0;
  int slots = 0;
  std::string public_key;
  proto::WorkerState state = proto::WORKER_STATE_ALIVE;
};

class Store {
 public:
  // Opens or creates the database with the schema. Throws hylab::Error.
  static std::unique_ptr<Store> open(const std::string& path);
  Db& db() { return *db_; }

  // Inserts the sweep (state running) and its trials (state pending, run_dir
  // "sweep-<sweep_id>/trial-<trial_id>"). trials[i].sweep_id is filled in. Returns sweep_id.
  int64_t create_sweep(const SweepRow& sweep, std::vector<NewTrial> trials);
  std::vector<SweepRow> sweeps(proto::SweepState state);  // UNSPECIFIED = all (but local)
  SweepRow sweep(int64_t sweep_id);                         // throws if unknown
  void set_sweep_state(int64_t sweep_id, proto::SweepState state);

  // Pending and running trials of one sweep (0 = of every running sweep).
  std::vector<TrialRow> active_trials(int64_t sweep_id = 0);
  std::vector<TrialRow> trials_of(int64_t sweep_id);
  TrialRow trial(int64_t trial_id);  // throws if unknown

  // A new attempt: trial -> running on worker_id; a trial_attempts row.
  void start_attempt(int64_t trial_id, int64_t attempt, const std::string& worker_id, bool resumed);
  // How the attempt ended (only while the attempt row is still running).
  void finish_attempt(int64_t trial_id, int64_t attempt, proto::AttemptState state,
                      const std::string& reason, int exit_code, const std::string& log_tail);
  // The trial's state; final states also set finished_at.
  void set_trial_state(int64_t trial_id, proto::TrialState state, int failures,
                       const std::string& reason);
  void set_checkpoint_step(int64_t trial_id, int64_t step);
  int64_t last_seq(int64_t trial_id, int64_t attempt);
  void set_last_seq(int64_t trial_id, int64_t attempt, int64_t seq);

  void upsert_worker(const WorkerRow& w);
  void set_worker_state(const std::string& worker_id, proto::WorkerState state);

  // The sweep metric's series of every trial of a sweep, for early stopping.
  std::vector<std::pair<int64_t, std::vector<std::pair<int64_t, double>>>> metric_series(
      int64_t sweep_id, const std::string& name);

  // Answers for clients, whole.
  nlohmann::json sweeps_json();
  nlohmann::json sweep_json(int64_t sweep_id);  // the sweep, its trials, state counts
  nlohmann::json workers_json();

  // The same lists a row at a time, for replies in pages (ClientRequest.page_size). Each
  // visit_* calls `visit(key, row)` for the rows after the row whose key is `after` ("" =
  // from the first row), in key order, until `visit` returns false. A key names its row in
  // its list for good ("s<sweep_id>", "t<trial_index>:<trial_id>", "w<hex of worker_id>"),
  // so paging neither repeats nor skips a row while rows are added, changed or deleted
  // between pages. A malformed `after` (it came from a client) throws hylab::Error.
  using RowVisitor = std::function<bool(const std::string& key, nlohmann::json row)>;
  void visit_sweeps(const std::string& after, const RowVisitor& visit);
  void visit_trials(int64_t sweep_id, const std::string& after, const RowVisitor& visit);
  void visit_workers(const std::string& after, const RowVisitor& visit);
  // show_sweep's reply without its trials: the sweep's fields and its trials' state counts.
  nlohmann::json sweep_header_json(int64_t sweep_id);

 private:
  explicit Store(std::unique_ptr<Db> db) : db_(std::move(db)) {}
  std::unique_ptr<Db> db_;
};

}  // namespace hylab::store
