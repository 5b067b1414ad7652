// The run folder of one training run, and its log:
//   <run_dir>/config.json                     resolved config (written at start)
//   <run_dir>/tokenizer.model                 copied from the data folder (for `hylab generate`)
//   <run_dir>/train.log                       what rank 0 printed
//   <run_dir>/checkpoints/step_XXXXXX/        model/checkpoint.h directories, written atomically
//   <run_dir>/rendezvous/                     multi-process rendezvous files (launch.h)
// Torch-free.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace hylab::trainer {

// runs/<name>-<YYYYmmdd-HHMMSS> (local time).
std::string default_run_dir(const std::string& name);

// <run_dir>/checkpoints/step_<step, 6 digits>.
std::string checkpoint_dir(const std::string& run_dir, int64_t step);

// The checkpoint with the highest step under <run_dir>/checkpoints, or "" if there is none.
// Only complete checkpoints count (directories named step_N holding meta.json).
std::string newest_checkpoint(const std::string& run_dir);

// Rank 0's log: each line to stdout (flushed) and appended to a file.
class TrainLog {
 public:
  TrainLog() = default;
  explicit TrainLog(const std::string& path);  // "" = console only; throws hylab::Error
  ~TrainLog();
  TrainLog(const TrainLog&) = delete;
  TrainLog& operator=(const TrainLog&) = delete;
  void line(const std::string& text);

 private:
  std::FILE* f_ = nullptr;
};

}  // namespace hylab::trainer
