// Where a run's records go (common/metrics.h defines the records and the MetricsSink
// interface): a JSON-lines file for runs under a worker (the trainer process contract in
// docs/ARCHITECTURE.md), or SQLite for local runs (store/local_run.h, wired in train.cpp).
// Torch-free. Used by the trainer's rank 0 only, from one thread.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "common/metrics.h"

namespace hylab::trainer {

// Appends one JSON object per line and flushes each line:
//   {"type":"metric","step":S,"name":"train_loss","value":V,"time":T}
//   {"type":"checkpoint","step":S}                      (checkpoint() once it is durable)
//   {"type":"summary", ...RunSummary fields...}
// Non-finite values are written as null (JSON has no NaN).
class JsonlMetricsSink : public MetricsSink {
 public:
  explicit JsonlMetricsSink(const std::string& path);  // opens for append; throws hylab::Error
  ~JsonlMetricsSink() override;
  void write(const std::vector<MetricPoint>& points) override;
  void write_summary(const RunSummary& summary) override;
  void flush() override;  // fsync
  void checkpoint(int64_t step);

 private:
  void line(const std::string& json);
  std::string path_;
  std::FILE* f_ = nullptr;
};

// RunSummary as a JSON object (the "summary" line without "type"), shared with the console.
std::string summary_to_json(const RunSummary& s);

}  // namespace hylab::trainer
