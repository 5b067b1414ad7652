// The worker daemon (`hylab worker`): one DEALER socket to the coordinator, one poll loop that
// owns all state, one TrialRunner per attempt it holds.
//
// Paranoid Pirate: Hello on connect (with the attempts it still holds), heartbeats every
// interval (the coordinator's Welcome sets it), and when the coordinator has been silent for
// `liveness` intervals the worker drops the socket, opens a new one and says Hello again.
// Metrics go out in numbered batches per attempt, at most a window of them unacknowledged;
// unacknowledged batches are sent again after a reconnect (or when no ack came for 5
// intervals). While the coordinator is away, records wait in the trainer's metrics file.
// An attempt's Finished is sent once all its batches are acknowledged, and repeated until
// acknowledged. On stop (SIGTERM): every trial is terminated as "preempted" (the coordinator
// runs it again without counting a failure), its Finished delivered, then the worker exits.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "wire/security.h"

namespace hylab::worker {

struct WorkerOptions {
  std::string coordinator = "tcp://127.0.0.1:5555";
  std::string work_dir = "runs/work";  // run directories: work_dir/<assign.run_dir>
  std::string gpus = "auto";           // auto | none | 0,1,...
  int slots = 1;                       // CPU trial slots when there is no GPU
  int heartbeat_ms = 1000;             // until the coordinator's Welcome says otherwise
  int liveness = 3;
  int kill_grace_ms = 10000;           // SIGTERM -> SIGKILL
  int shutdown_timeout_ms = 30000;     // on stop: give up delivering after this long
  std::string hylab_bin;               // default: this executable (/proc/self/exe)
  std::string worker_id;               // default: host:pid:random
  wire::Security security;
};

class Worker {
 public:
  explicit Worker(WorkerOptions options);  // detects the inventory, connects; throws hylab::Error
  ~Worker();
  // Serves until `stop` becomes true (then shuts down as described above) or a Drain with
  // exit_when_idle finds it idle. Returns the process exit status (0).
  int run(const std::atomic<bool>& stop);
  const std::string& worker_id() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace hylab::worker
