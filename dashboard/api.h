// The dashboard's JSON API: read-only queries over the results database (docs/SCHEMA.md),
// one function per /api/ route (docs/DASHBOARD.md). Pure reads on a connection the caller
// owns (the HTTP server opens a read-only one per request), so they never block the writer
// (WAL) and can be tested without a socket. Torch-free.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "store/db.h"

namespace hylab::dashboard {

// GET /api/sweeps: every sweep (the "local" one too) with its state counts, progress in
// [0, 1] (finished trials count 1, running ones last_step / num_iterations) and an ETA
// (elapsed * (1 - progress) / progress; null when nothing is known yet or the sweep ended).
nlohmann::json sweeps(store::Db& db, double now);

// GET /api/sweeps/{id}: the sweep (as above plus metric, spec) and its trials, one object per
// row of `hylab results --sweep id` (store/results.h). Throws NotFound for an unknown sweep.
nlohmann::json sweep(store::Db& db, int64_t sweep_id, double now);

// GET /api/sweeps/{id}/curves?metric=NAME&max_points=N: one series per trial,
// {trial_id, tokens_per_step, flops_per_token (null until the trial's summary exists),
//  points: [[step, value], ...]}; at most max_points points per trial (evenly strided,
// the last point always kept).
nlohmann::json sweep_curves(store::Db& db, int64_t sweep_id, const std::string& metric,
                            int max_points);

// GET /api/sweeps/{id}/layers: one row per trial, ordered by val_bpb (unevaluated last):
// {trial_id, state, val_bpb, block_pattern, layers: "TTMM"}.
nlohmann::json layer_map(store::Db& db, int64_t sweep_id);

// GET /api/trials/{id}: every column of the trial and of its summary, parsed params/config,
// provenance (when the database records it), attempts, recent events, the run directory
// (absolute when it can be resolved under work_dir) and the text samples found in its
// train.log or attempt logs.
nlohmann::json trial(store::Db& db, int64_t trial_id, const std::string& work_dir);

// GET /api/trials/{id}/curves?max_points=N: {metric name: [[step, value], ...], ...} plus
// tokens_per_step and flops_per_token.
nlohmann::json trial_curves(store::Db& db, int64_t trial_id, int max_points);

// GET /api/sweeps/{id}/pareto?x=AXIS: val_bpb against one of pareto_axes(), one point per
// trial with both values: {x, x_goal, y, y_goal, points: [{trial_id, state, x, y, front}]}.
// The front (store/compare.h) is taken over the succeeded trials. Throws std::invalid_argument
// for another axis.
const std::vector<std::string>& pareto_axes();
nlohmann::json pareto(store::Db& db, int64_t sweep_id, const std::string& x);

// GET /api/sweeps/{id}/groups?group_by=a,b&include_stopped=1: store/compare.h's groups_json
// (mean ± std, n, rank, Welch marking) plus "footer", the lines `hylab results --group_by`
// prints under its table. Default group_by: every swept parameter but the seed
// (block_pattern when none).
nlohmann::json groups(store::Db& db, int64_t sweep_id, const std::vector<std::string>& group_by,
                      bool include_stopped);

// "T*2,M*2" / "(T,M)*2" / "T,M" or a resolved config's list -> one letter per layer.
std::string expand_pattern(const std::string& compact);

// An unknown sweep or trial: the server answers 404 with the message.
struct NotFound : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace hylab::dashboard
