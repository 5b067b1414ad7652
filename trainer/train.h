// `hylab train`: the trainer process (docs/ARCHITECTURE.md, "Trainer process contract").
//
//   hylab train --config FILE [--run_dir DIR] [--metrics_jsonl FILE] [--resume] [--nproc N]
//               [--db PATH] [--key=value ...]   (e.g. --probe_steps=0: any config key)
//
// Exit status (proto::TrainerExit): 0 succeeded, 2 bad config or usage, 3 diverged (non-finite
// loss), 4 out of memory, 130 SIGINT, 143 SIGTERM (both mark the run cancelled), 1 anything
// else (the reason on stderr).
// Torch-free header, so the CLI front end compiles fast.
#pragma once

#include <string>
#include <vector>

#include "proto/wire.pb.h"  // proto::TrainerExit

namespace hylab::trainer {

struct TrainOptions {
  std::string config_path;             // YAML; optional with --resume (the run's config.json)
  std::vector<std::string> overrides;  // "--key=value" / "--key value" config overrides
  std::string run_dir;                 // "" = runs/<name>-<time>/
  std::string metrics_jsonl;           // "" = records go to SQLite (db_path)
  bool resume = false;                 // continue from the newest checkpoint in run_dir
  // With resume: continue from the checkpoint of exactly this step (-1: the newest). A worker
  // names the checkpoint it found, so the earlier attempts' records it relays (up to that step)
  // and the steps the trainer re-emits (after it) leave no gap between them.
  int64_t resume_step = -1;
  int nproc = 1;                       // ranks to spawn on this machine
  std::string db_path;                 // "" = $HYLAB_DB or runs/hylab.db
};

// Inside a catch block: prints the current exception as "<command>: ..." on stderr and returns
// its exit status (config error 2, out of memory 4, anything else 1).
int exit_status_of_current_exception(const char* command);

// Runs a training (spawning --nproc ranks, or as one rank when RANK/WORLD_SIZE are set) and
// returns the exit status above. Never throws.
int run_train(const TrainOptions& opt);

}  // namespace hylab::trainer
