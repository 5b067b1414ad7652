// Where a run's checkpoints live, for every process that looks at a run folder: the trainer
// (writes and resumes), the worker (finds the checkpoint a retry resumes from, to relay the
// earlier attempts' records up to it). Torch-free; model/checkpoint.h reads and writes one.
//   <run_dir>/checkpoints/step_XXXXXX/   one checkpoint, complete once meta.json is in it
#pragma once

#include <cstdint>
#include <string>

namespace hylab {

// <run_dir>/checkpoints/step_<step, 6 digits>.
std::string checkpoint_dir(const std::string& run_dir, int64_t step);

struct CheckpointRef {
  std::string dir;     // "" if there is none
  int64_t step = -1;
};

// The complete checkpoint with the highest step under <run_dir>/checkpoints (directories
// named step_N holding meta.json), or {"", -1} if there is none.
CheckpointRef newest_checkpoint(const std::string& run_dir);

}  // namespace hylab
