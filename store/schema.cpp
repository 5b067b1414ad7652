#include "store/schema.h"

#include <algorithm>
#include <cmath>
#include <array>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <cstdlib>

#include "common/check.h"

namespace hylab::store {
namespace {

// Keep docs/SCHEMA.md in step with this text.
constexpr const char* kSchemaSql = R"SQL(
CREATE TABLE IF NOT EXISTS workers (
  worker_id    TEXT PRIMARY KEY,        -- chosen by the worker: host:pid:random
  host         TEXT NOT NULL,
  gpus         INTEGER NOT NULL,        -- 0 = CPU-only worker (runs one CPU trial at a time)
  gpu_names    TEXT NOT NULL DEFAULT '',-- JSON list, one entry per GPU
  gpu_mem_gib  REAL NOT NULL DEFAULT 0, -- per GPU
  mem_gib      REAL NOT NULL DEFAULT 0, -- host memory
  cpus         INTEGER NOT NULL DEFAULT 0,
  public_key   TEXT NOT NULL DEFAULT '',-- Z85 CurveZMQ key ('' when --insecure)
  state        TEXT NOT NULL,           -- alive | draining | lost | drained
  first_seen   REAL NOT NULL,
  last_seen    REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS sweeps (
  sweep_id        INTEGER PRIMARY KEY,
  name            TEXT NOT NULL,        -- "local" for `hylab train` runs without daemons
  spec_yaml       TEXT NOT NULL DEFAULT '',
  spec_path       TEXT NOT NULL DEFAULT '',
  metric_name     TEXT NOT NULL DEFAULT 'val_bpb',
  metric_goal     TEXT NOT NULL DEFAULT 'minimize',  -- minimize | maximize
  priority        INTEGER NOT NULL DEFAULT 0,        -- higher runs first
  gpus_per_trial  INTEGER NOT NULL DEFAULT 1,        -- slots: GPUs, or CPU processes
  nodes_per_trial INTEGER NOT NULL DEFAULT 1,
  max_retries     INTEGER NOT NULL DEFAULT 2,
  early_stop_json TEXT NOT NULL DEFAULT '',          -- the spec's early_stop as JSON
  search_json     TEXT NOT NULL DEFAULT '',          -- tpe/random: spec + base (sweep/search.h)
  state           TEXT NOT NULL,        -- running | completed | cancelled | local
  created_at      REAL NOT NULL,
  finished_at     REAL
);

CREATE TABLE IF NOT EXISTS trials (
  trial_id        INTEGER PRIMARY KEY,
  sweep_id        INTEGER NOT NULL REFERENCES sweeps(sweep_id),
  trial_index     INTEGER NOT NULL,     -- position in the sweep's expansion
  params_json     TEXT NOT NULL,        -- the swept values, e.g. {"block_pattern":"(T,M)*2"}
  config_json     TEXT NOT NULL,        -- resolved RunConfig (common/run_config.h)
  config_hash     TEXT NOT NULL,
  block_pattern   TEXT NOT NULL,        -- resolved, run-length form: "T*2,M*2", "T,M,T,M"
  n_layer         INTEGER NOT NULL,
  n_embd          INTEGER NOT NULL,
  n_attn_layers   INTEGER NOT NULL,
  n_mamba_layers  INTEGER NOT NULL,
  mamba_d_state   INTEGER NOT NULL,
  mamba_expand    INTEGER NOT NULL,
  mamba_d_conv    INTEGER NOT NULL,
  seed            INTEGER NOT NULL,
  gpus            INTEGER NOT NULL,     -- GPUs the trial needs (0 = CPU)
  priority        INTEGER NOT NULL DEFAULT 0,
  state           TEXT NOT NULL,        -- see TrialState (common/states.h)
  attempt         INTEGER NOT NULL DEFAULT 0,  -- current or last attempt; 0 = never started
  failures        INTEGER NOT NULL DEFAULT 0,  -- failed attempts (counted against max_retries)
  worker_id       TEXT,                 -- worker of the current or last attempt
  run_dir         TEXT NOT NULL DEFAULT '',     -- sweeps: relative to the workers' work_dir
  reason          TEXT NOT NULL DEFAULT '',
  last_step       INTEGER NOT NULL DEFAULT -1,  -- newest metric step stored
  checkpoint_step INTEGER NOT NULL DEFAULT -1,  -- newest durable checkpoint reported
  created_at      REAL NOT NULL,
  started_at      REAL,
  finished_at     REAL
);
CREATE INDEX IF NOT EXISTS trials_by_sweep ON trials(sweep_id, trial_index);
CREATE INDEX IF NOT EXISTS trials_by_state ON trials(state);
CREATE INDEX IF NOT EXISTS trials_by_run_dir ON trials(run_dir);

CREATE TABLE IF NOT EXISTS trial_params (
  trial_id   INTEGER NOT NULL REFERENCES trials(trial_id),
  name       TEXT NOT NULL,             -- a RunConfig key
  value      TEXT NOT NULL,             -- as written in the sweep (YAML scalar / compact pattern)
  value_num  REAL,                      -- the same value when it is a number, else NULL
  PRIMARY KEY (trial_id, name)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS trial_attempts (
  trial_id     INTEGER NOT NULL REFERENCES trials(trial_id),
  attempt      INTEGER NOT NULL,        -- 1, 2, ...
  worker_id    TEXT NOT NULL,           -- node_rank 0's worker for multi-node trials
  state        TEXT NOT NULL,           -- running, then succeeded|failed|diverged|oom|cancelled|stopped|preempted|lost|abandoned
  reason       TEXT NOT NULL DEFAULT '',
  exit_code    INTEGER,
  log_tail     TEXT NOT NULL DEFAULT '',
  resumed      INTEGER NOT NULL DEFAULT 0,  -- 1 if launched with --resume
  last_seq     INTEGER NOT NULL DEFAULT 0,  -- newest metrics batch sequence number stored
  started_at   REAL NOT NULL,
  finished_at  REAL,
  run_dir      TEXT NOT NULL DEFAULT '',  -- absolute, on the worker (from its Started message)
  PRIMARY KEY (trial_id, attempt)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS metrics (
  trial_id   INTEGER NOT NULL,
  name       TEXT NOT NULL,             -- train_loss, lr, step_time_s, tok_per_s, mfu, val_bpb, ...
  step       INTEGER NOT NULL,
  value      REAL NOT NULL,
  wall_time  REAL NOT NULL,
  attempt    INTEGER NOT NULL,          -- the attempt that produced the stored value
  PRIMARY KEY (trial_id, name, step)    -- one value per (trial, metric, step); curves by prefix
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS trial_summary (
  trial_id              INTEGER PRIMARY KEY REFERENCES trials(trial_id),
  params_total          INTEGER NOT NULL,
  params_json           TEXT NOT NULL DEFAULT '',
  flops_per_token       REAL NOT NULL,
  steps                 INTEGER NOT NULL,
  total_time_s          REAL NOT NULL,
  final_val_bpb         REAL,           -- NULL = not evaluated
  final_train_loss      REAL,
  tok_per_s             REAL NOT NULL,
  mfu                   REAL NOT NULL,
  peak_mem_gib          REAL NOT NULL,
  decode_tok_per_s_b1   REAL NOT NULL,
  decode_tok_per_s_b32  REAL NOT NULL,
  cache_bytes           INTEGER NOT NULL,
  updated_at            REAL NOT NULL,
  hylab_version         TEXT NOT NULL DEFAULT '',  -- provenance (trainer/provenance.h)
  hylab_commit          TEXT NOT NULL DEFAULT '',
  torch_version         TEXT NOT NULL DEFAULT '',
  cuda_version          TEXT NOT NULL DEFAULT '',
  nccl_version          TEXT NOT NULL DEFAULT '',
  driver_version        TEXT NOT NULL DEFAULT '',
  gpu_name              TEXT NOT NULL DEFAULT '',
  host                  TEXT NOT NULL DEFAULT '',
  disk_bytes            INTEGER,      -- run folder size at the end (after checkpoint retention)
  recall_acc            REAL,         -- associative-recall probe, exact match (NULL = not run)
  val_bpb_2x            REAL,         -- val_bpb at 2x max_seq_len (NULL = not run)
  val_bpb_4x            REAL          -- val_bpb at 4x max_seq_len (NULL = not run)
);

CREATE TABLE IF NOT EXISTS events (
  event_id   INTEGER PRIMARY KEY,
  time       REAL NOT NULL,
  kind       TEXT NOT NULL,             -- sweep_submitted, trial_assigned, trial_finished, worker_lost, ...
  sweep_id   INTEGER,
  trial_id   INTEGER,
  worker_id  TEXT,
  attempt    INTEGER,
  message    TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_by_trial ON events(trial_id, event_id);
)SQL";

// Columns added after version 2, as (table, column, declaration). Each is also in kSchemaSql
// above (new databases get it from CREATE TABLE); ensure_schema adds the ones an older database
// lacks. Adding a column = one line in kSchemaSql + one row here; no version bump needed.
struct AddedColumn {
  const char* table;
  const char* column;
  const char* declaration;
};
const std::vector<AddedColumn> kAddedColumns = {
    // {"trials", "example", "TEXT NOT NULL DEFAULT ''"},
    {"trial_summary", "hylab_version", "TEXT NOT NULL DEFAULT ''"},
    {"trial_summary", "hylab_commit", "TEXT NOT NULL DEFAULT ''"},
    {"trial_summary", "torch_version", "TEXT NOT NULL DEFAULT ''"},
    {"trial_summary", "cuda_version", "TEXT NOT NULL DEFAULT ''"},
    {"trial_summary", "nccl_version", "TEXT NOT NULL DEFAULT ''"},
    {"trial_summary", "driver_version", "TEXT NOT NULL DEFAULT ''"},
    {"trial_summary", "gpu_name", "TEXT NOT NULL DEFAULT ''"},
    {"trial_summary", "host", "TEXT NOT NULL DEFAULT ''"},
    {"trial_summary", "disk_bytes", "INTEGER"},
    {"trial_attempts", "run_dir", "TEXT NOT NULL DEFAULT ''"},
    {"sweeps", "search_json", "TEXT NOT NULL DEFAULT ''"},
    {"trial_summary", "recall_acc", "REAL"},
    {"trial_summary", "val_bpb_2x", "REAL"},
    {"trial_summary", "val_bpb_4x", "REAL"},
};

bool has_column(Db& db, const std::string& table, const std::string& column) {
  auto info = db.prepare("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2");
  info.bind(1, table).bind(2, column);
  return info.step();
}

bool missing_columns(Db& db) {
  for (const auto& c : kAddedColumns) {
    if (!has_column(db, c.table, c.column)) return true;
  }
  return false;
}

int64_t schema_version(Db& db) {
  auto version = db.prepare("PRAGMA user_version");
  version.step();
  const int64_t v = version.int64(0);
  if (v > kSchemaVersion) {
    HYLAB_FAIL("SQLite database {} has schema version {}, newer than this hylab knows ({}); "
               "use a newer hylab or another --db",
               db.path(), v, kSchemaVersion);
  }
  return v;
}

}  // namespace

void ensure_schema(Db& db) {
  if (schema_version(db) == kSchemaVersion && !missing_columns(db)) return;
  Tx tx(db);
  // Read again under the write lock: another process may have created or migrated the
  // schema since (a second ALTER TABLE would fail).
  const int64_t v = schema_version(db);
  if (v == kSchemaVersion && !missing_columns(db)) return;
  if (v == 1) {
    // Version 1 (the first days of development) lacked sweeps.nodes_per_trial.
    db.exec("ALTER TABLE sweeps ADD COLUMN nodes_per_trial INTEGER NOT NULL DEFAULT 1");
  }
  db.exec(kSchemaSql);  // tables and indexes a database lacks
  for (const auto& c : kAddedColumns) {
    if (!has_column(db, c.table, c.column)) {
      db.exec(std::string("ALTER TABLE ") + c.table + " ADD COLUMN " + c.column + " " +
              c.declaration);
    }
  }
  db.exec("PRAGMA user_version = " + std::to_string(kSchemaVersion));
  tx.commit();
}

void put_metrics(Db& db, int64_t trial_id, int64_t attempt, const std::vector<MetricPoint>& points) {
  if (points.empty()) return;
  raise_last_step(db, trial_id, insert_metrics(db, trial_id, attempt, points));
}

int64_t insert_metrics(Db& db, int64_t trial_id, int64_t attempt, const std::vector<MetricPoint>& points) {
  auto& ins = db.cached(
      "INSERT INTO metrics(trial_id, name, step, value, wall_time, attempt) VALUES(?,?,?,?,?,?) "
      "ON CONFLICT(trial_id, name, step) DO UPDATE SET value=excluded.value, "
      "wall_time=excluded.wall_time, attempt=excluded.attempt");
  int64_t max_step = -1;
  for (const auto& p : points) {
    max_step = std::max(max_step, p.step);
    // SQLite stores NaN as NULL, which value's NOT NULL refuses: a NaN is no value (a
    // diverged step; the trial's state and reason say so), so it is not stored.
    if (std::isnan(p.value)) continue;
    ins.bind(1, trial_id).bind(2, p.name).bind(3, p.step).bind(4, p.value).bind(5, p.wall_time);
    ins.bind(6, attempt);
    ins.run();
  }
  return max_step;
}

void raise_last_step(Db& db, int64_t trial_id, int64_t step) {
  db.cached("UPDATE trials SET last_step = MAX(last_step, ?) WHERE trial_id = ?").bind(1, step).bind(2, trial_id).run();
}

int64_t newest_metric_step(Db& db, int64_t trial_id) {
  // A loose index scan over the primary key (trial_id, name, step): the next name, then that
  // name's largest step. MAX over the whole trial would read every row of it.
  auto& first_name = db.cached("SELECT MIN(name) FROM metrics WHERE trial_id = ?");
  auto& next_name = db.cached("SELECT MIN(name) FROM metrics WHERE trial_id = ? AND name > ?");
  auto& top = db.cached("SELECT MAX(step) FROM metrics WHERE trial_id = ? AND name = ?");
  int64_t newest = -1;
  std::optional<std::string> name;
  while (true) {
    Stmt& q = name ? next_name.bind(2, *name) : first_name;
    q.bind(1, trial_id);
    const bool found = q.step() && !q.is_null(0);
    if (found) name = q.text(0);
    q.reset();
    if (!found) return newest;
    top.bind(1, trial_id).bind(2, *name);
    if (top.step() && !top.is_null(0)) newest = std::max(newest, top.int64(0));
    top.reset();
  }
}

namespace {

// The summary's provenance object and disk use, into their columns (a separate statement so
// that the summary's own INSERT stays as it was).
void put_provenance(Db& db, int64_t trial_id, const RunSummary& s) {
  const auto p = nlohmann::json::parse(s.provenance_json.empty() ? "{}" : s.provenance_json,
                                       nullptr, /*allow_exceptions=*/false);
  auto text = [&](const char* key) {
    return p.is_object() && p.contains(key) && p[key].is_string() ? p[key].get<std::string>() : "";
  };
  auto st = db.prepare(
      "UPDATE trial_summary SET hylab_version=?, hylab_commit=?, torch_version=?, cuda_version=?, "
      "nccl_version=?, driver_version=?, gpu_name=?, host=?, disk_bytes=? WHERE trial_id=?");
  int i = 1;
  for (const char* key : kProvenanceKeys) st.bind(i++, text(key));
  if (s.disk_bytes > 0) st.bind(9, s.disk_bytes); else st.bind_null(9);
  st.bind(10, trial_id);
  st.run();
}

// The evals beside val_bpb (trainer/trial_evals.h) into their columns; -1 = not run = NULL.
void put_evals(Db& db, int64_t trial_id, const RunSummary& s) {
  auto st = db.prepare("UPDATE trial_summary SET recall_acc=?, val_bpb_2x=?, val_bpb_4x=? WHERE trial_id=?");
  int i = 1;
  for (double v : {s.recall_acc, s.val_bpb_2x, s.val_bpb_4x}) {
    if (v >= 0) st.bind(i++, v); else st.bind_null(i++);
  }
  st.bind(4, trial_id);
  st.run();
}

}  // namespace

void put_summary(Db& db, int64_t trial_id, const RunSummary& s) {
  auto st = db.prepare(
      "INSERT OR REPLACE INTO trial_summary(trial_id, params_total, params_json, flops_per_token, "
      "steps, total_time_s, final_val_bpb, final_train_loss, tok_per_s, mfu, peak_mem_gib, "
      "decode_tok_per_s_b1, decode_tok_per_s_b32, cache_bytes, updated_at) "
      "VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
  st.bind(1, trial_id).bind(2, s.params_total).bind(3, s.params_json).bind(4, s.flops_per_token);
  st.bind(5, s.steps).bind(6, s.total_time_s);
  if (s.final_val_bpb >= 0) st.bind(7, s.final_val_bpb); else st.bind_null(7);
  if (s.final_train_loss >= 0) st.bind(8, s.final_train_loss); else st.bind_null(8);
  st.bind(9, s.tok_per_s).bind(10, s.mfu).bind(11, s.peak_mem_gib);
  st.bind(12, s.decode_tok_per_s_b1).bind(13, s.decode_tok_per_s_b32).bind(14, s.cache_bytes);
  st.bind(15, unix_time_now());
  st.run();
  put_provenance(db, trial_id, s);
  put_evals(db, trial_id, s);
}

void add_event(Db& db, const std::string& kind, const std::string& message, int64_t sweep_id,
               int64_t trial_id, const std::string& worker_id, int64_t attempt) {
  auto& st = db.cached(
      "INSERT INTO events(time, kind, sweep_id, trial_id, worker_id, attempt, message) "
      "VALUES(?,?,?,?,?,?,?)");
  st.bind(1, unix_time_now()).bind(2, kind);
  if (sweep_id > 0) st.bind(3, sweep_id); else st.bind_null(3);
  if (trial_id > 0) st.bind(4, trial_id); else st.bind_null(4);
  if (!worker_id.empty()) st.bind(5, worker_id); else st.bind_null(5);
  if (attempt > 0) st.bind(6, attempt); else st.bind_null(6);
  st.bind(7, message);
  st.run();
}

namespace {

// A value as written in a sweep that is a plain number (int or float), else nullopt-like false.
bool parse_number(const std::string& text, double* out) {
  if (text.empty()) return false;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size()) return false;
  *out = v;
  return true;
}

}  // namespace

std::string params_to_json(const std::vector<std::pair<std::string, std::string>>& params) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (const auto& [name, value] : params) {
    double num = 0;
    if (parse_number(value, &num)) {
      if (num == static_cast<double>(static_cast<int64_t>(num)) &&
          value.find_first_of(".eE") == std::string::npos) {
        j[name] = static_cast<int64_t>(num);
      } else {
        j[name] = num;
      }
    } else {
      j[name] = value;
    }
  }
  return j.dump();
}

int64_t insert_trial(Db& db, const NewTrial& t) {
  const GPTConfig g = gpt_config(t.resolved);
  auto st = db.prepare(
      "INSERT INTO trials(sweep_id, trial_index, params_json, config_json, config_hash, "
      "block_pattern, n_layer, n_embd, n_attn_layers, n_mamba_layers, mamba_d_state, "
      "mamba_expand, mamba_d_conv, seed, gpus, priority, state, attempt, worker_id, run_dir, "
      "created_at, started_at) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
  const double now = unix_time_now();
  st.bind(1, t.sweep_id).bind(2, t.trial_index).bind(3, params_to_json(t.params));
  st.bind(4, config_to_json(t.resolved, false)).bind(5, config_hash(t.resolved));
  st.bind(6, compact_block_pattern(g.block_pattern)).bind(7, g.n_layer).bind(8, g.n_embd);
  st.bind(9, g.count(BlockType::kTransformer)).bind(10, g.count(BlockType::kMamba));
  st.bind(11, g.mamba_d_state).bind(12, g.mamba_expand).bind(13, g.mamba_d_conv);
  st.bind(14, static_cast<int64_t>(t.resolved.seed())).bind(15, t.gpus).bind(16, t.priority);
  st.bind(17, to_string(t.state)).bind(18, t.attempt);
  if (t.worker_id.empty()) st.bind_null(19); else st.bind(19, t.worker_id);
  st.bind(20, t.run_dir).bind(21, now);
  if (t.state == proto::TRIAL_STATE_RUNNING) st.bind(22, now); else st.bind_null(22);
  st.run();
  const int64_t trial_id = db.last_insert_rowid();
  auto p = db.prepare("INSERT OR REPLACE INTO trial_params(trial_id, name, value, value_num) VALUES(?,?,?,?)");
  for (const auto& [name, value] : t.params) {
    double num = 0;
    p.bind(1, trial_id).bind(2, name).bind(3, value);
    if (parse_number(value, &num)) p.bind(4, num); else p.bind_null(4);
    p.run();
  }
  return trial_id;
}

}  // namespace hylab::store
