// hylab_loop_bench: the coordinator's loop per message without sockets (sim/loop_bench.h):
// hylab_loop_bench [--workers 1000] [--rounds 50] [--runs 3] [--out FILE]. Prints one JSON
// line per run on stderr, the whole JSON on stdout.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "common/bench_stamp.h"
#include "sim/loop_bench.h"

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  CLI::App app("The coordinator's loop (Impl::step) per message over a steady state of N workers, no sockets");
  int workers = 1000, rounds = 50, runs = 3;
  std::string out;
  app.add_option("--workers", workers, "Workers, each running one trial")->check(CLI::Range(1, 100000))
      ->capture_default_str();
  app.add_option("--rounds", rounds, "Rounds of one metrics batch per worker (100 ms each; a heartbeat every 10th)")
      ->check(CLI::Range(1, 100000))->capture_default_str();
  app.add_option("--runs", runs, "Runs, each on a fresh database")->check(CLI::Range(1, 100))->capture_default_str();
  app.add_option("--out", out, "Also write the JSON to this file");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);
  const std::string dir = (fs::temp_directory_path() / ("hylab-loop-" + std::to_string(::getpid()))).string();
  nlohmann::json doc;
  doc["commit"] = hylab::bench_commit();
  doc["date"] = hylab::utc_timestamp();
  doc["runs"] = nlohmann::json::array();
  try {
    for (int i = 0; i < runs; ++i) {
      doc["runs"].push_back(hylab::sim::run_loop_bench(workers, rounds, dir));
      std::fprintf(stderr, "%s\n", doc["runs"].back().dump().c_str());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hylab_loop_bench: %s\n", e.what());
    fs::remove_all(dir);
    return 1;
  }
  fs::remove_all(dir);
  hylab::emit_bench_json(doc, out);
  return 0;
}
