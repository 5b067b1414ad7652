// `hylab bench load --workers 100,300,1000 [--seconds 20] [--threads N] [--io_threads N]
// [--coordinator_io_threads N]`: the load generator of sim/load_bench.h once per worker
// count, as JSON {commit, date, seconds, load: [...]}.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <memory>

#include "cli/command.h"
#include "common/bench_stamp.h"
#include "common/check.h"
#include "sim/load_bench.h"

namespace hylab::cli {
namespace {

struct Options {
  std::vector<int> workers = {100, 300, 1000};
  int seconds = 20;
  int threads = sim::default_load_threads();
  int io_threads = 0;
  int coordinator_io_threads = 0;
  std::string out;
};

void run(const Options& o) {
  if (o.threads < 1 || o.threads > 256) throw ConfigError(fmt::format("--threads = {}: expected 1..256", o.threads));
  if (o.io_threads < 0 || o.io_threads > 64) {
    throw ConfigError(fmt::format("--io_threads = {}: expected 0..64", o.io_threads));
  }
  if (o.coordinator_io_threads < 0 || o.coordinator_io_threads > 64) {
    throw ConfigError(fmt::format("--coordinator_io_threads = {}: expected 0..64", o.coordinator_io_threads));
  }
  if (o.seconds < 3) throw ConfigError(fmt::format("--seconds = {}: expected >= 3", o.seconds));
  for (int n : o.workers) {
    if (n < 1 || n > 5000) throw ConfigError(fmt::format("--workers = {}: expected 1..5000", n));
  }
  namespace fs = std::filesystem;
  nlohmann::json doc;
  doc["commit"] = bench_commit();
  doc["date"] = utc_timestamp();
  doc["seconds"] = o.seconds;
  doc["load"] = nlohmann::json::array();
  const fs::path dir = fs::temp_directory_path() / ("hylab-load-" + std::to_string(::getpid()));
  for (int n : o.workers) {
    doc["load"].push_back(sim::run_load(n, o.seconds, dir.string(), o.threads, o.io_threads, o.coordinator_io_threads));
    std::fprintf(stderr, "%s\n", doc["load"].back().dump().c_str());
  }
  emit_bench_json(doc, o.out);
}

void setup(CLI::App& root) {
  auto* bench = group(root, "bench", "Benchmarks that print JSON");
  auto o = std::make_shared<Options>();
  auto* cmd = bench->add_subcommand(
      "load",
      "One real coordinator against N simulated workers over loopback TCP (heartbeats 1 s, "
      "metrics 10 Hz): scheduling latency p50/p99, coordinator RSS/CPU, SQLite write rate");
  cmd->add_option(flag("workers"), o->workers, "Worker counts to run, e.g. 100,300,1000")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option(flag("seconds"), o->seconds, "Seconds per worker count")->capture_default_str();
  cmd->add_option(flag("threads"), o->threads,
                  "Generator threads, each owning a share of the simulated workers and their sockets "
                  "(default min(8, cores - 1))")
      ->capture_default_str();
  cmd->add_option(flag("io_threads"), o->io_threads,
                  "The generator's ZeroMQ I/O threads: the simulated workers' network stacks "
                  "(0 = one per two generator threads)")
      ->capture_default_str();
  cmd->add_option(flag("coordinator_io_threads"), o->coordinator_io_threads,
                  "The coordinator's ZeroMQ I/O threads (0 = its default, as `hylab coordinator --io_threads`)")
      ->capture_default_str();
  cmd->add_option(flag("out"), o->out, "Also write the JSON to this file");
  cmd->callback([o] { run(*o); });
}

HYLAB_REGISTER_COMMAND("bench load", 83, setup);

}  // namespace
}  // namespace hylab::cli
