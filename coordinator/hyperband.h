// Hyperband (Li et al., 2017) as an early-stopping rule for asynchronous sweeps, in the
// bracketed form of async successive halving: every trial belongs to one bracket, and
// within its bracket it is judged by ASHA at rungs measured in training tokens.
//
//   brackets  s = 0 .. s_max, s_max = floor(log_eta(max_tokens / min_tokens));
//             a trial's bracket is trial_index mod (s_max + 1)
//   rungs     bracket s: min_tokens * eta^(s + k) <= max_tokens, k = 0, 1, ...
//             (bracket 0 is the most aggressive; bracket s_max judges only at its one rung)
//   decision  a running trial at its highest reached rung r continues if its metric at r
//             tokens ranks in the top max(1, floor(n / eta)) of the n >= eta trials of its
//             bracket that reached r; otherwise it stops.
//
// "At r tokens" is exact: each trial's metric is interpolated linearly between its two
// points around r, with tokens = step x tokens_per_step of that trial (its own batch size),
// so trials with different batch sizes are compared after equal training data.
#pragma once

#include <optional>
#include <vector>

#include "coordinator/early_stop.h"

namespace hylab::coordinator {

int hyperband_brackets(const proto::EarlyStop& rule);  // s_max + 1

// The metric at `tokens`, interpolated; nullopt if the series has not reached it.
std::optional<double> value_at_tokens(const MetricSeries& s, double tokens);

std::optional<StopDecision> hyperband_rule(const proto::EarlyStop& rule, bool minimize,
                                           const MetricSeries& trial,
                                           const std::vector<MetricSeries>& all);

}  // namespace hylab::coordinator
