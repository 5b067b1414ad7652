#include "sweep/search_space.h"

#include <cmath>
#include <cstdlib>

#include "common/check.h"
#include "sweep/sweep_expander.h"

namespace hylab::coordinator {
namespace {

std::string format_number(DimKind kind, double x) {
  if (kind == DimKind::kInt) return std::to_string(static_cast<int64_t>(std::llround(x)));
  return fmt::format("{}", x);
}

bool parse_double(const std::string& s, double* out) {
  if (s.empty()) return false;
  char* end = nullptr;
  *out = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size() && std::isfinite(*out);
}

// Every choice a pattern of one length: the dimension is pattern-aware.
void attach_layers(SearchDim* d) {
  if (d->name != "block_pattern") return;
  std::vector<Layers> all;
  for (const auto& v : d->values) {
    try {
      all.push_back(layers_of_text(v));
    } catch (const ConfigError&) {
      return;
    }
    if (all.back().size() != all.front().size() || all.back().empty()) return;
  }
  d->layers = std::move(all);
}

}  // namespace

SearchSpace build_search_space(const proto::SweepSpec& spec, int n_layer) {
  SearchSpace space;
  for (const auto& p : spec.parameters()) {
    SearchDim d;
    d.name = p.name();
    const std::string where = "parameters." + p.name();
    if (p.distribution() == "pattern") {
      d.kind = DimKind::kPattern;
      d.pattern = make_pattern_constraints(p.pattern(), n_layer, where);
    } else if (p.has_min()) {
      d.min = p.min();
      d.max = p.max();
      d.kind = p.distribution() == "log_uniform"   ? DimKind::kLogUniform
               : p.distribution() == "int_uniform" ? DimKind::kInt
                                                   : DimKind::kUniform;
      if (d.kind == DimKind::kInt) {
        d.min = std::ceil(d.min);
        d.max = std::floor(d.max);
        if (d.min > d.max) {
          throw ConfigError(
              fmt::format("{}: int_uniform [{}, {}] holds no integer", where, p.min(), p.max()));
        }
      }
    } else if (p.has_generate()) {
      for (double f : p.generate().attention_fraction()) {
        for (const auto& placement : p.generate().placement()) {
          const std::string pattern = generate_block_pattern(n_layer, f, placement, layer_ends(p.generate()));
          d.values.push_back(pattern);
          d.records.push_back(generator_record(pattern, fmt::format("{}", f), placement, p.generate()));
        }
      }
      attach_layers(&d);
    } else {
      for (const auto& v : p.values()) {
        d.values.push_back(v);
        d.records.push_back({{p.name(), v}});
      }
      attach_layers(&d);
    }
    space.dims.push_back(std::move(d));
  }
  return space;
}

SearchPoint random_point(const SearchSpace& space, std::mt19937_64& rng) {
  SearchPoint p;
  for (const auto& d : space.dims) {
    DimValue v;
    switch (d.kind) {
      case DimKind::kCategorical:
        v.x =
            static_cast<double>(std::uniform_int_distribution<size_t>(0, d.values.size() - 1)(rng));
        break;
      case DimKind::kUniform:
        v.x = std::uniform_real_distribution<double>(d.min, d.max)(rng);
        break;
      case DimKind::kLogUniform:
        v.x =
            std::exp(std::uniform_real_distribution<double>(std::log(d.min), std::log(d.max))(rng));
        break;
      case DimKind::kInt:
        v.x = static_cast<double>(std::uniform_int_distribution<int64_t>(
            static_cast<int64_t>(d.min), static_cast<int64_t>(d.max))(rng));
        break;
      case DimKind::kPattern:
        v.layers = random_pattern(d.pattern, rng);
        break;
    }
    p.push_back(std::move(v));
  }
  return p;
}

std::vector<std::pair<std::string, std::string>> point_params(const SearchSpace& space,
                                                              const SearchPoint& p) {
  std::vector<std::pair<std::string, std::string>> out;
  for (size_t i = 0; i < space.dims.size(); ++i) {
    const SearchDim& d = space.dims[i];
    if (d.kind == DimKind::kCategorical) {
      const auto& r = d.records[static_cast<size_t>(p[i].x)];
      out.insert(out.end(), r.begin(), r.end());
    } else if (d.kind == DimKind::kPattern) {
      out.push_back({d.name, pattern_text(p[i].layers)});
    } else {
      out.push_back({d.name, format_number(d.kind, p[i].x)});
    }
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> point_overrides(const SearchSpace& space,
                                                                 const SearchPoint& p) {
  std::vector<std::pair<std::string, std::string>> out;
  for (size_t i = 0; i < space.dims.size(); ++i) {
    const SearchDim& d = space.dims[i];
    if (d.kind == DimKind::kCategorical)
      out.push_back({d.name, d.values[static_cast<size_t>(p[i].x)]});
    else if (d.kind == DimKind::kPattern)
      out.push_back({d.name, pattern_text(p[i].layers)});
    else
      out.push_back({d.name, format_number(d.kind, p[i].x)});
  }
  return out;
}

std::optional<SearchPoint> point_of_params(
    const SearchSpace& space, const std::vector<std::pair<std::string, std::string>>& params) {
  SearchPoint p;
  for (const auto& d : space.dims) {
    const std::string* text = nullptr;
    for (const auto& [k, v] : params) {
      if (k == d.name) text = &v;
    }
    if (text == nullptr) return std::nullopt;
    DimValue v;
    if (d.kind == DimKind::kCategorical) {
      size_t i = 0;
      while (i < d.values.size() && d.values[i] != *text) ++i;
      if (i == d.values.size()) return std::nullopt;
      v.x = static_cast<double>(i);
    } else if (d.kind == DimKind::kPattern) {
      try {
        v.layers = layers_of_text(*text);
      } catch (const ConfigError&) {
        return std::nullopt;
      }
      if (!satisfies(d.pattern, v.layers)) return std::nullopt;
    } else {
      if (!parse_double(*text, &v.x) || v.x < d.min || v.x > d.max) return std::nullopt;
    }
    p.push_back(std::move(v));
  }
  return p;
}

std::string point_key(const SearchSpace& space, const SearchPoint& p) {
  std::string key;
  for (const auto& [k, v] : point_params(space, p)) key += k + "=" + v + ";";
  return key;
}

}  // namespace hylab::coordinator
