// `hylab bench search`: the sampler against synthetic objectives that need no training.
//
// Objectives (lower is better; each seed hides its own optimum):
//   pattern12  12 layers: 1 + sum_i w_i [layer i is T] + 0.5 (attention_fraction - f*)^2,
//              w_i ~ N(0, 0.02), f* ~ U(0.1, 0.6); budget 2000 trials
//   pattern24  the same over 24 layers, w_i ~ N(0, 0.004); budget 10000
//   mixed      the 12-layer term with w_i ~ N(0, 0.005) + a d_state preference (categorical
//              16|32|64|128, offsets U(0, 0.02)) + 0.005 (expand - e*)^2 (int 1..4) +
//              0.02 (log10 lr - log10 lr*)^2 (lr log-uniform in [1e-4, 1e-1], log10 lr* ~
//              U(-3.5, -2)); budget 3000
// The sampler sees value + N(0, 0.002); a run's score is the first trial whose noise-free
// value is within 1 % of the optimum (computed exactly), or the budget if it never gets
// there. Trials are proposed one after another (each sees every earlier one), through
// propose_new like the coordinator's proposals (a repeated point is drawn again).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sweep/tpe.h"

namespace hylab::coordinator {

struct BenchObjective {
  std::string name;  // pattern12 | pattern24 | mixed
  SearchSpace space;
  int budget = 0;  // trials per run
  // Hidden parameters of one seed.
  std::vector<double> w;
  double target_fraction = 0, fraction_weight = 0;
  std::vector<double> d_state_offset;
  int best_expand = 1;
  double log10_lr_best = 0;
  double noise = 0;
  double optimum = 0;
  double value(const SearchPoint& p) const;  // noise-free
};

BenchObjective make_objective(const std::string& name, uint64_t seed);

// Trials until within 1 % of the optimum (1-based), or the budget.
int trials_to_1pct(const BenchObjective& objective, const std::string& method, uint64_t seed,
                   const TpeOptions& options);

// Every objective x {tpe, random} over `seeds` seeds: the JSON records of
// docs/benchmarks/search.json's "results".
nlohmann::json run_search_bench(const std::vector<std::string>& objectives, int seeds,
                                const TpeOptions& options);

}  // namespace hylab::coordinator
