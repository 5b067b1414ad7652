// The coordinator daemon (`hylab coordinator`): one ZeroMQ ROUTER socket, one poll loop that
// owns all state, the only writer of the sweep trials in the SQLite database.
//
// Each loop iteration: poll (ROUTER + the ZAP handler socket) -> handle every waiting message
// inside one transaction (a savepoint per message, so a bad message rolls back alone) ->
// periodic work (heartbeats, liveness, recovery deadlines) -> early stopping -> scheduling ->
// COMMIT -> only then send the queued replies and acks. So an ack means "stored".
//
// Restart: all durable state is in the database. On start, running trials are "recovered":
// the workers re-register (they hear a Reregister, or notice the silence) and list the
// attempts they still hold; those carry on. A recovered attempt nobody claims within the
// grace period is lost and retried.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "wire/security.h"

namespace hylab::coordinator {

struct CoordinatorOptions {
  std::string db_path = "runs/hylab.db";
  std::string bind = "tcp://*:5555";
  std::string endpoint_file;  // written (atomically) with the bound endpoint, e.g. for port 0
  int heartbeat_ms = 1000;
  int liveness = 3;           // missed heartbeats before a worker is lost
  int recovery_grace_ms = 0;  // 0 = 4 * liveness * heartbeat_ms
  // Rows of lost or drained workers not heard from for this long are deleted (their
  // identity is free again; `hylab workers` stays short). Checked once a minute.
  int64_t worker_expiry_s = 7 * 24 * 3600;
  // The largest client reply (a larger frame would be dropped by the client's size limit and
  // look like a coordinator that did not answer): lists are answered in pages under it
  // (client_pages.cpp), anything else over it is refused with an error that says so.
  // 0 = the wire limit less 64 KiB for the envelope.
  int64_t max_reply_bytes = 0;
  // libzmq I/O threads: they accept connections, run the ZMTP (and CurveZMQ) handshakes and
  // move every message, in parallel with the poll loop. Four let a thousand workers that
  // connect at once in ~15 ms sooner (a cluster starting, a coordinator restarting) but cost
  // ~15% more CPU per message (docs/RELIABILITY.md, "Load", session 11).
  int io_threads = 1;
  wire::Security security;
};

class Coordinator {
 public:
  explicit Coordinator(CoordinatorOptions options);  // opens the DB, binds; throws hylab::Error
  ~Coordinator();
  // Serves until `stop` becomes true (checked at least every 100 ms).
  void run(const std::atomic<bool>& stop);
  std::string endpoint() const;  // the bound endpoint

  struct Impl;  // the logic (coordinator_impl.h); the simulator drives it without sockets

 private:
  struct Net;   // the sockets
  std::unique_ptr<Impl> impl_;
  std::unique_ptr<Net> net_;
};

}  // namespace hylab::coordinator
