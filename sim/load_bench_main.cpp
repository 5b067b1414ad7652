// hylab_load_bench: `hylab bench load` for builds without the trainer:
// hylab_load_bench --workers 100,300,1000 [--seconds 20] [--threads N] [--io_threads N]
// [--coordinator_io_threads N] [--out FILE]. Prints one JSON line per worker count on stderr
// as it goes, the whole JSON on stdout.
#include <CLI/CLI.hpp>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "common/bench_stamp.h"
#include "sim/load_bench.h"

int main(int argc, char** argv) {
  CLI::App app("Load: one real coordinator against N simulated workers on loopback (docs/RELIABILITY.md)");
  std::vector<int> workers = {100, 300, 1000};
  int seconds = 20;
  int threads = hylab::sim::default_load_threads();
  int io_threads = 0;
  int coordinator_io_threads = 0;
  std::string out;
  app.add_option("--workers", workers, "Worker counts")->delimiter(',')->capture_default_str();
  app.add_option("--seconds", seconds, "Seconds per worker count")->check(CLI::Range(3, 3600))->capture_default_str();
  app.add_option("--threads", threads, "Generator threads (each owns a share of the workers' sockets)")
      ->check(CLI::Range(1, 256))->capture_default_str();
  app.add_option("--io_threads", io_threads, "The generator's ZeroMQ I/O threads (0 = one per two generator threads)")
      ->check(CLI::Range(0, 64))->capture_default_str();
  app.add_option("--coordinator_io_threads", coordinator_io_threads,
                 "The coordinator's ZeroMQ I/O threads (0 = its default)")
      ->check(CLI::Range(0, 64))->capture_default_str();
  app.add_option("--out", out, "Also write the JSON to this file");
  CLI11_PARSE(app, argc, argv);
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("hylab-load-" + std::to_string(::getpid()))).string();
  nlohmann::json doc;
  doc["commit"] = hylab::bench_commit();
  doc["date"] = hylab::utc_timestamp();
  doc["seconds"] = seconds;
  doc["load"] = nlohmann::json::array();
  int rc = 0;
  try {
    for (int n : workers) {
      doc["load"].push_back(hylab::sim::run_load(n, seconds, dir, threads, io_threads, coordinator_io_threads));
      std::fprintf(stderr, "%s\n", doc["load"].back().dump().c_str());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hylab_load_bench: %s\n", e.what());
    rc = 1;
    if (doc["load"].empty()) return rc;
    std::fprintf(stderr, "hylab_load_bench: the rows before it follow\n");
  }
  hylab::emit_bench_json(doc, out);
  return rc;
}
