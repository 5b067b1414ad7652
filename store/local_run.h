// A local `hylab train` run recorded in the coordinator's SQLite schema, as a trial of the
// sweep named "local", so that `hylab results` lists it beside sweep trials.
//
// Used by the trainer's rank 0 only (one thread). The database is created with the full
// schema (docs/SCHEMA.md) if it does not exist; WAL mode and a busy_timeout let it share the
// file with a running coordinator.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/metrics.h"
#include "common/run_config.h"
#include "common/states.h"

namespace hylab::store {

class LocalRun : public MetricsSink {
 public:
  // Opens (or creates) db_path, inserts a trial of the "local" sweep in state RUNNING with
  // the resolved config, and returns a sink for its metrics. Throws hylab::Error.
  static std::unique_ptr<LocalRun> open(const std::string& db_path, const RunConfig& resolved,
                                        const std::string& run_dir);
  // Re-attaches to the trial of an earlier local run in run_dir (for --resume); metrics of
  // steps already stored are replaced, never duplicated.
  static std::unique_ptr<LocalRun> reopen(const std::string& db_path, const std::string& run_dir);

  ~LocalRun() override;
  void write(const std::vector<MetricPoint>& points) override;
  void write_summary(const RunSummary& summary) override;
  void flush() override;
  // state: succeeded, failed, diverged, oom or cancelled (else hylab::Error); reason: free text.
  void finish(proto::TrialState state, const std::string& reason);
  int64_t trial_id() const;

 private:
  struct Impl;
  explicit LocalRun(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace hylab::store
