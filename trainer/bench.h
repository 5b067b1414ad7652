// `hylab bench train`: training throughput on random tokens (no dataset needed), printed
// as one JSON object: tok_per_s, mfu, step_ms, total_batch_size, peak_mem_gib, params, config.
// After the timed steps, one step is timed in parts: `breakdown` {forward_ms, backward_ms,
// communication_ms, optimizer_ms} for the whole step (CUDA events on GPU, wall clock on CPU),
// plus micro_step_ms (forward+backward of one micro-step) and optimizer_ms; with a profile
// path one more runs under the profiler (trainer/profile.h): kernel time by kind and the
// kernels with the most time. Launched as several ranks (RANK/WORLD_SIZE/MASTER_ADDR/
// MASTER_PORT), it runs the data-parallel step of `hylab train` and rank 0 prints.
// Each step is a full optimiser step (grad accumulation as the config says; pass
// --total_batch_size=-1 for one micro-step per step). The first `warmup` steps are not timed.
// Torch-free header.
#pragma once

#include <string>
#include <vector>

namespace hylab::trainer {

struct BenchOptions {
  std::string config_path;             // YAML, optional
  std::vector<std::string> overrides;  // --key=value config overrides
  int steps = 10;                      // timed steps
  int warmup = 2;                      // untimed steps first
  std::string profile_path;            // non-empty: profile one more step, trace to this file
};

// Prints the JSON to stdout; returns an exit status (0 ok, 2 bad config, 4 OOM, 1 other).
int run_bench_train(const BenchOptions& opt);

}  // namespace hylab::trainer
