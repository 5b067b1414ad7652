// Reading a trainer's metrics.jsonl while it grows. The file is also the worker's spool:
// the read offset advances only when records are taken, so while the coordinator is
// unreachable records simply stay on disk and are delivered later.
//
// Record lines (docs/ARCHITECTURE.md, "Trainer process contract"):
//   {"type":"metric","step":S,"name":"train_loss","value":V,"time":T}
//   {"type":"checkpoint","step":S}
//   {"type":"summary", ...RunSummary fields...}
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "proto/wire.pb.h"

namespace hylab::worker {

struct Record {
  enum class Kind { kMetric, kCheckpoint, kSummary } kind = Kind::kMetric;
  proto::Metric metric;      // kMetric
  int64_t step = -1;         // kCheckpoint
  proto::Summary summary;    // kSummary
};

// One line -> a record; nullopt (and *error) for a malformed line, an unknown type, or a
// metric whose value is not a finite number or null (NaN is written as null by JSON
// writers; such points are skipped: SQLite cannot store NaN).
std::optional<Record> parse_record(const std::string& line, std::string* error);

class MetricsTail {
 public:
  explicit MetricsTail(std::string path, int64_t offset = 0) : path_(std::move(path)), offset_(offset) {}
  // Up to max_records complete new lines as records (malformed lines are skipped with a
  // warning). A missing file reads as empty. A trailing partial line waits for its newline.
  std::vector<Record> read(size_t max_records);
  // True if the file has bytes past the offset (complete lines or not).
  bool has_more() const;
  int64_t offset() const { return offset_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int64_t offset_ = 0;
};

// Every record of a finished file (for replaying an earlier attempt's spool).
std::vector<Record> read_all_records(const std::string& path);

}  // namespace hylab::worker
