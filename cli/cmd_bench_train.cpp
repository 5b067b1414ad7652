// `hylab bench train`: training throughput on random tokens as JSON (trainer/bench.h).
#include <memory>

#include "cli/command.h"
#include "trainer/bench.h"

namespace hylab::cli {
namespace {

void setup(CLI::App& root) {
  auto* bench = group(root, "bench", "Benchmarks that print JSON");
  auto o = std::make_shared<trainer::BenchOptions>();
  auto* cmd = bench->add_subcommand(
      "train", "Training step throughput (tok/s, MFU, step time, peak memory) on random tokens");
  cmd->add_option("--config", o->config_path, "Config file (YAML)");
  cmd->add_option("--steps", o->steps, "Timed optimiser steps")->capture_default_str();
  cmd->add_option("--warmup", o->warmup, "Untimed steps first")->capture_default_str();
  cmd->add_option("--profile", o->profile_path,
                  "Profile one more step: chrome trace to this file, GPU time by kernel in the JSON");
  cmd->allow_extras();
  cmd->footer("Any config key may follow as --key=value, e.g. --device_batch_size=32 "
              "--total_batch_size=-1 (one micro-step per step).");
  cmd->callback([cmd, o] {
    trainer::BenchOptions opt = *o;
    opt.overrides = cmd->remaining();
    exit_status() = trainer::run_bench_train(opt);
  });
}

HYLAB_REGISTER_COMMAND("bench train", 80, setup);

}  // namespace
}  // namespace hylab::cli
