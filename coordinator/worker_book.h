// The coordinator's book of workers: who is registered (Hello, bound to the key it first
// registered with), when each was last heard from, which slots it uses, draining, and what
// happens when one goes quiet (lost, or drained as planned). Its handlers take a message and
// `now` and append what to send to an `Effects`; rows go through the store inside the
// caller's transaction (coordinator_impl.h).
//
// The trials a worker holds belong to TrialBook: this book keeps only the worker's side
// (slots per attempt) and asks TrialBook, through its "for WorkerBook" calls, what an
// attempt is and what to do when a worker no longer holds one. Single-threaded.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "coordinator/book_env.h"
#include "coordinator/effects.h"
#include "coordinator/policy.h"
#include "coordinator/scheduler.h"
#include "proto/wire.pb.h"

namespace hylab::coordinator {

class TrialBook;

struct Held {  // an attempt on a worker, as the coordinator assigned it
  std::vector<int> slots;
  int64_t since_ms = 0;
};

struct WorkerInfo {
  std::string worker_id, host, public_key, work_dir;
  int slots = 0;
  int pid = 0;                       // of the worker process (from its Hello)
  int64_t cooldown_until_ms = 0;     // no Assign before then: it just refused one
  std::vector<proto::Gpu> gpus;
  int64_t last_heard_ms = 0;
  bool draining = false;
  std::map<AttemptKey, std::vector<int>> reported;  // held trials from the latest hello/heartbeat
  std::map<AttemptKey, Held> assigned;               // attempts this coordinator counts as here
  std::vector<int> free_slots() const;
  bool has_free_slot() const;  // !free_slots().empty(), without building the list
};

class WorkerBook {
 public:
  // `trials` is called back (lost workers, reconcile); it must outlive this book.
  WorkerBook(BookEnv env, const std::string& coordinator_id, TrialBook& trials);
  WorkerBook(const WorkerBook&) = delete;  // the other books hold references to it
  WorkerBook& operator=(const WorkerBook&) = delete;

  // ---- messages ----
  void on_hello(const proto::Hello& h, const std::string& user_id, int64_t now, Effects& fx);
  // Whether a worker's message other than Hello may be handled: its sender is registered and
  // speaks with the key it registered with. An unregistered sender is asked to register (at
  // most once a heartbeat interval). An admitted sender counts as heard from at `now`.
  bool admit(const proto::Envelope& env, const std::string& routing_id, const std::string& user_id,
             int64_t now, Effects& fx);
  void on_heartbeat(const std::string& worker_id, const proto::Heartbeat& hb, int64_t now, Effects& fx);
  // The client's `hylab workers drain`: the reply's JSON; throws hylab::Error if not registered.
  std::string drain(const std::string& worker_id, Effects& fx);

  // ---- once a heartbeat interval ----
  // Heartbeats to every worker, liveness (lost or drained), forgetting unknown peers, and
  // once a minute the deletion of long-dead worker rows.
  void tick(int64_t now, Effects& fx);

  // At start: every worker row is lost until its worker registers with this coordinator.
  void load();
  void clear();  // forgets every worker (a reload)

  // ---- for TrialBook ----
  bool registered(const std::string& worker_id) const;
  bool counts(const std::string& worker_id, const AttemptKey& key) const;  // assigned here
  bool holds(const std::string& worker_id, const AttemptKey& key) const;   // assigned or reported
  void hold(const std::string& worker_id, const AttemptKey& key, const std::vector<int>& slots, int64_t now);
  bool release(const std::string& worker_id, const AttemptKey& key);  // false: not registered
  void let_go(const std::string& worker_id, const AttemptKey& key);   // its Finished was taken
  void cool_down(const std::string& worker_id, int64_t until_ms);
  // Whether an accepting (not draining, not cooling down) worker has a free slot; if none,
  // `cooldown_over` is the earliest end of a cooldown that keeps a free slot idle.
  bool any_free_slot(int64_t now, int64_t* cooldown_over) const;
  std::vector<SchedWorker> sched_view(int64_t now) const;  // every worker, for schedule()

  // ---- for SweepBook ----
  int64_t free_slot_count() const;  // over the workers that are not draining

  // ---- read-only: client lists, the simulator's invariants, tests ----
  const std::map<std::string, WorkerInfo>& all() const { return workers_; }
  size_t reregister_asked() const { return reregister_asked_.size(); }

 private:
  // Compares what the worker holds with what this coordinator counts on it.
  void reconcile(WorkerInfo& w, const google::protobuf::RepeatedPtrField<proto::HeldTrial>& held,
                 int64_t now, Effects& fx);
  void lose(const std::string& worker_id, const std::string& why, Effects& fx);
  void expire_rows();

  BookEnv env_;
  const std::string coordinator_id_;
  TrialBook& trials_;
  Liveness liveness_;
  std::map<std::string, WorkerInfo> workers_;
  std::map<std::string, int64_t> reregister_asked_;  // unknown peer -> when we last asked it
  int64_t next_expiry_ms_ = 0;                       // next deletion of dead worker rows
};

}  // namespace hylab::coordinator
