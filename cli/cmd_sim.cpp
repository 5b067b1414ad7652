// `hylab sim --seeds N [--start S]`: the deterministic simulator (sim/simulator.h) over seeds
// S .. S+N-1, as JSON {commit, date, seeds, faults: {kind: count}, violations, failing}.
// A failing seed is printed with its fault trace; `--seeds 1 --start SEED --trace` replays it
// event by event (add --log for the coordinator's own log lines).
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <memory>

#include "cli/command.h"
#include "common/bench_stamp.h"
#include "common/check.h"
#include "sim/sim_bench.h"

namespace hylab::cli {
namespace {

struct Options {
  int64_t seeds = 100;
  int64_t start = 1;
  bool trace = false;
  bool log = false;
  std::string dir;
  std::string out;
};

void run(const Options& o) {
  if (o.seeds < 1) throw ConfigError(fmt::format("--seeds = {}: expected >= 1", o.seeds));
  if (o.start < 0) throw ConfigError(fmt::format("--start = {}: expected >= 0", o.start));
  namespace fs = std::filesystem;
  sim::SimOptions opt;
  opt.trace = o.trace;
  const fs::path base = fs::is_directory("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
  opt.dir = o.dir.empty() ? (base / ("hylab-sim-" + std::to_string(::getpid()))).string() : o.dir;
  fs::create_directories(opt.dir);
  spdlog::set_level(o.log ? spdlog::level::info : spdlog::level::off);
  nlohmann::json doc = sim::run_seeds(o.start, o.seeds, opt);
  if (o.dir.empty()) fs::remove_all(opt.dir);
  doc["commit"] = bench_commit();
  doc["date"] = utc_timestamp();
  const int64_t violations = doc["violations"].get<int64_t>();
  emit_bench_json(doc, o.out);
  if (violations > 0) exit_status() = 1;
}

void setup(CLI::App& root) {
  auto o = std::make_shared<Options>();
  auto* cmd = root.add_subcommand(
      "sim",
      "Deterministic simulation: the real coordinator logic and SQLite store against simulated "
      "workers, trainers, network and clock, with faults chosen by each seed; prints JSON and "
      "exits 1 when any invariant broke (docs/RELIABILITY.md)");
  cmd->add_option(flag("seeds"), o->seeds, "How many seeds to run")->capture_default_str();
  cmd->add_option(flag("start"), o->start, "The first seed")->capture_default_str();
  cmd->add_flag(flag("trace"), o->trace, "Print every simulated event of every seed to stderr");
  cmd->add_flag(flag("log"), o->log, "Also print the coordinator's log lines");
  cmd->add_option(flag("dir"), o->dir, "Folder for the seeds' SQLite files (default: a temporary folder)");
  cmd->add_option(flag("out"), o->out, "Also write the JSON to this file");
  cmd->callback([o] { run(*o); });
}

HYLAB_REGISTER_COMMAND("sim", 85, setup);

}  // namespace
}  // namespace hylab::cli
