// The coordinator's logic: all of its state and every decision, without sockets or a clock
// of its own. `step(messages, now)` handles one batch of inbound envelopes inside one
// transaction and returns the envelopes to send once that transaction is committed. The
// daemon (coordinator.cpp) drives it from a ZeroMQ poll loop; the simulator (sim/) drives it
// from simulated workers with a simulated clock.
//
// Impl is the thin driver; the state and the decisions are in three books, each the owner of
// its state, whose handlers take a message and `now` and append what to send to an Effects
// (effects.h):
//   worker_book.h  workers: Hello, heartbeats, reconcile of held attempts, liveness, drain
//   trial_book.h   trials and attempts: Started, metrics, Finished, rendezvous, retries,
//                  stop, recovery after a restart, scheduling
//   sweep_book.h   running sweeps: submit/cancel/resume/extend/suggest, early stopping,
//                  tpe proposals, completion
// They call one another only through the calls their headers list "for WorkerBook", "for
// TrialBook", "for SweepBook" (a lost worker's attempts are concluded by TrialBook; an
// ended trial may complete its sweep), never through each other's maps.
// coordinator.cpp: the driver (step, routing, client requests) and the sockets;
// client_pages.cpp: list replies in pages. Single-threaded.
//
// Why rows are written by the books, not returned as effects. The books write through
// `store` while step()'s transaction is open, and step() commits before anything is sent,
// so the rule "an ack means stored" holds either way. Returning rows instead was weighed
// and not done, because:
//  - ids: a submitted sweep and every proposed or extended trial get their SQLite
//    auto-increment ids at the insert, and those ids are needed at once: they key the
//    books' maps, name the run_dir, go into the Assign, the events and the reply.
//  - reads after writes: handlers read rows earlier handlers of the same batch wrote: the
//    owner of an attempt (trial_attempts.worker_id, written by schedule()) in reports_on, a
//    trial's current attempt once it has left the books (on_metrics), a worker's key
//    (on_hello), the trials and search state `extend`/`resume`/proposals read back. With
//    deferred rows each of these needs an overlay of pending rows: a second store.
//  - failure containment: each message runs in a savepoint; a message whose write fails is
//    rolled back alone (its sends dropped) and the batch goes on. Rows applied after every
//    handler would fail outside that savepoint and roll back the whole batch; a client
//    request could no longer answer with the reason its write was refused.
// The rows that need none of this (metric points, events) are not worth a second write
// path with other failure semantics. So the effects are the messages; rows stay direct.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/log_limit.h"
#include "coordinator/coordinator.h"
#include "coordinator/effects.h"
#include "coordinator/inbox.h"
#include "coordinator/sweep_book.h"
#include "coordinator/trial_book.h"
#include "coordinator/worker_book.h"
#include "proto/wire.pb.h"
#include "store/store.h"

namespace hylab::coordinator {

struct Coordinator::Impl {
  CoordinatorOptions opt;
  std::string coordinator_id;
  std::unique_ptr<store::Store> store;
  LogLimit log_limit;  // for what peers can provoke
  // In this order: each is given references to the others (used only once step() runs).
  WorkerBook worker_book;
  TrialBook trial_book;
  SweepBook sweep_book;
  int64_t next_heartbeat_ms = 0;
  // Fault injection (the simulator): called just before COMMIT; throwing fails the commit.
  std::function<void()> before_commit;
  bool needs_reload = false;  // a failed iteration could not rebuild memory yet

  // Opens the database and loads the running sweeps; `now_ms` is the caller's clock.
  Impl(CoordinatorOptions o, int64_t now_ms);

  // One iteration: every message in `in`, then (when due) heartbeats and liveness, early
  // stopping, proposals and scheduling, in one transaction. Returns what to send, only once
  // committed. When the transaction fails, memory is rebuilt from the database (nothing of
  // the iteration happened; peers retransmit what was not acked) and nothing is sent.
  std::vector<Outgoing> step(const std::vector<Inbound>& in, int64_t now_ms);
  // Between steps: the WAL checkpoint SQLite would run inside a commit past 1,000 pages, here
  // when no message that can free a slot waits (past 4,000 pages whatever waits). The store's
  // connection does not checkpoint inside commits (store::Db::manual_checkpoints).
  void checkpoint_if_due(bool slot_messages_waiting, int64_t now_ms);

  // coordinator.cpp
  void load_state(int64_t now);
  void reload(int64_t now);  // drops all memory and loads it again from the database
  void handle_inbound(const Inbound& m, int64_t now, Effects& fx);
  void dispatch(const proto::Envelope& env, const std::string& routing_id, bool delimiter,
                const std::string& user_id, int64_t now, Effects& fx);
  void handle_request(const proto::ClientRequest& req, const std::string& routing_id, bool delimiter,
                      int64_t now, Effects& fx);
  // client_pages.cpp: the lists, a page at a time (ClientRequest.page_size, page_token)
  int64_t max_reply_bytes() const;
  void list_sweeps(const proto::ClientRequest& req, proto::ClientReply* reply);
  void show_sweep(const proto::ClientRequest& req, proto::ClientReply* reply);
  void list_workers(const proto::ClientRequest& req, int64_t now, proto::ClientReply* reply);
};

}  // namespace hylab::coordinator
