// How far a sweep has got, for `hylab sweep show` and `hylab sweep submit --wait`: pure
// functions of the coordinator's show_sweep reply (store::Store::sweep_json) and `now`.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "common/states.h"

namespace hylab::cli {

// Exit statuses of `hylab sweep submit --wait` / `hylab sweep wait`.
constexpr int kSweepSucceeded = 0;     // every trial succeeded (or was early-stopped)
constexpr int kSweepError = 1;         // could not submit or follow (bad file, coordinator gone)
constexpr int kSweepUsage = 2;         // bad command line (main's usage errors)
constexpr int kSweepTrialsFailed = 3;  // finished, but some trials failed
constexpr int kSweepCancelled = 4;     // cancelled before it finished

struct SweepProgress {
  int64_t total = 0;
  int64_t done = 0;  // trials in a final state
  int64_t running = 0;
  int64_t failed = 0;     // final, neither succeeded nor early-stopped
  double percent = 0;     // 100 * done / total (100 for an empty sweep)
  double eta_s = -1;      // remaining time at the pace so far; -1 = unknown yet
  bool finished = false;  // the sweep's state is final (completed or cancelled)
  proto::SweepState state = proto::SWEEP_STATE_UNSPECIFIED;
};

// `now`: unix seconds (the sweep's created_at is too).
SweepProgress sweep_progress(const nlohmann::json& sweep, double now);

// "sweep 3 (quickstart): 5/8 trials done (62%), 2 running, 0 failed, ETA 4m10s"
std::string progress_line(const nlohmann::json& sweep, const SweepProgress& p);

// The exit status for a finished sweep (see the constants above).
int sweep_exit_status(const SweepProgress& p);

// The exit status of `hylab local` for its finished sweep: 0 when it has trials and every one
// succeeded or was early-stopped (a normal outcome of early stopping), else 1.
int local_exit_status(const nlohmann::json& sweep);

// 250 -> "4m10s", 7300 -> "2h01m", 42 -> "42s".
std::string format_duration(double seconds);

}  // namespace hylab::cli
