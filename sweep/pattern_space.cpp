#include "sweep/pattern_space.h"

#include <algorithm>
#include <cmath>

#include "common/check.h"
#include "common/run_config.h"

namespace hylab::coordinator {
namespace {

int type_of(const std::string& s, const std::string& where) {
  if (s.empty()) return -1;
  BlockType t;
  if (!parse_block_type(s, &t)) {
    throw ConfigError(fmt::format("{} = \"{}\": expected T (transformer) or M (mamba)", where, s));
  }
  return t == BlockType::kTransformer ? 1 : 0;
}

// ln C(n, k)
double log_choose(int n, int k) {
  return std::lgamma(n + 1.0) - std::lgamma(k + 1.0) - std::lgamma(n - k + 1.0);
}

// The layers a constraint leaves free, and how many of the fixed ones are T.
void free_layers(const PatternConstraints& c, std::vector<int>* free, int* fixed_t) {
  free->clear();
  *fixed_t = 0;
  for (int i = 0; i < c.n_layer; ++i) {
    const bool is_first = i == 0 && c.first >= 0;
    const bool is_last = i == c.n_layer - 1 && c.last >= 0;
    if (is_first)
      *fixed_t += c.first;
    else if (is_last)
      *fixed_t += c.last;
    else
      free->push_back(i);
  }
}

}  // namespace

PatternConstraints make_pattern_constraints(const proto::SearchPatternSpace& space, int n_layer,
                                            const std::string& where) {
  if (n_layer < 1)
    throw ConfigError(fmt::format("{}: n_layer = {}: expected >= 1", where, n_layer));
  const double lo = space.min_attention_fraction(), hi = space.max_attention_fraction();
  if (!(0 <= lo && lo <= hi && hi <= 1)) {
    throw ConfigError(fmt::format("{}.attention_fraction = [{}, {}]: expected 0 <= min <= max <= 1",
                                  where, lo, hi));
  }
  PatternConstraints c;
  c.n_layer = n_layer;
  // A small tolerance so that [0.25, 0.5] of 12 layers allows exactly 3..6.
  c.min_attention = static_cast<int>(std::ceil(lo * n_layer - 1e-9));
  c.max_attention = static_cast<int>(std::floor(hi * n_layer + 1e-9));
  c.first = type_of(space.first(), where + ".first");
  c.last = type_of(space.last(), where + ".last");
  if (n_layer == 1 && c.first >= 0 && c.last >= 0 && c.first != c.last) {
    throw ConfigError(fmt::format("{}: first = {} and last = {} contradict each other with 1 layer",
                                  where, space.first(), space.last()));
  }
  std::vector<int> free;
  int fixed_t = 0;
  free_layers(c, &free, &fixed_t);
  const int reach_lo = fixed_t, reach_hi = fixed_t + static_cast<int>(free.size());
  if (c.min_attention > c.max_attention || c.max_attention < reach_lo ||
      c.min_attention > reach_hi) {
    throw ConfigError(fmt::format(
        "{}: no pattern of {} layers satisfies attention_fraction [{}, {}] (= {}..{} attention "
        "layers) with first = {} and last = {}",
        where, n_layer, lo, hi, c.min_attention, c.max_attention,
        space.first().empty() ? "any" : space.first(),
        space.last().empty() ? "any" : space.last()));
  }
  return c;
}

PatternFeatures pattern_features(const Layers& layers) {
  PatternFeatures f;
  const int n = static_cast<int>(layers.size());
  if (n == 0) return f;
  int t = 0, sw = 0;
  double depth = 0;
  for (int i = 0; i < n; ++i) {
    if (layers[i]) {
      ++t;
      depth += (i + 0.5) / n;
    }
    if (i + 1 < n && layers[i] != layers[i + 1]) ++sw;
  }
  f.attention_fraction = static_cast<double>(t) / n;
  f.mean_attention_depth = t > 0 ? depth / t : 0.5;
  f.switches = n > 1 ? static_cast<double>(sw) / (n - 1) : 0;
  return f;
}

bool satisfies(const PatternConstraints& c, const Layers& layers) {
  if (static_cast<int>(layers.size()) != c.n_layer) return false;
  if (c.first >= 0 && layers.front() != c.first) return false;
  if (c.last >= 0 && layers.back() != c.last) return false;
  int t = 0;
  for (uint8_t x : layers) t += x;
  return c.min_attention <= t && t <= c.max_attention;
}

Layers random_pattern(const PatternConstraints& c, std::mt19937_64& rng) {
  std::vector<int> free;
  int fixed_t = 0;
  free_layers(c, &free, &fixed_t);
  const int nf = static_cast<int>(free.size());
  // Weight of each count k of T among the free layers: C(nf, k), for valid totals.
  std::vector<double> logw;
  std::vector<int> ks;
  for (int k = 0; k <= nf; ++k) {
    const int total = fixed_t + k;
    if (total < c.min_attention || total > c.max_attention) continue;
    ks.push_back(k);
    logw.push_back(log_choose(nf, k));
  }
  const double top = *std::max_element(logw.begin(), logw.end());
  std::vector<double> w;
  for (double l : logw) w.push_back(std::exp(l - top));
  std::discrete_distribution<size_t> pick(w.begin(), w.end());
  const int k = ks[pick(rng)];
  Layers layers(c.n_layer, 0);
  if (c.first >= 0) layers.front() = static_cast<uint8_t>(c.first);
  if (c.last >= 0) layers.back() = static_cast<uint8_t>(c.last);
  std::shuffle(free.begin(), free.end(), rng);
  for (int i = 0; i < k; ++i) layers[free[i]] = 1;
  return layers;
}

Layers repair_pattern(const PatternConstraints& c, Layers layers, std::mt19937_64& rng) {
  layers.resize(c.n_layer, 0);
  if (c.first >= 0) layers.front() = static_cast<uint8_t>(c.first);
  if (c.last >= 0) layers.back() = static_cast<uint8_t>(c.last);
  std::vector<int> free;
  int fixed_t = 0;
  free_layers(c, &free, &fixed_t);
  int t = 0;
  for (uint8_t x : layers) t += x;
  std::shuffle(free.begin(), free.end(), rng);
  for (int i : free) {  // each free layer flips at most once, in random order
    if (t < c.min_attention && !layers[i]) {
      layers[i] = 1;
      ++t;
    } else if (t > c.max_attention && layers[i]) {
      layers[i] = 0;
      --t;
    }
  }
  return layers;
}

std::string pattern_text(const Layers& layers) {
  std::vector<BlockType> p;
  for (uint8_t x : layers) p.push_back(x ? BlockType::kTransformer : BlockType::kMamba);
  return compact_block_pattern(p);
}

Layers layers_of_text(const std::string& text) {
  Layers out;
  for (BlockType t : parse_block_pattern(text)) out.push_back(t == BlockType::kTransformer ? 1 : 0);
  return out;
}

}  // namespace hylab::coordinator
