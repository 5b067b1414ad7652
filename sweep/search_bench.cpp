#include "sweep/search_bench.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "common/check.h"

namespace hylab::coordinator {
namespace {

const std::vector<int> kDStates = {16, 32, 64, 128};

SearchDim pattern_dim(int n_layer) {
  SearchDim d;
  d.name = "block_pattern";
  d.kind = DimKind::kPattern;
  proto::SearchPatternSpace any;
  d.pattern = make_pattern_constraints(any, n_layer, "bench");
  return d;
}

double pattern_term(const BenchObjective& o, const Layers& l) {
  double v = 0;
  int t = 0;
  for (size_t i = 0; i < l.size(); ++i) {
    v += l[i] ? o.w[i] : 0;
    t += l[i];
  }
  const double f = static_cast<double>(t) / l.size() - o.target_fraction;
  return v + o.fraction_weight * f * f;
}

// The pattern term's minimum: for each attention count k the k smallest weights.
double pattern_optimum(const BenchObjective& o) {
  std::vector<double> w = o.w;
  std::sort(w.begin(), w.end());
  const int n = static_cast<int>(w.size());
  double best = 1e300, sum = 0;
  for (int k = 0; k <= n; ++k) {
    if (k > 0) sum += w[k - 1];
    const double f = static_cast<double>(k) / n - o.target_fraction;
    best = std::min(best, sum + o.fraction_weight * f * f);
  }
  return best;
}

}  // namespace

double BenchObjective::value(const SearchPoint& p) const {
  double v = 1.0 + pattern_term(*this, p[0].layers);
  if (name == "mixed") {
    v += d_state_offset[static_cast<size_t>(p[1].x)];
    const double e = p[2].x - best_expand;
    v += 0.005 * e * e;
    const double lr = std::log10(p[3].x) - log10_lr_best;
    v += 0.02 * lr * lr;
  }
  return v;
}

BenchObjective make_objective(const std::string& name, uint64_t seed) {
  BenchObjective o;
  o.name = name;
  std::mt19937_64 rng(seed * 1000003ull + std::hash<std::string>{}(name));
  int n_layer = 0;
  double scale = 0;
  if (name == "pattern12") {
    n_layer = 12, scale = 0.02, o.budget = 2000;
  } else if (name == "pattern24") {
    n_layer = 24, scale = 0.004, o.budget = 10000;
  } else if (name == "mixed") {
    n_layer = 12, scale = 0.005, o.budget = 3000;
  } else {
    throw ConfigError(
        fmt::format("--objective = \"{}\": expected pattern12, pattern24 or mixed", name));
  }
  std::normal_distribution<double> normal(0, scale);
  for (int i = 0; i < n_layer; ++i) o.w.push_back(normal(rng));
  o.target_fraction = std::uniform_real_distribution<double>(0.1, 0.6)(rng);
  o.fraction_weight = 0.5;
  o.noise = 0.002;
  o.space.dims.push_back(pattern_dim(n_layer));
  o.optimum = 1.0 + pattern_optimum(o);
  if (name == "mixed") {
    SearchDim d;
    d.name = "mamba_d_state";
    for (int s : kDStates) {
      d.values.push_back(std::to_string(s));
      d.records.push_back({{d.name, std::to_string(s)}});
      o.d_state_offset.push_back(std::uniform_real_distribution<double>(0, 0.02)(rng));
    }
    o.optimum += *std::min_element(o.d_state_offset.begin(), o.d_state_offset.end());
    o.space.dims.push_back(d);
    SearchDim e;
    e.name = "mamba_expand";
    e.kind = DimKind::kInt;
    e.min = 1;
    e.max = 4;
    o.best_expand = std::uniform_int_distribution<int>(1, 4)(rng);
    o.space.dims.push_back(e);
    SearchDim lr;
    lr.name = "matrix_lr";
    lr.kind = DimKind::kLogUniform;
    lr.min = 1e-4;
    lr.max = 1e-1;
    o.log10_lr_best = std::uniform_real_distribution<double>(-3.5, -2)(rng);
    o.space.dims.push_back(lr);
  }
  return o;
}

int trials_to_1pct(const BenchObjective& o, const std::string& method, uint64_t seed,
                   const TpeOptions& options) {
  std::mt19937_64 noise_rng(seed ^ 0x5eedull);
  std::normal_distribution<double> noise(0, o.noise);
  const double target = o.optimum + 0.01 * std::abs(o.optimum);
  std::vector<SearchObservation> finished;
  std::set<std::string> taken;
  for (int t = 0; t < o.budget; ++t) {
    const auto p = propose_new(o.space, finished, {}, taken, static_cast<int64_t>(seed), t,
                               method == "tpe", options);
    if (!p) return o.budget;  // the space is used up (cannot happen for these sizes)
    const double v = o.value(*p);
    if (v <= target) return t + 1;
    taken.insert(point_key(o.space, *p));
    finished.push_back({*p, v + noise(noise_rng)});
  }
  return o.budget;
}

nlohmann::json run_search_bench(const std::vector<std::string>& objectives, int seeds,
                                const TpeOptions& options) {
  nlohmann::json results = nlohmann::json::array();
  for (const auto& name : objectives) {
    for (const std::string method : {"tpe", "random"}) {
      std::vector<int> n;
      for (int s = 0; s < seeds; ++s) {
        const BenchObjective o = make_objective(name, static_cast<uint64_t>(s));
        n.push_back(trials_to_1pct(o, method, static_cast<uint64_t>(s), options));
      }
      std::vector<int> sorted = n;
      std::sort(sorted.begin(), sorted.end());
      const size_t k = sorted.size();
      const double median = k % 2 ? sorted[k / 2] : 0.5 * (sorted[k / 2 - 1] + sorted[k / 2]);
      int reached = 0;
      const int budget = make_objective(name, 0).budget;
      for (int x : n) reached += x < budget ? 1 : 0;
      results.push_back({{"objective", name},
                         {"method", method},
                         {"seeds", seeds},
                         {"budget", budget},
                         {"reached", reached},
                         {"trials_to_1pct", {{"median", median}, {"worst", sorted.back()}}},
                         {"per_seed", n}});
    }
  }
  return results;
}

}  // namespace hylab::coordinator
