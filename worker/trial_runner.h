// One attempt of one trial on this worker: the `hylab train` child process in its run
// directory, its metrics spool, and how its exit becomes an outcome.
//
// Run directory (shared by the attempts of a trial; lives under the worker's work_dir,
// which must be a shared filesystem for a retry on another worker to resume):
//   <run_dir>/config.json            resolved config (written by every attempt)
//   <run_dir>/attempt-<A>.log        the trainer's stdout and stderr
//   <run_dir>/metrics.a<A>.jsonl     the trainer's records (--metrics_jsonl), the spool
//   <run_dir>/checkpoints/           the trainer's checkpoints (--resume reads them)
//
// The child runs in its own process group (so cancel reaches every rank it starts) and dies
// with the worker (PR_SET_PDEATHSIG), so a killed worker leaves no orphan writing into a run
// directory that another worker resumes.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/spawn.h"
#include "proto/wire.pb.h"

namespace hylab::worker {

struct LaunchSpec {
  int64_t trial_id = 0;
  int64_t attempt = 0;
  std::string run_dir;           // absolute
  std::string config_json;
  bool resume = false;
  int64_t resume_step = -1;      // with resume: the checkpoint's step (-1: the trainer's newest)
  int nproc = 1;                 // trainer processes (--nproc) on this node
  std::vector<int> gpu_indices;  // CUDA_VISIBLE_DEVICES; empty on a CPU worker
  std::string hylab_bin;         // the `hylab` executable
  std::map<std::string, std::string> env;  // extra environment (multi-node rendezvous)
};

// The argv of the trainer for a spec (without environment).
std::vector<std::string> trainer_argv(const LaunchSpec& spec);

struct ExitInfo {
  proto::TrialOutcome outcome = proto::TRIAL_OUTCOME_FAILED;
  int exit_code = 0;  // -N when killed by signal N
  std::string reason;
};

// Exit status (from waitpid) -> outcome, per the trainer contract: 0 succeeded, 2 bad
// config, 3 diverged, 4 oom, 143/SIGTERM terminated; anything else failed. A requested
// cancel makes a termination "cancelled"; a worker shutting down makes it "preempted";
// a SIGTERM from elsewhere (a batch system) is "preempted" too.
ExitInfo classify_exit(int wait_status, bool cancel_requested, bool shutting_down);

// The trainer's own words for a bad config: the text after the last "config error: " in
// its log tail (at most 1,000 bytes), or "" when there is none. Added to the reason of a
// TRIAL_OUTCOME_BAD_CONFIG so that `sweep show` names the field or path that was wrong.
std::string config_error_of(const std::string& log_tail);

// "" when <work_dir>/<run_dir> stays inside work_dir with every symbolic link on the way
// resolved; else why not. A run directory (or a parent of it) that is a link out of the
// work_dir is refused: the worker would write config, logs and checkpoints elsewhere.
std::string run_dir_escape(const std::string& work_dir, const std::string& run_dir);

class TrialRunner {
 public:
  explicit TrialRunner(LaunchSpec spec);
  ~TrialRunner();  // kills a still-running process group
  TrialRunner(const TrialRunner&) = delete;
  TrialRunner& operator=(const TrialRunner&) = delete;

  // Creates the run directory, writes config.json, spawns the trainer. Throws hylab::Error.
  void start();
  // Reaps the child if it exited (non-blocking); kills stragglers of its group then.
  // Escalates a cancel to SIGKILL once the grace period is over. Returns exited().
  bool poll(int64_t now_ms);
  // SIGTERM to the process group now, SIGKILL after grace_ms.
  void cancel(int64_t now_ms, int grace_ms, bool shutting_down);

  bool started() const { return proc_.pid() > 0; }
  bool exited() const { return exited_; }
  pid_t pid() const { return proc_.pid(); }
  ExitInfo exit_info() const;
  std::string log_tail(size_t max_bytes = 4000) const;
  const LaunchSpec& spec() const { return spec_; }
  std::string metrics_path() const;
  std::string log_path() const;

 private:
  LaunchSpec spec_;
  Process proc_;  // in a process group of its own
  bool exited_ = false;
  int wait_status_ = 0;
  bool cancel_requested_ = false;
  bool shutting_down_ = false;
  int64_t kill_at_ms_ = -1;
};

// Metrics files of earlier attempts in a run directory: (attempt, path), attempts < before.
std::vector<std::pair<int64_t, std::string>> earlier_attempt_spools(const std::string& run_dir,
                                                                    int64_t before);

// The metric records of earlier attempts (< attempt) that a resumed attempt relays before its
// trainer's own: one per (name, step), the latest attempt's, sorted by step, each carrying the
// attempt that wrote it. The resumed trainer re-emits every step after the checkpoint it loads
// (resume_step), so records up to that step are relayed. (Relaying up to the newest checkpoint
// *record* in a spool left a gap whenever a checkpoint reached the disk but its record did not.)
std::vector<proto::Metric> relayed_metrics(const std::string& run_dir, int64_t attempt,
                                           int64_t resume_step);

}  // namespace hylab::worker
