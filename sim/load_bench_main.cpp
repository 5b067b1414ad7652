// hylab_load_bench: `hylab bench load` for builds without the trainer:
// hylab_load_bench --workers 100,300,1000 [--seconds 20]. Prints one JSON line per worker
// count on stderr as it goes, the whole JSON on stdout.
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
  app.add_option("--workers", workers, "Worker counts")->delimiter(',')->capture_default_str();
  app.add_option("--seconds", seconds, "Seconds per worker count")->check(CLI::Range(3, 3600))->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("hylab-load-" + std::to_string(::getpid()))).string();
  nlohmann::json doc;
  doc["commit"] = hylab::bench_commit();
  doc["date"] = hylab::utc_timestamp();
  doc["seconds"] = seconds;
  doc["load"] = nlohmann::json::array();
  for (int n : workers) {
    doc["load"].push_back(hylab::sim::run_load(n, seconds, dir));
    std::fprintf(stderr, "%s\n", doc["load"].back().dump().c_str());
  }
  std::printf("%s\n", doc.dump(2).c_str());
  return 0;
}
