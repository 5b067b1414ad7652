#include "sim/sim_bench.h"

#include <chrono>
#include <cstdio>

namespace hylab::sim {

nlohmann::json run_seeds(int64_t start, int64_t count, const SimOptions& opt) {
  nlohmann::json faults = nlohmann::json::object();
  nlohmann::json failing = nlohmann::json::array();
  int64_t violations = 0, trials = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < count; ++i) {
    const SimResult r = run_seed(static_cast<uint64_t>(start + i), opt);
    for (const auto& [k, c] : r.faults) faults[k] = faults.value(k, int64_t{0}) + c;
    trials += r.trials;
    if (opt.trace) {
      for (const auto& t : r.trace) {
        std::fprintf(stderr, "seed %llu %s\n", static_cast<unsigned long long>(r.seed), t.c_str());
      }
    }
    if (!r.violations.empty()) {
      violations += static_cast<int64_t>(r.violations.size());
      failing.push_back({{"seed", r.seed}, {"violations", r.violations}, {"trace", r.trace}});
      std::fprintf(stderr, "seed %llu: %zu violations (replay: hylab sim --seeds 1 --start %llu --trace)\n",
                   static_cast<unsigned long long>(r.seed), r.violations.size(),
                   static_cast<unsigned long long>(r.seed));
    }
  }
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return {{"seeds", count}, {"start", start},     {"trials", trials}, {"faults", faults},
          {"violations", violations}, {"failing", failing}, {"wall_s", wall}};
}

}  // namespace hylab::sim
