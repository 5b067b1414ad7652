// Learning curves compared at equal training tokens (`hylab results --curves IDS --x tokens`).
//
// Trials of different patterns, batch sizes or budgets log at different steps; comparing them
// at equal steps compares different amounts of training. Here each curve's steps become token
// counts (step * tokens per optimizer step) and the curves are read at the same token counts.
//
// The rule (docs/RESULTS.md): the token grid is the sorted union of the token counts at which
// any of the trials has a point of the metric. A trial's cell at token count x is the value of
// its last point at or before x (the newest value it had reached by then; no interpolation),
// and null before its first point and after its last one (no extrapolation past what it
// trained).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "store/db.h"
#include "store/results.h"

namespace hylab::store {

struct Curve {
  int64_t trial_id = 0;
  int64_t tokens_per_step = 0;                       // tokens per optimizer step
  std::vector<std::pair<int64_t, double>> points;    // (step, value), steps increasing
};

// Pure: columns "tokens", then "<metric> #<trial_id>" per curve, in the given order.
Table align_at_tokens(const std::vector<Curve>& curves, const std::string& metric);

// Reads the metric's points of each trial. Tokens per step: tok_per_s * step_time_s of the
// trial's logged steps (the trainer's tok/s is tokens per step / step time; the median over
// steps, rounded), else from its config: total_batch_size, or device_batch_size * max_seq_len
// when that is -1 (one rank assumed). Throws hylab::Error naming --curves for an unknown
// trial and --metric for a metric none of them has.
std::vector<Curve> load_curves(Db& db, const std::vector<int64_t>& trial_ids, const std::string& metric);

}  // namespace hylab::store
