// Tree-structured Parzen Estimator (Bergstra et al., 2011), asynchronous, over a SearchSpace.
// A pure function: (finished trials, pending trials, seed) -> the next point.
//
//  1. Fewer than startup_trials trials (finished + pending), or none finished: a uniform
//     random point (random_point), as `method: random` would draw.
//  2. Else every pending trial gets a constant-liar value (the worst finished value by
//     default), so proposals made while trials run spread out instead of piling onto the
//     current best. The trials are sorted by value; the best ceil(gamma * n) are "good".
//  3. Per dimension (univariate TPE), a density l(x) from the good trials and g(x) from the
//     rest, each mixed with the uniform prior (weight 1). `candidates` draws from l; the one
//     with the largest log l(x) - log g(x) is taken.
//
// Densities per kind:
//   uniform / int / log_uniform (in log space): Parzen mixture of truncated Gaussians, one
//     per trial, each as wide as its larger gap to a neighbour (clipped to [range/min(100,
//     n+1), range]).
//   categorical: (count + 1/K) / (n + 1).
//   pattern: per-layer Bernoulli (T share, smoothed) x a Gaussian kernel density over the
//     derived features (attention fraction, mean attention depth, switches); candidates come
//     from the per-layer Bernoullis, from mutations of good patterns (flip or swap layers)
//     and from the prior, every one repaired to satisfy the constraints.
//   categorical of patterns (listed or generated): the categorical term plus the pattern
//     term of each choice's layers, so choices never tried borrow strength from similar ones.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "sweep/search_space.h"

namespace hylab::coordinator {

struct TpeOptions {
  int startup_trials = 10;
  int candidates = 24;
  double gamma = 0.2;
  enum class Liar { kWorst, kMean, kBest } liar = Liar::kWorst;
};

struct SearchObservation {
  SearchPoint point;
  double value = 0;  // lower is better (maximised metrics are negated by the caller)
};

SearchPoint tpe_propose(const SearchSpace& space, const std::vector<SearchObservation>& finished,
                        const std::vector<SearchPoint>& pending, uint64_t seed,
                        const TpeOptions& options);

// Proposal number `index` of a sweep that is not one of `taken` (point_key of the sweep's
// trials): tpe_propose (use_model) or random_point, seeded proposal_seed(sweep_seed, index,
// retry) for retry = 0, 1, ... up to 64 tries; nullopt when every try was taken (a small
// space that is used up).
std::optional<SearchPoint> propose_new(const SearchSpace& space,
                                       const std::vector<SearchObservation>& finished,
                                       const std::vector<SearchPoint>& pending,
                                       const std::set<std::string>& taken, int64_t sweep_seed,
                                       int64_t index, bool use_model, const TpeOptions& options);

// The seed of proposal number `index` of a sweep seeded `sweep_seed` (splitmix64 of both):
// a sweep's proposals do not depend on when they were made, only on what was known.
uint64_t proposal_seed(int64_t sweep_seed, int64_t index, int64_t retry = 0);

}  // namespace hylab::coordinator
