// The SQLite schema of the results database (documented table by table in docs/SCHEMA.md)
// and the small record writers shared by the coordinator and local runs.
//
// One name per concept: trial_id, sweep_id, worker_id, attempt are the same words in the
// protocol, the C++ code, these columns and the CLI flags. Times are Unix seconds (REAL).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/metrics.h"
#include "common/run_config.h"
#include "common/states.h"
#include "store/db.h"

namespace hylab::store {

// Bumped when a table changes shape; stored in PRAGMA user_version.
constexpr int kSchemaVersion = 2;

// Creates every table and index if missing (idempotent, safe with concurrent openers).
// Throws hylab::Error if the file has a newer schema version than this build knows.
void ensure_schema(Db& db);

// Stores points for (trial_id, attempt) and raises trials.last_step to their newest step.
// Each (trial_id, name, step) is kept once: a re-emitted step (a resumed attempt, a
// retransmitted batch) replaces the earlier value. Call inside a Tx for speed when writing
// many batches.
void put_metrics(Db& db, int64_t trial_id, int64_t attempt, const std::vector<MetricPoint>& points);
// put_metrics in two: the metric rows alone (returns their newest step, -1 for none), and
// trials.last_step = max(last_step, step). The coordinator raises last_step once per
// heartbeat interval, not per batch: that update rewrites the trial's wide row.
int64_t insert_metrics(Db& db, int64_t trial_id, int64_t attempt, const std::vector<MetricPoint>& points);
void raise_last_step(Db& db, int64_t trial_id, int64_t step);
// The newest step among the trial's stored metrics (-1 for none): two index seeks per metric
// name, whatever the number of rows.
int64_t newest_metric_step(Db& db, int64_t trial_id);

// Replaces the trial's row in trial_summary, with the provenance columns taken from
// s.provenance_json (keys as kProvenanceKeys) and disk_bytes (0 = unknown: NULL).
void put_summary(Db& db, int64_t trial_id, const RunSummary& s);

// The provenance columns of trial_summary, in order; also the keys of RunSummary's
// provenance_json (trainer/provenance.h writes them).
inline constexpr const char* kProvenanceKeys[] = {"hylab_version", "hylab_commit", "torch_version",
                                                  "cuda_version",  "nccl_version", "driver_version",
                                                  "gpu_name",      "host"};

// Appends one row to events. Ids <= 0 / empty worker_id are stored as NULL.
void add_event(Db& db, const std::string& kind, const std::string& message, int64_t sweep_id = 0,
               int64_t trial_id = 0, const std::string& worker_id = "", int64_t attempt = 0);

// Inserts a trial row (and its trial_params) for a resolved config; the typed columns
// (pattern, sizes, Mamba settings, seed) are taken from it so results need no JSON parsing.
// params: the swept (name, value-as-written) pairs. Returns trial_id.
struct NewTrial {
  int64_t sweep_id = 0;
  int64_t trial_index = 0;
  std::vector<std::pair<std::string, std::string>> params;
  RunConfig resolved;
  int64_t gpus = 0;
  int64_t priority = 0;
  proto::TrialState state = proto::TRIAL_STATE_PENDING;
  int64_t attempt = 0;
  std::string worker_id;
  std::string run_dir;
};
int64_t insert_trial(Db& db, const NewTrial& t);

// {"name": "value", ...} with numbers unquoted where the value parses as one.
std::string params_to_json(const std::vector<std::pair<std::string, std::string>>& params);

}  // namespace hylab::store
