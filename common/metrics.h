// The records a run produces, and where they go.
//
// The trainer emits MetricPoints and one RunSummary; a MetricsSink delivers them. A local
// `hylab train` writes them into SQLite (store/); a trial under a worker appends them as
// JSON lines to <run_dir>/metrics.jsonl, which the worker relays to the coordinator.
// Metric names are the same everywhere: train_loss, lr, step_time_s, tok_per_s, mfu,
// mem_alloc_gib, mem_reserved_gib, val_bpb, recall_acc, val_bpb_2x, val_bpb_4x, ...
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hylab {

struct MetricPoint {
  int64_t step = 0;
  std::string name;
  double value = 0;
  double wall_time = 0;  // seconds since the Unix epoch
};

// Per-run results, stored in the per-trial summary table (see docs/SCHEMA.md).
struct RunSummary {
  int64_t params_total = 0;
  std::string params_json;   // {"embedding": n, "lm_head": n, "attention": n, "mlp": n, "mamba": n}
  double flops_per_token = 0;
  int64_t steps = 0;
  double total_time_s = 0;
  double final_val_bpb = -1;  // -1 = not evaluated
  double final_train_loss = -1;
  double tok_per_s = 0;       // mean over steps after the first
  double mfu = 0;
  double peak_mem_gib = 0;
  double decode_tok_per_s_b1 = 0;
  double decode_tok_per_s_b32 = 0;
  int64_t cache_bytes = 0;    // inference cache per sequence at sequence_len
  std::string provenance_json;  // trainer/provenance.h: versions, commit, GPU, driver, host
  int64_t disk_bytes = 0;     // the run folder's size at the end, after checkpoint retention
  // Evals beside val_bpb at the final eval (trainer/trial_evals.h); -1 = not run.
  double recall_acc = -1;     // associative recall, exact match of the values
  double val_bpb_2x = -1;     // val_bpb at 2x max_seq_len
  double val_bpb_4x = -1;     // val_bpb at 4x max_seq_len
};

class MetricsSink {
 public:
  virtual ~MetricsSink() = default;
  // Called from the trainer's rank 0, in step order; points of one step come together.
  virtual void write(const std::vector<MetricPoint>& points) = 0;
  virtual void write_summary(const RunSummary& summary) = 0;
  // Makes everything written so far durable (end of run, before a checkpoint is declared).
  virtual void flush() {}
};

double unix_time_now();

// The metric names the trainer records (per step, at evals, at the end), which a sweep's
// `metric:` may name, and each one's better direction (a sweep's default goal).
struct MetricName {
  const char* name;
  bool maximize;
};
inline const std::vector<MetricName>& trainer_metric_names() {
  static const std::vector<MetricName> kNames = {
      {"val_bpb", false},        {"val_loss", false},         {"train_loss", false},
      {"recall_acc", true},      {"val_bpb_2x", false},       {"val_bpb_4x", false},
      {"tok_per_s", true},       {"mfu", true},               {"step_time_s", false},
      {"mem_alloc_gib", false},  {"mem_reserved_gib", false}, {"grad_norm", false},
      {"lr", false},             {"lr_mult", false}};
  return kNames;
}

}  // namespace hylab
