// The coordinator's book of trials: the pending and running trials of running sweeps and
// their attempts. Started, metrics, Finished and rendezvous from workers; concluding an
// attempt (retry, or the trial's end), requeueing one that never started, stopping a trial;
// recovery of attempts found running at start; and scheduling pending trials onto the free
// slots that WorkerBook reports. Handlers take a message and `now` and append what to send
// to an `Effects`; rows go through the store inside the caller's transaction.
//
// Every message is idempotent on (trial_id, attempt): a repeat or a stale attempt is
// acknowledged and otherwise ignored (or cancelled on the worker that still runs it).
// Single-threaded.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "coordinator/book_env.h"
#include "coordinator/effects.h"
#include "coordinator/scheduler.h"
#include "coordinator/worker_book.h"
#include "proto/wire.pb.h"

namespace hylab::coordinator {

class SweepBook;

// One worker's share of a running attempt.
struct NodeRun {
  std::string worker_id;
  std::vector<int> slots;
  int node_rank = 0;
  bool confirmed = false;  // Started received, or listed in the worker's held trials
  bool finished = false;
};

struct ActiveTrial {
  int64_t trial_id = 0, sweep_id = 0, trial_index = 0;
  int slots = 1, nodes = 1, priority = 0;
  proto::TrialState state = proto::TRIAL_STATE_PENDING;  // pending | running
  int64_t attempt = 0;
  int failures = 0;                // trainer errors (max_retries)
  int losses = 0;                  // attempts lost to the infrastructure (kMaxLosses)
  std::vector<NodeRun> run;       // while running, node_rank order
  int64_t assigned_ms = 0;
  std::optional<int64_t> recover_deadline_ms;  // set for attempts found running at start
  std::string recover_worker;     // node 0's worker of such an attempt: it may still hold it
  std::string config_json, run_dir;
  int64_t checkpoint_step = -1;
  std::string rendezvous;         // node 0's payload, relayed to the others
};

class TrialBook {
 public:
  // `workers` and `sweeps` are called back (slots, sweep completion); they must outlive it.
  TrialBook(BookEnv env, WorkerBook& workers, SweepBook& sweeps);
  TrialBook(const TrialBook&) = delete;  // the other books hold references to it
  TrialBook& operator=(const TrialBook&) = delete;

  // ---- messages from a registered worker (WorkerBook::admit said yes) ----
  void on_started(const std::string& worker_id, const proto::Started& s, int64_t now, Effects& fx);
  void on_metrics(const std::string& worker_id, const proto::MetricsBatch& b, int64_t now, Effects& fx);
  void on_finished(const std::string& worker_id, const proto::Finished& f, int64_t now, Effects& fx);
  void on_rendezvous(const std::string& worker_id, const proto::Rendezvous& r, int64_t now, Effects& fx);

  // ---- each iteration ----
  // Once per heartbeat interval: attempts found running at start that nobody claimed in
  // time; the progress written behind (below).
  void tick(int64_t now, Effects& fx);
  // Starts what pending trials fit on the free slots. When no accepting worker has a free
  // slot it remembers so, and schedule_due() is false until something may have freed one
  // (slots_may_have_changed()) or the earliest cooldown that idles a free slot ends: a batch
  // of metric batches alone then skips the pass over every worker.
  void schedule(int64_t now, Effects& fx);
  bool schedule_due(int64_t now) const { return !all_slots_busy_ || now >= cooldown_over_ms_; }
  void slots_may_have_changed() { all_slots_busy_ = false; }

  // ---- for WorkerBook: an attempt is "current" when it is its trial's running attempt ----
  bool is_current(const AttemptKey& key) const;
  // Marks the worker's nodes of the attempt confirmed; false (nothing marked) if not current.
  bool confirm(const AttemptKey& key, const std::string& worker_id);
  bool recovering(const AttemptKey& key) const;  // current, and found running at start
  // Whether the worker runs a confirmed node of the attempt (the trial's latest).
  bool node_confirmed(const AttemptKey& key, const std::string& worker_id) const;
  // The worker claims its node of a recovered attempt (`node_rank`: nullopt for workers too old
  // to say, which take their order of arrival).
  void claim_recovered(const AttemptKey& key, const std::string& worker_id, const std::vector<int>& slots,
                       std::optional<int> node_rank);
  // Abandons a current attempt that never started and makes its trial pending again; false
  // (nothing done) if the attempt is not current.
  bool requeue_unstarted(const AttemptKey& key, const std::string& reason, Effects& fx);
  // The worker no longer holds the attempt: lost if its node had started (`lost_reason`),
  // else requeued (`unstarted_reason`). Nothing if the attempt is not current.
  void attempt_gone(const AttemptKey& key, const std::string& worker_id, const std::string& lost_reason,
                    const std::string& unstarted_reason, Effects& fx);

  // ---- for SweepBook ----
  void add(ActiveTrial t);
  // The sweep's pending and running trials from the database; `keep_known` keeps the ones
  // this book already has as they are (a resumed or extended sweep).
  void load_sweep(const store::SweepRow& row, int64_t now, bool keep_known);
  // Ends a trial for good (cancelled sweep, early stop), cancelling its attempt.
  void stop(int64_t trial_id, proto::TrialState state, const std::string& reason, Effects& fx);
  std::vector<int64_t> ids_of(int64_t sweep_id) const;
  bool contains(int64_t trial_id) const { return trials_.count(trial_id) > 0; }
  bool running(int64_t trial_id) const;
  int64_t pending_slots() const;
  // The newest active trial of the sweep, if any; `hint` (an earlier answer) is checked first.
  std::optional<int64_t> newest_of(int64_t sweep_id, int64_t hint) const;

  // At start, inside the caller's transaction: the running trials' last_step from their
  // stored metrics (progress written behind may not have reached the row before a crash).
  void recover_progress();

  void clear() {
    unflushed_.clear();
    trials_.clear();
    pending_.clear();
    running_slots_.clear();
    all_slots_busy_ = false;
    recovering_ = false;
  }
  // ---- read-only: the simulator's invariants, tests ----
  const std::map<int64_t, ActiveTrial>& all() const { return trials_; }
  // Empty when the scheduler's index (pending_, running_slots_) agrees with the trials, else
  // what differs.
  std::string check_index() const;

 private:
  // Whether `worker_id` may report on the attempt: it was assigned the attempt (or claimed
  // it after a restart), runs a node of it, or the database names it as the attempt's worker.
  bool reports_on(const std::string& worker_id, int64_t trial_id, int64_t attempt);
  void conclude(ActiveTrial& t, proto::TrialOutcome outcome, int exit_code, const std::string& reason,
                const std::string& log_tail, Effects& fx);
  void requeue(ActiveTrial& t, const std::string& reason, Effects& fx);
  // Adds `t` to the book / removes it, and its share of the scheduler's index.
  void put(ActiveTrial t);
  void drop(std::map<int64_t, ActiveTrial>::iterator it);
  // Every change of a trial's state goes through this, so the index follows.
  void set_state(ActiveTrial& t, proto::TrialState state);
  void file(const ActiveTrial& t);
  void unfile(const ActiveTrial& t);
  // Writes the progress held back for every attempt (tick) or for one trial's (its attempt
  // ends); write_progress writes one attempt's.
  struct Progress;
  void flush_progress();
  void flush_progress(int64_t trial_id);
  void write_progress(const AttemptKey& key, const Progress& p);

  BookEnv env_;
  WorkerBook& workers_;
  SweepBook& sweeps_;
  std::map<int64_t, ActiveTrial> trials_;  // pending and running trials of running sweeps
  // The scheduler's view of trials_, kept as trials come, go and change state: the pending
  // ones in the order it takes them, and the slots each sweep's running trials hold (so a
  // call does not look at every trial; at 2,000 workers and ~16,000 trials those scans and
  // the sort were most of its ~1.5 ms).
  PendingSet pending_;
  std::map<int64_t, int> running_slots_;
  bool all_slots_busy_ = false;
  int64_t cooldown_over_ms_ = 0;  // the earliest end of a cooldown that keeps a free slot idle
  // Some trial may still have a recover deadline (set only when loading; tick() clears it
  // once none has): until then schedule() looks for workers with unclaimed attempts.
  bool recovering_ = false;
  // Progress written behind. Every metrics batch raised trials.last_step and
  // trial_attempts.last_seq: two row updates, one of them rewriting the trial's ~1.4 KB
  // row, 56% of the loop's instructions per metrics batch at 1,000 workers. Both are
  // progress shown to users and protocol bookkeeping, not the metrics (whose rows go with
  // the batch), so an active trial's are kept here and written once per heartbeat interval
  // and when its attempt ends; recover_progress() redoes last_step after a crash.
  struct Progress {
    int64_t last_step = -1, last_seq = 0;
  };
  std::map<AttemptKey, Progress> unflushed_;
};

}  // namespace hylab::coordinator
