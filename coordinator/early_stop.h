// Early stopping: which running trials of a sweep cannot win and should stop. A pure
// function of the sweep metric's series (step, value) of every trial of the sweep.
//
// "best up to s" = the best value (min or max by goal) among a trial's points at steps <= s.
//
// median (Vizier's median stopping rule): a running trial whose newest point is at step
//   s >= min_steps stops if its best up to s is worse than the median of the other trials'
//   best up to s, counting only trials whose series reached step s; needs min_trials of them.
// asha (asynchronous successive halving, stopping variant): rungs at min_steps * eta^k,
//   k = 0 .. rungs-1. A running trial at its highest reached rung r (not yet the next rung)
//   stops unless its best up to r ranks in the top max(1, floor(n / eta)) of the n trials
//   (itself included) that reached r; needs n >= eta.
// hyperband: brackets of ASHA with rungs in tokens (coordinator/hyperband.h).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "proto/sweep.pb.h"

namespace hylab::coordinator {

struct MetricSeries {
  int64_t trial_id = 0;
  bool running = false;
  std::vector<std::pair<int64_t, double>> points;  // (step, value), steps increasing
  int64_t trial_index = 0;      // hyperband: picks the bracket
  int64_t tokens_per_step = 0;  // hyperband: rungs in tokens (0: a step counts as one token)
};

struct StopDecision {
  int64_t trial_id = 0;
  std::string reason;  // names the rule, the step and the numbers compared
};

std::vector<StopDecision> early_stop(const proto::EarlyStop& rule, bool minimize,
                                     const std::vector<MetricSeries>& series);

}  // namespace hylab::coordinator
