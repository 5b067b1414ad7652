// The coordinator's logic: all of its state and every decision, without sockets or a clock
// of its own. `step(messages, now)` handles one batch of inbound envelopes inside one
// transaction and returns the envelopes to send once that transaction is committed. The
// daemon (coordinator.cpp) drives it from a ZeroMQ poll loop; the simulator
// (tests/sim) drives it from simulated workers with a simulated clock.
//
// coordinator.cpp: step, clients, load; client_pages.cpp: list replies in pages; trial_book.cpp: workers and trial transitions;
// search_book.cpp: tpe proposals. Single-threaded.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "coordinator/coordinator.h"
#include "common/log_limit.h"
#include "coordinator/early_stop.h"
#include "coordinator/policy.h"
#include "sweep/search.h"
#include "proto/sweep.pb.h"
#include "proto/wire.pb.h"
#include "store/store.h"

namespace hylab::coordinator {

using AttemptKey = std::pair<int64_t, int64_t>;  // (trial_id, attempt)

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
  int64_t last_reregister_ms = 0;
  bool draining = false;
  std::map<AttemptKey, std::vector<int>> reported;  // held trials from the latest hello/heartbeat
  std::map<AttemptKey, Held> assigned;               // attempts this coordinator counts as here
  std::vector<int> free_slots() const;
  bool has_free_slot() const;  // !free_slots().empty(), without building the list
};

struct SweepInfo {
  store::SweepRow row;
  proto::EarlyStop early_stop;
  bool minimize = true;
  std::map<int64_t, std::vector<std::pair<int64_t, double>>> series;  // sweep metric per trial
  bool series_dirty = false;
  // Per trial: (trial_index, tokens per step), for hyperband's brackets and token rungs.
  std::map<int64_t, std::pair<int64_t, int64_t>> trial_meta;
  // tpe and random sweeps (search_book.cpp): the state proposals come from, the number of
  // trials the sweep has and the next trial_index; exhausted when no new trial can be found.
  std::optional<SearchState> search;
  int64_t n_trials = 0, next_index = 0;
  bool exhausted = false;
  // An active trial of this sweep seen last time finish_sweep_if_done looked (the newest, so
  // it stays active the longest): checked first, so that the scan of every active trial runs
  // only when it has gone (the scan after each finished attempt was 11% of the coordinator's
  // CPU at 1,000 workers and 7,000 trials). Only a hint: it is checked before it is believed.
  int64_t active_hint = 0;
  bool proposes() const {
    return search && search->spec.method() == "tpe" && !exhausted && n_trials < search->spec.count();
  }
};

struct Outgoing {
  std::string routing_id;
  bool delimiter = false;  // REQ peers want an empty frame before the payload
  std::string payload;
};

// One message as it came off the ROUTER socket.
struct Inbound {
  std::string routing_id;
  bool delimiter = false;
  std::string user_id;     // the CurveZMQ public key (Z85) of the peer; empty when insecure
  std::string payload;     // one encoded Envelope
};

struct Coordinator::Impl {
  CoordinatorOptions opt;
  Liveness liveness;
  std::string coordinator_id;
  std::unique_ptr<store::Store> store;

  std::map<std::string, WorkerInfo> workers;
  std::map<int64_t, ActiveTrial> trials;  // pending and running trials of running sweeps
  std::map<int64_t, SweepInfo> sweeps;    // running sweeps
  std::map<std::string, int64_t> reregister_asked;  // unknown peer -> when we last asked it (expired in periodic)
  LogLimit log_limit;                     // for what peers can provoke
  int64_t next_expiry_ms = 0;             // next sweep of dead worker rows
  std::vector<Outgoing> outbox;
  int64_t now = 0;                        // ms of the caller's clock, set by step()
  int64_t next_heartbeat_ms = 0;
  // Fault injection (the simulator): called just before COMMIT; throwing fails the commit.
  std::function<void()> before_commit;
  bool needs_reload = false;  // a failed iteration could not rebuild memory yet
  // schedule() found no accepting worker with a free slot, and nothing that could free one
  // or end a cooldown has happened since: a batch of metric batches alone (they change no
  // slot, worker or pending trial) skips schedule() and its pass over every worker until a
  // message of another kind, the tick, a reload, or cooldown_over_ms.
  bool all_slots_busy = false;
  int64_t cooldown_over_ms = 0;  // the earliest end of a cooldown that keeps a free slot idle

  // Opens the database and loads the running sweeps; `now_ms` is the caller's clock.
  Impl(CoordinatorOptions o, int64_t now_ms);

  // One iteration: every message in `in`, then (when due) heartbeats and liveness, early
  // stopping, proposals and scheduling, in one transaction. Returns what to send, only once
  // committed. When the transaction fails, memory is rebuilt from the database (nothing of
  // the iteration happened; peers retransmit what was not acked) and nothing is sent.
  std::vector<Outgoing> step(const std::vector<Inbound>& in, int64_t now_ms);

  // coordinator.cpp
  void reload();  // drops all memory and loads it again from the database
  void handle_inbound(const Inbound& m);
  void dispatch(const proto::Envelope& env, const std::string& routing_id, bool delimiter,
                const std::string& user_id);
  void send(const std::string& routing_id, proto::Envelope env, bool delimiter = false);
  void handle_request(const proto::ClientRequest& req, const std::string& routing_id, bool delimiter);
  std::string submit_sweep(const proto::SubmitSweep& s);
  std::string cancel_sweep(int64_t sweep_id);
  std::string resume_sweep(int64_t sweep_id);
  // client_pages.cpp: the lists, a page at a time (ClientRequest.page_size, page_token)
  int64_t max_reply_bytes() const;
  void list_sweeps(const proto::ClientRequest& req, proto::ClientReply* reply);
  void show_sweep(const proto::ClientRequest& req, proto::ClientReply* reply);
  void list_workers(const proto::ClientRequest& req, proto::ClientReply* reply);
  void load_state();
  void load_sweep(const store::SweepRow& row);

  // search_book.cpp: tpe proposals, sweep extend / suggest
  void load_search(SweepInfo& s);
  void propose_search_trials();
  void add_active_trial(const SweepInfo& s, int64_t trial_id, const TrialPlan& plan);
  std::vector<KnownTrial> known_trials(int64_t sweep_id, const std::string& metric, bool minimize);
  std::string extend_sweep(const proto::SearchExtend& e);
  std::string extend_with_trials(const proto::SearchExtend& e, const store::SweepRow& row);
  std::string suggest_sweep(const proto::SearchSuggest& s);

  // trial_book.cpp
  void on_hello(const proto::Hello& h, const std::string& user_id);
  void on_heartbeat(WorkerInfo& w, const proto::Heartbeat& hb);
  void reconcile(WorkerInfo& w, const google::protobuf::RepeatedPtrField<proto::HeldTrial>& held,
                 bool full_report);
  void on_started(WorkerInfo& w, const proto::Started& s);
  void on_metrics(WorkerInfo& w, const proto::MetricsBatch& b);
  void on_finished(WorkerInfo& w, const proto::Finished& f);
  void on_rendezvous(WorkerInfo& w, const proto::Rendezvous& r);
  bool reports_on(const WorkerInfo& w, int64_t trial_id, int64_t attempt);
  void expire_workers();
  void conclude_attempt(ActiveTrial& t, proto::TrialOutcome outcome, int exit_code,
                        const std::string& reason, const std::string& log_tail);
  void requeue_unstarted(ActiveTrial& t, const std::string& reason);
  void stop_trial(int64_t trial_id, proto::TrialState state, const std::string& reason);
  void lose_worker(const std::string& worker_id, const std::string& why);
  void send_cancel(const std::string& worker_id, int64_t trial_id, int64_t attempt,
                   const std::string& reason);
  void periodic();
  void check_early_stop();
  void schedule();
  void finish_sweep_if_done(int64_t sweep_id);
};

}  // namespace hylab::coordinator
