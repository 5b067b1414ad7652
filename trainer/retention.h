// Checkpoint retention (`checkpoint_keep: {last: L, best: B}` in a config or sweep): after
// each checkpoint the trainer keeps the newest L checkpoints and the B with the lowest
// val_bpb, and deletes the others, so a sweep does not fill its disk (the 11-trial
// patterns_d12 sweep kept ~89 GB of step_* folders before this). The newest checkpoint is
// always kept (L >= 1), so `--resume` and a coordinator's retry still find it. Torch-free.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hylab::trainer {

struct CheckpointInfo {
  int64_t step = 0;
  double val_bpb =
      -1;  // from its meta.json: the newest evaluation at or before the step; < 0 = none
  std::string dir;
};

// The complete checkpoints (step_N folders holding meta.json) under <run_dir>/checkpoints,
// by increasing step.
std::vector<CheckpointInfo> list_checkpoints(const std::string& run_dir);

// A pure decision: the steps to delete so that the newest `keep_last` (-1 = all) and the
// `keep_best` with the lowest val_bpb (ties: the newer) remain. Checkpoints without a val_bpb
// never count as best. Sorted by step.
std::vector<int64_t> checkpoints_to_delete(const std::vector<CheckpointInfo>& checkpoints,
                                           int keep_last, int keep_best);

// Applies the decision to <run_dir>/checkpoints: each doomed folder loses its meta.json
// first (so a crash halfway leaves an incomplete folder that resume ignores), then the rest.
// Returns the deleted folders. Throws hylab::Error when a folder cannot be removed.
std::vector<std::string> prune_checkpoints(const std::string& run_dir, int keep_last,
                                           int keep_best);

// Bytes of the regular files under `path` (0 if it does not exist); symlinks not followed.
int64_t directory_bytes(const std::string& path);

}  // namespace hylab::trainer
