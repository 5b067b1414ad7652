// The space an adaptive search draws from: one dimension per swept parameter of a spec.
//
// Kinds: categorical (`values`, and listed or generated block patterns), uniform,
// log_uniform and int_uniform ranges, and `distribution: pattern` (every valid T/M
// sequence, sweep/pattern_space.h). A categorical whose values are all block patterns
// of one length is pattern-aware: the surrogate also sees each value's layers.
// A point has one value per dimension; it turns into the trial's params (name, text).
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "sweep/pattern_space.h"
#include "proto/sweep.pb.h"

namespace hylab::coordinator {

enum class DimKind { kCategorical, kUniform, kLogUniform, kInt, kPattern };

struct SearchDim {
  std::string name;
  DimKind kind = DimKind::kCategorical;
  // kCategorical: what each choice records and sets (generated patterns record
  // attention_fraction and placement beside block_pattern).
  std::vector<std::vector<std::pair<std::string, std::string>>> records;
  std::vector<std::string> values;  // the value set for `name`, per choice
  std::vector<Layers> layers;       // per choice, when every choice is a pattern of one length
  double min = 0, max = 0;          // ranges
  PatternConstraints pattern;       // kPattern
};

struct SearchSpace {
  std::vector<SearchDim> dims;
};

// categorical: x = choice index; ranges: x = the value (int: integral); pattern: layers.
struct DimValue {
  double x = 0;
  Layers layers;
};
using SearchPoint = std::vector<DimValue>;

// From a spec's parameters; n_layer from the resolved base (generated and pattern spaces).
SearchSpace build_search_space(const proto::SweepSpec& spec, int n_layer);

SearchPoint random_point(const SearchSpace& space, std::mt19937_64& rng);

// (name, value as written) for the trial's params, in dimension order.
std::vector<std::pair<std::string, std::string>> point_params(const SearchSpace& space,
                                                              const SearchPoint& p);
// (config key, value) to apply to the base config.
std::vector<std::pair<std::string, std::string>> point_overrides(const SearchSpace& space,
                                                                 const SearchPoint& p);
// The inverse of point_params: nullopt when a trial's params do not fit the space
// (a value that is not a choice, a range value outside it, an invalid pattern).
std::optional<SearchPoint> point_of_params(
    const SearchSpace& space, const std::vector<std::pair<std::string, std::string>>& params);

// A text key of a point (equal points, equal keys).
std::string point_key(const SearchSpace& space, const SearchPoint& p);

}  // namespace hylab::coordinator
