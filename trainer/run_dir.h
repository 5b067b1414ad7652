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

#include "common/checkpoint_dirs.h"

namespace hylab::trainer {

// runs/<name>-<YYYYmmdd-HHMMSS> (local time).
std::string default_run_dir(const std::string& name);

// Checkpoint folders: common/checkpoint_dirs.h.
using hylab::checkpoint_dir;
using hylab::newest_checkpoint;

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
