// hylab_sim_bench: `hylab sim` for builds without the trainer (the simulator needs no
// LibTorch): hylab_sim_bench --seeds N [--start S] [--trace] [--dir DIR]. Prints the JSON
// of sim_bench.h with commit and date; exits 1 when any invariant broke.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "common/bench_stamp.h"
#include "sim/sim_bench.h"

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  CLI::App app("Deterministic simulation of the coordinator under faults (docs/RELIABILITY.md)");
  int64_t seeds = 100, start = 1;
  std::string dir;
  hylab::sim::SimOptions opt;
  app.add_option("--seeds", seeds, "How many seeds")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--start", start, "The first seed")->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_flag("--trace", opt.trace, "Print every simulated event to stderr");
  app.add_option("--dir", dir, "Folder for the seeds' SQLite files (default: /dev/shm or the temp folder)");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::off);
  const fs::path base = fs::is_directory("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
  opt.dir = dir.empty() ? (base / ("hylab-sim-" + std::to_string(::getpid()))).string() : dir;
  fs::create_directories(opt.dir);
  nlohmann::json doc = hylab::sim::run_seeds(start, seeds, opt);
  doc["commit"] = hylab::bench_commit();
  doc["date"] = hylab::utc_timestamp();
  if (dir.empty()) fs::remove_all(opt.dir);
  std::printf("%s\n", doc.dump(2).c_str());
  return doc["violations"].get<int64_t>() > 0 ? 1 : 0;
}
