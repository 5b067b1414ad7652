// The space of block patterns a search may propose, and the features its surrogate sees.
//
// A pattern of n_layer layers is one bit per layer (1 = Transformer "T", 0 = Mamba "M").
// Constraints (all optional, from the sweep spec): the share of attention layers within
// [min_attention_fraction, max_attention_fraction], the first and the last layer's type.
// Every function here is pure; random ones take the generator they draw from.
//
// Features for the surrogate (sweep/tpe.h), beside the per-layer types:
//   attention_fraction    n_T / n_layer
//   mean_attention_depth  mean of (i + 0.5) / n_layer over the T layers (0.5 when none)
//   switches              number of i with type(i) != type(i+1), over (n_layer - 1)
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "proto/sweep.pb.h"

namespace hylab::coordinator {

using Layers = std::vector<uint8_t>;  // (n_layer,) 1 = T, 0 = M

struct PatternConstraints {
  int n_layer = 0;
  int min_attention = 0;  // attention layers, inclusive bounds
  int max_attention = 0;
  int first = -1;  // -1 any, 0 M, 1 T
  int last = -1;
};

struct PatternFeatures {
  double attention_fraction = 0;
  double mean_attention_depth = 0.5;
  double switches = 0;  // normalised to [0, 1]
};

// From the spec's pattern block (fractions, "T"/"M" or empty) and the resolved n_layer.
// Throws ConfigError (naming `where`) when no pattern satisfies them.
PatternConstraints make_pattern_constraints(const proto::SearchPatternSpace& space, int n_layer,
                                            const std::string& where);

PatternFeatures pattern_features(const Layers& layers);
bool satisfies(const PatternConstraints& c, const Layers& layers);

// Uniform over the valid patterns (exactly: the attention count is drawn in proportion to
// the number of valid patterns with that count, then its positions uniformly).
Layers random_pattern(const PatternConstraints& c, std::mt19937_64& rng);

// The nearest valid pattern by flipping layers: fixes first/last, then flips random free
// layers until the attention count is within bounds. Valid input comes back unchanged.
Layers repair_pattern(const PatternConstraints& c, Layers layers, std::mt19937_64& rng);

// "T*2,M*2" <-> {1,1,0,0}. layers_of_text throws ConfigError on a bad pattern.
std::string pattern_text(const Layers& layers);
Layers layers_of_text(const std::string& text);

}  // namespace hylab::coordinator
