#include "sweep/tpe.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <set>

namespace hylab::coordinator {
namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr double kPriorWeight = 1.0;
constexpr double kFeatureBandwidth = 0.12;  // of the [0, 1] pattern features
constexpr double kSeenPenalty = 1.0;        // log-score per earlier trial of a pattern

double normal_cdf(double z) { return 0.5 * std::erfc(-z / std::sqrt(2.0)); }

double log_sum_exp(const std::vector<double>& v) {
  const double m = *std::max_element(v.begin(), v.end());
  if (!std::isfinite(m)) return m;
  double s = 0;
  for (double x : v) s += std::exp(x - m);
  return m + std::log(s);
}

// ---- ranges: a Parzen mixture of truncated Gaussians over [lo, hi] (transformed) ----

struct Parzen {
  double lo = 0, hi = 1;
  std::vector<double> mu, sigma;

  Parzen(double lo_, double hi_, std::vector<double> xs) : lo(lo_), hi(hi_) {
    std::sort(xs.begin(), xs.end());
    const double range = std::max(hi - lo, 1e-12);
    const double min_sigma = range / std::min(100.0, 1.0 + xs.size());
    for (size_t i = 0; i < xs.size(); ++i) {
      const double left = i == 0 ? lo : xs[i - 1];
      const double right = i + 1 == xs.size() ? hi : xs[i + 1];
      double s = std::max(xs[i] - left, right - xs[i]);
      s = std::clamp(s, min_sigma, range);
      mu.push_back(xs[i]);
      sigma.push_back(s);
    }
  }

  double log_pdf(double x) const {
    const double range = std::max(hi - lo, 1e-12);
    std::vector<double> terms = {std::log(kPriorWeight / range)};
    for (size_t i = 0; i < mu.size(); ++i) {
      const double z = (x - mu[i]) / sigma[i];
      const double mass = normal_cdf((hi - mu[i]) / sigma[i]) - normal_cdf((lo - mu[i]) / sigma[i]);
      terms.push_back(-0.5 * z * z -
                      std::log(sigma[i] * std::sqrt(2 * kPi) * std::max(mass, 1e-12)));
    }
    return log_sum_exp(terms) - std::log(mu.size() + kPriorWeight);
  }

  double sample(std::mt19937_64& rng) const {
    std::uniform_real_distribution<double> u(0, mu.size() + kPriorWeight);
    const double pick = u(rng);
    if (pick >= mu.size()) return std::uniform_real_distribution<double>(lo, hi)(rng);
    const size_t i = static_cast<size_t>(pick);
    std::normal_distribution<double> n(mu[i], sigma[i]);
    for (int tries = 0; tries < 100; ++tries) {
      const double x = n(rng);
      if (x >= lo && x <= hi) return x;
    }
    return std::clamp(mu[i], lo, hi);
  }
};

// ---- patterns: per-layer Bernoulli x feature kernel density ----

struct PatternDensity {
  std::vector<double> log_t, log_m;       // (n_layer,) per-layer log P(T), log P(M)
  std::vector<PatternFeatures> features;  // of each trial
  std::vector<const Layers*> members;

  explicit PatternDensity(const std::vector<const Layers*>& ls, int n_layer) : members(ls) {
    for (int i = 0; i < n_layer; ++i) {
      double t = 0;
      for (const Layers* l : ls) t += (*l)[i];
      const double p = (t + 0.5 * kPriorWeight) / (ls.size() + kPriorWeight);
      log_t.push_back(std::log(p));
      log_m.push_back(std::log(1 - p));
    }
    for (const Layers* l : ls) features.push_back(pattern_features(*l));
  }

  double log_pdf(const Layers& x) const {
    double lp = 0;
    for (size_t i = 0; i < x.size(); ++i) lp += x[i] ? log_t[i] : log_m[i];
    const PatternFeatures f = pattern_features(x);
    // Kernel over the features, with the uniform prior on [0, 1]^3 (density 1).
    std::vector<double> terms = {std::log(kPriorWeight)};
    const double h = kFeatureBandwidth;
    const double norm = 3 * std::log(h * std::sqrt(2 * kPi));
    for (const auto& g : features) {
      const double a = (f.attention_fraction - g.attention_fraction) / h;
      const double d = (f.mean_attention_depth - g.mean_attention_depth) / h;
      const double s = (f.switches - g.switches) / h;
      terms.push_back(-0.5 * (a * a + d * d + s * s) - norm);
    }
    return lp + log_sum_exp(terms) - std::log(features.size() + kPriorWeight);
  }

  // A draw near the good trials: from the per-layer Bernoullis, a mutated member, or the prior.
  Layers sample(const PatternConstraints& c, std::mt19937_64& rng) const {
    std::uniform_real_distribution<double> u(0, 1);
    const double r = u(rng);
    Layers x(c.n_layer, 0);
    if (r < 0.4 || members.empty()) {
      for (int i = 0; i < c.n_layer; ++i) x[i] = u(rng) < std::exp(log_t[i]) ? 1 : 0;
    } else if (r < 0.85) {
      x = *members[std::uniform_int_distribution<size_t>(0, members.size() - 1)(rng)];
      std::uniform_int_distribution<int> layer(0, c.n_layer - 1);
      if (u(rng) < 0.5) {
        // Swap a T and an M: the attention count stays.
        std::vector<int> ts, ms;
        for (int i = 0; i < c.n_layer; ++i) (x[i] ? ts : ms).push_back(i);
        if (!ts.empty() && !ms.empty()) {
          std::swap(x[ts[std::uniform_int_distribution<size_t>(0, ts.size() - 1)(rng)]],
                    x[ms[std::uniform_int_distribution<size_t>(0, ms.size() - 1)(rng)]]);
        }
      } else {
        const int flips = 1 + (u(rng) < 0.3 ? 1 : 0);
        for (int k = 0; k < flips; ++k) x[layer(rng)] ^= 1;
      }
    } else {
      return random_pattern(c, rng);
    }
    return repair_pattern(c, x, rng);
  }
};

// ---- categoricals ----

std::vector<double> categorical_log_probs(size_t k, const std::vector<double>& xs) {
  std::vector<double> counts(k, kPriorWeight / k);
  for (double x : xs) counts[static_cast<size_t>(x)] += 1;
  std::vector<double> out;
  for (double c : counts) out.push_back(std::log(c / (xs.size() + kPriorWeight)));
  return out;
}

double transform(DimKind kind, double x) { return kind == DimKind::kLogUniform ? std::log(x) : x; }
double untransform(const SearchDim& d, double t) {
  if (d.kind == DimKind::kLogUniform) return std::clamp(std::exp(t), d.min, d.max);
  if (d.kind == DimKind::kInt) return std::clamp(std::round(t), d.min, d.max);
  return t;
}

// avoid_seen: the space has this one dimension, so a value any trial has (finished or
// pending) would repeat that trial; such candidates lose to every unseen one.
DimValue propose_dim(const SearchDim& d, size_t dim, const std::vector<const SearchPoint*>& good,
                     const std::vector<const SearchPoint*>& bad, int candidates, bool avoid_seen,
                     std::mt19937_64& rng) {
  DimValue best;
  double best_score = -std::numeric_limits<double>::infinity();
  auto consider = [&](DimValue v, double score) {
    if (score > best_score) {
      best_score = score;
      best = std::move(v);
    }
  };
  if (d.kind == DimKind::kPattern || (d.kind == DimKind::kCategorical && !d.layers.empty())) {
    const int n_layer =
        d.kind == DimKind::kPattern ? d.pattern.n_layer : static_cast<int>(d.layers[0].size());
    auto layers_of = [&](const SearchPoint* p) -> const Layers* {
      return d.kind == DimKind::kPattern ? &(*p)[dim].layers
                                         : &d.layers[static_cast<size_t>((*p)[dim].x)];
    };
    std::vector<const Layers*> gl, bl;
    for (const auto* p : good) gl.push_back(layers_of(p));
    for (const auto* p : bad) bl.push_back(layers_of(p));
    const PatternDensity l(gl, n_layer), g(bl, n_layer);
    if (d.kind == DimKind::kPattern) {
      // Patterns already tried: the density ratio alone keeps proposing the good trials'
      // consensus; each earlier trial of a pattern costs kSeenPenalty (alone in the space:
      // never again while an unseen candidate exists).
      std::map<Layers, int> seen;
      for (const Layers* x : gl) ++seen[*x];
      for (const Layers* x : bl) ++seen[*x];
      const double per_trial = avoid_seen ? 1e6 : kSeenPenalty;
      // Patterns are many: more candidates than for a scalar.
      for (int c = 0; c < 2 * candidates; ++c) {
        DimValue v;
        v.layers = l.sample(d.pattern, rng);
        auto it = seen.find(v.layers);
        const double penalty = it == seen.end() ? 0 : per_trial * it->second;
        const double score = l.log_pdf(v.layers) - g.log_pdf(v.layers) - penalty;
        consider(std::move(v), score);
      }
      return best;
    }
    std::vector<double> gx, bx;
    for (const auto* p : good) gx.push_back((*p)[dim].x);
    for (const auto* p : bad) bx.push_back((*p)[dim].x);
    const auto lc = categorical_log_probs(d.values.size(), gx);
    const auto gc = categorical_log_probs(d.values.size(), bx);
    std::vector<double> w;
    for (double x : lc) w.push_back(std::exp(x));
    std::discrete_distribution<size_t> pick(w.begin(), w.end());
    std::uniform_int_distribution<size_t> any(0, d.values.size() - 1);
    for (int c = 0; c < candidates; ++c) {
      const size_t k = c % 2 ? pick(rng) : any(rng);
      DimValue v;
      v.x = static_cast<double>(k);
      consider(v, lc[k] - gc[k] + l.log_pdf(d.layers[k]) - g.log_pdf(d.layers[k]));
    }
    return best;
  }
  if (d.kind == DimKind::kCategorical) {
    std::vector<double> gx, bx;
    for (const auto* p : good) gx.push_back((*p)[dim].x);
    for (const auto* p : bad) bx.push_back((*p)[dim].x);
    const auto lc = categorical_log_probs(d.values.size(), gx);
    const auto gc = categorical_log_probs(d.values.size(), bx);
    std::vector<double> w;
    for (double x : lc) w.push_back(std::exp(x));
    std::discrete_distribution<size_t> pick(w.begin(), w.end());
    for (int c = 0; c < candidates; ++c) {
      const size_t k = pick(rng);
      DimValue v;
      v.x = static_cast<double>(k);
      consider(v, lc[k] - gc[k]);
    }
    return best;
  }
  // Ranges: in transformed space; int ranges widened by half a step so the ends are drawn.
  double lo = transform(d.kind, d.min), hi = transform(d.kind, d.max);
  if (d.kind == DimKind::kInt) {
    lo -= 0.5;
    hi += 0.5;
  }
  std::vector<double> gx, bx;
  for (const auto* p : good) gx.push_back(transform(d.kind, (*p)[dim].x));
  for (const auto* p : bad) bx.push_back(transform(d.kind, (*p)[dim].x));
  const Parzen l(lo, hi, gx), g(lo, hi, bx);
  for (int c = 0; c < candidates; ++c) {
    DimValue v;
    v.x = untransform(d, l.sample(rng));
    const double t = transform(d.kind, v.x);
    consider(v, l.log_pdf(t) - g.log_pdf(t));
  }
  return best;
}

}  // namespace

uint64_t proposal_seed(int64_t sweep_seed, int64_t index, int64_t retry) {
  auto mix = [](uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  };
  return mix(mix(mix(static_cast<uint64_t>(sweep_seed)) ^ static_cast<uint64_t>(index)) ^
             static_cast<uint64_t>(retry));
}

SearchPoint tpe_propose(const SearchSpace& space, const std::vector<SearchObservation>& finished,
                        const std::vector<SearchPoint>& pending, uint64_t seed,
                        const TpeOptions& options) {
  std::mt19937_64 rng(seed);
  const size_t n = finished.size() + pending.size();
  if (finished.empty() || n < static_cast<size_t>(std::max(0, options.startup_trials))) {
    return random_point(space, rng);
  }
  double liar = finished[0].value;
  double sum = 0;
  for (const auto& o : finished) {
    sum += o.value;
    if (options.liar == TpeOptions::Liar::kWorst) liar = std::max(liar, o.value);
    if (options.liar == TpeOptions::Liar::kBest) liar = std::min(liar, o.value);
  }
  if (options.liar == TpeOptions::Liar::kMean) liar = sum / finished.size();
  // (value, order, point): finished first, then pending, so ties keep the finished ones ahead.
  struct Ranked {
    double value;
    size_t order;
    const SearchPoint* point;
  };
  std::vector<Ranked> all;
  for (const auto& o : finished) all.push_back({o.value, all.size(), &o.point});
  for (const auto& p : pending) all.push_back({liar, all.size(), &p});
  std::stable_sort(all.begin(), all.end(), [](const Ranked& a, const Ranked& b) {
    return a.value < b.value || (a.value == b.value && a.order < b.order);
  });
  const size_t n_good =
      std::clamp<size_t>(static_cast<size_t>(std::ceil(options.gamma * all.size())), 1,
                         std::min<size_t>(all.size(), 25));
  std::vector<const SearchPoint*> good, bad;
  for (size_t i = 0; i < all.size(); ++i) (i < n_good ? good : bad).push_back(all[i].point);
  SearchPoint out;
  for (size_t d = 0; d < space.dims.size(); ++d) {
    out.push_back(propose_dim(space.dims[d], d, good, bad, std::max(1, options.candidates),
                              space.dims.size() == 1, rng));
  }
  return out;
}

std::optional<SearchPoint> propose_new(const SearchSpace& space,
                                       const std::vector<SearchObservation>& finished,
                                       const std::vector<SearchPoint>& pending,
                                       const std::set<std::string>& taken, int64_t sweep_seed,
                                       int64_t index, bool use_model, const TpeOptions& options) {
  constexpr int kTries = 64;
  for (int retry = 0; retry < kTries; ++retry) {
    const uint64_t seed = proposal_seed(sweep_seed, index, retry);
    SearchPoint p;
    // After a few taken model proposals, random draws find what is left.
    if (use_model && retry < kTries / 4) {
      p = tpe_propose(space, finished, pending, seed, options);
    } else {
      std::mt19937_64 rng(seed);
      p = random_point(space, rng);
    }
    if (!taken.count(point_key(space, p))) return p;
  }
  return std::nullopt;
}

}  // namespace hylab::coordinator
