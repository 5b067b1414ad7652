#include "sweep/sweep_spec.h"

#include <google/protobuf/util/json_util.h>
#include <yaml-cpp/yaml.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "common/check.h"
#include "common/config_keys.h"
#include "common/metrics.h"
#include "common/suggest.h"

namespace hylab::coordinator {
namespace {

namespace fs = std::filesystem;

// A sweep's metric must be one the trainer records (common/metrics.h), or no trial would
// ever have a value for it.
void check_metric_name(const std::string& name, const std::string& where) {
  std::vector<std::string> names;
  for (const MetricName& m : trainer_metric_names()) {
    if (name == m.name) return;
    names.push_back(m.name);
  }
  const std::string near = nearest_name(name, names);
  std::string all;
  for (const auto& n : names) all += (all.empty() ? "" : ", ") + n;
  throw ConfigError(fmt::format("{} = \"{}\": not a metric the trainer records{}; expected one of {}",
                                where, name, near.empty() ? "" : " (did you mean " + near + "?)", all));
}

std::string join(const std::set<std::string>& s) {
  std::string out;
  for (const auto& x : s) out += (out.empty() ? "" : ", ") + x;
  return out;
}

void check_keys(const YAML::Node& map, const std::set<std::string>& allowed,
                const std::string& where) {
  for (const auto& kv : map) {
    const std::string key = kv.first.as<std::string>();
    if (!allowed.count(key)) {
      throw ConfigError(fmt::format("{}: unknown key \"{}\"; allowed: {}", where, key, join(allowed)));
    }
  }
}

YAML::Node require_map(const YAML::Node& n, const std::string& where) {
  if (!n.IsMap()) throw ConfigError(fmt::format("{}: expected a map", where));
  return n;
}

template <typename T>
T scalar_as(const YAML::Node& n, const std::string& where, const char* what) {
  if (!n.IsScalar()) throw ConfigError(fmt::format("{}: expected {}", where, what));
  try {
    return n.as<T>();
  } catch (const YAML::Exception&) {
    throw ConfigError(fmt::format("{} = \"{}\": expected {}", where, n.Scalar(), what));
  }
}

// The YAML text of one value: scalars as written, lists/maps in flow style ("[T, M]").
std::string value_text(const YAML::Node& n, const std::string& where) {
  if (n.IsScalar()) return n.Scalar();
  if (n.IsNull()) return "null";
  YAML::Emitter out;
  out << YAML::Flow << n;
  if (!out.good()) throw ConfigError(fmt::format("{}: cannot render value", where));
  return out.c_str();
}

// W&B spells hylab's log_uniform (bounds as values) log_uniform_values; its own log_uniform
// takes exponents, which hylab does not accept (docs/SEARCH.md).
std::string wandb_distribution(const std::string& d) { return d == "log_uniform_values" ? "log_uniform" : d; }

// `distribution: pattern` (block_pattern only): the searchable pattern space with its
// constraints. Returns false for every other parameter body.
bool parse_search_parameter(const std::string& name, const YAML::Node& body, const std::string& where,
                            proto::SweepParameter* p) {
  const bool is_pattern = body["distribution"] && body["distribution"].IsScalar() &&
                          body["distribution"].Scalar() == "pattern";
  if (!is_pattern) {
    for (const char* k : {"attention_fraction", "first", "last"}) {
      if (body[k]) {
        throw ConfigError(fmt::format("{}.{}: only with distribution: pattern (block_pattern)", where, k));
      }
    }
    return false;
  }
  if (name != "block_pattern") {
    throw ConfigError(fmt::format("{}.distribution = \"pattern\": only block_pattern is a pattern", where));
  }
  check_keys(body, {"distribution", "attention_fraction", "first", "last"}, where);
  p->set_distribution("pattern");
  auto* space = p->mutable_pattern();
  if (const YAML::Node f = body["attention_fraction"]) {
    if (!f.IsSequence() || f.size() != 2) {
      throw ConfigError(fmt::format("{}.attention_fraction: expected [min, max] within [0, 1], e.g. [0.1, 0.5]", where));
    }
    space->set_min_attention_fraction(scalar_as<double>(f[0], where + ".attention_fraction[0]", "a number"));
    space->set_max_attention_fraction(scalar_as<double>(f[1], where + ".attention_fraction[1]", "a number"));
    if (!(0 <= space->min_attention_fraction() && space->min_attention_fraction() <= space->max_attention_fraction() &&
          space->max_attention_fraction() <= 1)) {
      throw ConfigError(fmt::format("{}.attention_fraction = [{}, {}]: expected 0 <= min <= max <= 1", where,
                                    space->min_attention_fraction(), space->max_attention_fraction()));
    }
  }
  for (const char* k : {"first", "last"}) {
    if (!body[k]) continue;
    const auto v = scalar_as<std::string>(body[k], fmt::format("{}.{}", where, k), "T or M");
    BlockType t;
    if (!parse_block_type(v, &t)) {
      throw ConfigError(fmt::format("{}.{} = \"{}\": expected T (transformer) or M (mamba)", where, k, v));
    }
    const std::string letter = block_type_letter(t);
    if (std::string(k) == "first") space->set_first(letter); else space->set_last(letter);
  }
  return true;
}

void parse_tpe_block(const YAML::Node& n, const std::string& where, SweepSpec* spec) {
  const YAML::Node t = require_map(n, where);
  check_keys(t, {"startup_trials", "candidates", "gamma", "liar"}, where);
  auto* tpe = spec->mutable_tpe();
  auto bounded = [&](const char* key, int64_t lo, int64_t hi) {
    const std::string field = fmt::format("{}.{}", where, key);
    const int64_t v = scalar_as<int64_t>(t[key], field, "an integer");
    if (v < lo || v > hi) throw ConfigError(fmt::format("{} = {}: expected {}..{}", field, v, lo, hi));
    return static_cast<int32_t>(v);
  };
  if (t["startup_trials"]) tpe->set_startup_trials(bounded("startup_trials", 1, kMaxSweepTrials));
  if (t["candidates"]) tpe->set_candidates(bounded("candidates", 1, 10000));
  if (t["gamma"]) tpe->set_gamma(scalar_as<double>(t["gamma"], where + ".gamma", "a number"));
  if (t["liar"]) tpe->set_liar(scalar_as<std::string>(t["liar"], where + ".liar", "worst, mean or best"));
  if (tpe->startup_trials() < 1) throw ConfigError(fmt::format("{}.startup_trials = {}: expected >= 1", where, tpe->startup_trials()));
  if (tpe->candidates() < 1 || tpe->candidates() > 10000) throw ConfigError(fmt::format("{}.candidates = {}: expected 1..10000", where, tpe->candidates()));
  if (!(tpe->gamma() > 0 && tpe->gamma() < 1)) throw ConfigError(fmt::format("{}.gamma = {}: expected a number in (0, 1)", where, tpe->gamma()));
  if (tpe->liar() != "worst" && tpe->liar() != "mean" && tpe->liar() != "best") {
    throw ConfigError(fmt::format("{}.liar = \"{}\": expected worst, mean or best", where, tpe->liar()));
  }
  if (spec->method() != "tpe") throw ConfigError(fmt::format("{}: only with method: tpe", where));
}

void parse_hyperband(const YAML::Node& e, const std::string& ew, proto::EarlyStop* es) {
  const bool hb = es->type() == "hyperband";
  for (const char* k : {"min_tokens", "max_tokens"}) {
    if (!e[k]) continue;
    if (!hb) throw ConfigError(fmt::format("{}.{}: only with type: hyperband", ew, k));
    const int64_t v = scalar_as<int64_t>(e[k], fmt::format("{}.{}", ew, k), "an integer (tokens)");
    if (std::string(k) == "min_tokens") es->set_min_tokens(v); else es->set_max_tokens(v);
  }
  if (!hb) return;
  if (!es->has_min_tokens() || !es->has_max_tokens()) {
    throw ConfigError(fmt::format("{}: hyperband needs min_tokens and max_tokens (its smallest and "
                                  "largest rung, in training tokens)", ew));
  }
  if (es->min_tokens() < 1 || es->max_tokens() < es->min_tokens()) {
    throw ConfigError(fmt::format("{}: min_tokens = {}, max_tokens = {}: expected 1 <= min_tokens <= max_tokens",
                                  ew, es->min_tokens(), es->max_tokens()));
  }
}

void parse_parameter(const std::string& name, const YAML::Node& body, const std::string& where,
                     proto::SweepParameter* p) {
  p->set_name(name);
  if (!is_config_key(name)) {
    throw ConfigError(fmt::format("{}: \"{}\" is not a config key{}", where, name, unknown_config_key_hint(name)));
  }
  if (!body.IsMap()) {
    throw ConfigError(fmt::format(
        "{}: expected a map such as {{values: [...]}}, {{value: x}} or {{min: a, max: b}}", where));
  }
  check_keys(body, {"values", "value", "generate", "min", "max", "distribution", "attention_fraction",
                    "first", "last"}, where);
  int kinds = 0;
  if (parse_search_parameter(name, body, where, p)) return;
  if (body["values"]) {
    ++kinds;
    const YAML::Node v = body["values"];
    if (!v.IsSequence() || v.size() == 0) {
      throw ConfigError(fmt::format("{}.values: expected a non-empty list", where));
    }
    for (size_t i = 0; i < v.size(); ++i) {
      p->add_values(value_text(v[i], fmt::format("{}.values[{}]", where, i)));
    }
  }
  if (body["value"]) {
    ++kinds;
    p->add_values(value_text(body["value"], where + ".value"));
  }
  if (body["generate"]) {
    ++kinds;
    if (name != "block_pattern") {
      throw ConfigError(fmt::format("{}.generate: only block_pattern can be generated", where));
    }
    const std::string gw = where + ".generate";
    const YAML::Node g = require_map(body["generate"], gw);
    check_keys(g, {"attention_fraction", "placement", "first_layer", "last_layer"}, gw);
    auto* gen = p->mutable_generate();
    const YAML::Node fr = g["attention_fraction"];
    if (!fr || !fr.IsSequence() || fr.size() == 0) {
      throw ConfigError(fmt::format("{}.attention_fraction: expected a non-empty list of numbers in [0, 1]", gw));
    }
    for (size_t i = 0; i < fr.size(); ++i) {
      const double f = scalar_as<double>(fr[i], fmt::format("{}.attention_fraction[{}]", gw, i), "a number");
      if (f < 0 || f > 1) {
        throw ConfigError(fmt::format("{}.attention_fraction[{}] = {}: expected a number in [0, 1]", gw, i, f));
      }
      gen->add_attention_fraction(f);
    }
    const YAML::Node pl = g["placement"];
    if (!pl) {
      gen->add_placement("even");
    } else {
      if (!pl.IsSequence() || pl.size() == 0) {
        throw ConfigError(fmt::format("{}.placement: expected a non-empty list of even, early, late, centered", gw));
      }
      for (size_t i = 0; i < pl.size(); ++i) {
        const auto s = scalar_as<std::string>(pl[i], fmt::format("{}.placement[{}]", gw, i),
                                              "even, early, late or centered");
        if (s != "even" && s != "early" && s != "late" && s != "centered") {
          throw ConfigError(
              fmt::format("{}.placement[{}] = \"{}\": expected even, early, late or centered", gw, i, s));
        }
        gen->add_placement(s);
      }
    }
    // first_layer / last_layer: pin an end's type; expansion checks them against each fraction.
    for (const char* k : {"first_layer", "last_layer"}) {
      if (!g[k]) continue;
      const auto v = scalar_as<std::string>(g[k], fmt::format("{}.{}", gw, k), "T or M");
      BlockType t;
      if (!parse_block_type(v, &t) || (t != BlockType::kTransformer && t != BlockType::kMamba)) {
        throw ConfigError(fmt::format("{}.{} = \"{}\": expected T (transformer) or M (mamba)", gw, k, v));
      }
      const std::string letter = block_type_letter(t);
      if (std::string(k) == "first_layer") gen->set_first_layer(letter); else gen->set_last_layer(letter);
    }
  }
  if (body["min"] || body["max"]) {
    ++kinds;
    if (!body["min"] || !body["max"]) {
      throw ConfigError(fmt::format("{}: a range needs both min and max", where));
    }
    p->set_min(scalar_as<double>(body["min"], where + ".min", "a number"));
    p->set_max(scalar_as<double>(body["max"], where + ".max", "a number"));
    if (!(p->min() <= p->max())) {
      throw ConfigError(fmt::format("{}: min = {} must not exceed max = {}", where, p->min(), p->max()));
    }
    if (body["distribution"]) {
      const auto d = wandb_distribution(scalar_as<std::string>(body["distribution"], where + ".distribution", "a name"));
      if (d != "uniform" && d != "log_uniform" && d != "int_uniform") {
        throw ConfigError(fmt::format("{}.distribution = \"{}\": expected uniform, log_uniform, "
                                      "log_uniform_values or int_uniform with min/max", where, d));
      }
      if (d == "log_uniform" && p->min() <= 0) {
        throw ConfigError(fmt::format("{}: log_uniform needs min > 0 (got {})", where, p->min()));
      }
      p->set_distribution(d);
    }
  } else if (body["distribution"]) {
    const auto d = scalar_as<std::string>(body["distribution"], where + ".distribution", "a name");
    if (!((d == "categorical" && body["values"]) || (d == "constant" && body["value"]))) {
      throw ConfigError(fmt::format("{}.distribution = \"{}\": only meaningful with min and max "
                                    "(or categorical with values, constant with value)", where, d));
    }
  }
  if (kinds != 1) {
    throw ConfigError(fmt::format(
        "{}: give exactly one of values, value, generate or min/max (got {})", where, kinds));
  }
}

// `budget: {tokens: N}` or `budget: {flops: F}`; it replaces every trial's horizon, so the
// horizon keys may not be swept or fixed beside it (parameters are parsed before this).
void parse_budget(const YAML::Node& node, const std::string& where, SweepSpec* spec) {
  const std::string bw = where + ": budget";
  const YAML::Node b = require_map(node, bw);
  check_keys(b, {"tokens", "flops"}, bw);
  if (b.size() != 1) {
    throw ConfigError(fmt::format("{}: give exactly one of tokens or flops, e.g. {{flops: 1e18}}", bw));
  }
  for (const char* key : {"tokens", "flops"}) {
    if (!b[key]) continue;
    const double v = scalar_as<double>(b[key], fmt::format("{}.{}", bw, key), "a number");
    if (!(v > 0) || !std::isfinite(v)) {
      throw ConfigError(fmt::format("{}.{} = {}: expected a number > 0", bw, key, v));
    }
    if (std::string(key) == "tokens") spec->mutable_budget()->set_tokens(v);
    else spec->mutable_budget()->set_flops(v);
  }
  for (const char* horizon : {"num_iterations", "target_flops", "target_tokens"}) {
    for (const auto& p : spec->parameters()) {
      if (p.name() == horizon) {
        throw ConfigError(fmt::format("{}: parameters.{} and budget both set the horizon; "
                                      "drop one of them", where, horizon));
      }
    }
    if (std::string(horizon) != "num_iterations" && spec->overrides().count(horizon)) {
      throw ConfigError(fmt::format("{}: overrides.{} and budget both set the horizon; drop one "
                                    "of them", where, horizon));
    }
  }
}

}  // namespace

SweepSpec parse_sweep_yaml(const std::string& yaml_text, const std::string& where) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw ConfigError(fmt::format("{}: not valid YAML: {}", where, e.what()));
  }
  if (!root.IsMap()) throw ConfigError(fmt::format("{}: expected a map (name, base, parameters, ...)", where));
  check_keys(root, {"name", "description", "base", "method", "count", "seed", "metric", "resources",
                    "max_retries", "early_stop", "priority", "parameters", "overrides", "seeds", "budget", "tpe", "run_cap"},
             where);
  SweepSpec spec;
  auto str = [&](const char* key) {
    return scalar_as<std::string>(root[key], fmt::format("{}: {}", where, key), "a string");
  };
  auto integer = [&](const YAML::Node& n, const std::string& field) {
    return scalar_as<int64_t>(n, fmt::format("{}: {}", where, field), "an integer");
  };
  // Every count is bounded before it is narrowed or used: a large value is refused, never
  // wrapped to a small one or left to cost the coordinator memory and time.
  auto bounded = [&](const YAML::Node& n, const std::string& field, int64_t lo, int64_t hi) {
    const int64_t v = integer(n, field);
    if (v < lo || v > hi) {
      throw ConfigError(fmt::format("{}: {} = {}: expected {}..{}", where, field, v, lo, hi));
    }
    return static_cast<int32_t>(v);
  };
  constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
  if (!root["name"]) throw ConfigError(fmt::format("{}: name: required (e.g. name: patterns-d12)", where));
  spec.set_name(str("name"));
  if (spec.name().empty() || spec.name() == "local") {
    throw ConfigError(fmt::format("{}: name = \"{}\": expected a non-empty name other than \"local\" "
                                  "(reserved for `hylab train` runs)", where, spec.name()));
  }
  if (!root["base"]) throw ConfigError(fmt::format("{}: base: required (a config file, e.g. configs/d12.yaml)", where));
  spec.set_base(str("base"));
  if (root["method"]) {
    spec.set_method(str("method"));
    if (spec.method() == "bayes") {
      throw ConfigError(fmt::format("{}: method = \"bayes\": hylab's model-based search is method: tpe "
                                    "(a Tree-structured Parzen Estimator; see docs/SEARCH.md)", where));
    }
    if (spec.method() != "grid" && spec.method() != "random" && spec.method() != "tpe") {
      throw ConfigError(fmt::format("{}: method = \"{}\": expected grid, random or tpe", where, spec.method()));
    }
  }
  if (root["count"]) spec.set_count(bounded(root["count"], "count", 0, kMaxSweepTrials));
  if (root["run_cap"]) {  // W&B's name for the budget
    if (root["count"]) throw ConfigError(fmt::format("{}: give count or run_cap, not both", where));
    spec.set_count(bounded(root["run_cap"], "run_cap", 0, kMaxSweepTrials));
  }
  if (root["seed"]) spec.set_seed(integer(root["seed"], "seed"));
  if ((spec.method() == "random" || spec.method() == "tpe") && spec.count() < 1) {
    throw ConfigError(fmt::format("{}: count = {}: method {} needs count >= 1 (the number of trials)",
                                  where, spec.count(), spec.method()));
  }
  if (root["tpe"]) parse_tpe_block(root["tpe"], where + ": tpe", &spec);
  if (root["max_retries"]) {
    spec.set_max_retries(bounded(root["max_retries"], "max_retries", 0, 100));
    if (spec.max_retries() < 0 || spec.max_retries() > 100) {
      throw ConfigError(fmt::format("{}: max_retries = {}: expected 0..100", where, spec.max_retries()));
    }
  }
  if (root["priority"]) spec.set_priority(bounded(root["priority"], "priority", -kInt32Max, kInt32Max));
  if (root["metric"]) {
    const std::string mw = where + ": metric";
    const YAML::Node m = require_map(root["metric"], mw);
    check_keys(m, {"name", "goal"}, mw);
    auto* metric = spec.mutable_metric();
    if (m["name"]) {
      metric->set_name(scalar_as<std::string>(m["name"], mw + ".name", "a metric name"));
      check_metric_name(metric->name(), mw + ".name");
      // Without a goal, the metric's own direction (recall_acc, tok_per_s, mfu: maximize).
      for (const MetricName& known : trainer_metric_names()) {
        if (metric->name() == known.name && known.maximize) metric->set_goal("maximize");
      }
    }
    if (m["goal"]) {
      metric->set_goal(scalar_as<std::string>(m["goal"], mw + ".goal", "minimize or maximize"));
      if (metric->goal() != "minimize" && metric->goal() != "maximize") {
        throw ConfigError(fmt::format("{}.goal = \"{}\": expected minimize or maximize", mw, metric->goal()));
      }
    }
  }
  if (root["resources"]) {
    const std::string rw = where + ": resources";
    const YAML::Node r = require_map(root["resources"], rw);
    check_keys(r, {"gpus_per_trial", "nodes_per_trial"}, rw);
    auto* res = spec.mutable_resources();
    if (r["gpus_per_trial"]) res->set_gpus_per_trial(bounded(r["gpus_per_trial"], "resources.gpus_per_trial", 1, 4096));
    if (r["nodes_per_trial"]) res->set_nodes_per_trial(bounded(r["nodes_per_trial"], "resources.nodes_per_trial", 1, 4096));
    if (res->gpus_per_trial() < 1 || res->gpus_per_trial() > 4096) {
      throw ConfigError(fmt::format("{}.gpus_per_trial = {}: expected 1..4096 (on a CPU-only worker: "
                                    "trainer processes)", rw, res->gpus_per_trial()));
    }
    if (res->nodes_per_trial() < 1 || res->gpus_per_trial() % res->nodes_per_trial() != 0) {
      throw ConfigError(fmt::format("{}.nodes_per_trial = {}: expected >= 1 and dividing gpus_per_trial = {}",
                                    rw, res->nodes_per_trial(), res->gpus_per_trial()));
    }
  }
  if (root["early_stop"]) {
    const std::string ew = where + ": early_stop";
    const YAML::Node e = require_map(root["early_stop"], ew);
    check_keys(e, {"type", "min_steps", "min_trials", "eta", "rungs", "min_tokens", "max_tokens"}, ew);
    auto* es = spec.mutable_early_stop();
    if (!e["type"]) throw ConfigError(fmt::format("{}.type: required (median, asha or hyperband)", ew));
    es->set_type(scalar_as<std::string>(e["type"], ew + ".type", "median, asha or hyperband"));
    if (es->type() != "median" && es->type() != "asha" && es->type() != "hyperband") {
      throw ConfigError(fmt::format("{}.type = \"{}\": expected median, asha or hyperband", ew, es->type()));
    }
    parse_hyperband(e, ew, es);
    if (e["min_steps"]) es->set_min_steps(integer(e["min_steps"], "early_stop.min_steps"));
    if (e["min_trials"]) es->set_min_trials(bounded(e["min_trials"], "early_stop.min_trials", 1, kMaxSweepTrials));
    if (e["eta"]) es->set_eta(bounded(e["eta"], "early_stop.eta", 2, 1000));
    if (e["rungs"]) es->set_rungs(bounded(e["rungs"], "early_stop.rungs", 1, 20));
    if (es->min_steps() < 1) throw ConfigError(fmt::format("{}.min_steps = {}: expected >= 1", ew, es->min_steps()));
    if (es->min_trials() < 1) throw ConfigError(fmt::format("{}.min_trials = {}: expected >= 1", ew, es->min_trials()));
    if (es->eta() < 2) throw ConfigError(fmt::format("{}.eta = {}: expected >= 2", ew, es->eta()));
    if (es->rungs() < 1 || es->rungs() > 20) throw ConfigError(fmt::format("{}.rungs = {}: expected 1..20", ew, es->rungs()));
  }
  if (root["overrides"]) {
    const std::string ow = where + ": overrides";
    const YAML::Node o = require_map(root["overrides"], ow);
    for (const auto& kv : o) {
      const std::string key = kv.first.as<std::string>();
      if (!is_config_key(key)) {
        throw ConfigError(fmt::format("{}.{}: not a config key{}", ow, key, unknown_config_key_hint(key)));
      }
      (*spec.mutable_overrides())[key] = value_text(kv.second, ow + "." + key);
    }
  }
  if (root["parameters"]) {
    const std::string pw = where + ": parameters";
    const YAML::Node ps = require_map(root["parameters"], pw);
    std::set<std::string> seen;
    for (const auto& kv : ps) {
      const std::string name = kv.first.as<std::string>();
      if (!seen.insert(name).second) throw ConfigError(fmt::format("{}.{}: given twice", pw, name));
      parse_parameter(name, kv.second, pw + "." + name, spec.add_parameters());
    }
  }
  if (root["seeds"]) {
    const std::string sw = where + ": seeds";
    const YAML::Node seeds = root["seeds"];
    if (!seeds.IsSequence() || seeds.size() == 0) {
      throw ConfigError(fmt::format("{}: expected a non-empty list of integers, e.g. seeds: [0, 1, 2]", sw));
    }
    if (static_cast<int64_t>(seeds.size()) > kMaxSweepTrials) {
      throw ConfigError(fmt::format("{}: {} seeds: expected at most {}", sw, seeds.size(), kMaxSweepTrials));
    }
    std::set<int64_t> seen;
    for (size_t i = 0; i < seeds.size(); ++i) {
      const int64_t s = integer(seeds[i], fmt::format("seeds[{}]", i));
      if (!seen.insert(s).second) throw ConfigError(fmt::format("{}[{}] = {}: given twice", sw, i, s));
      spec.add_seeds(s);
    }
    if (spec.overrides().count("seed")) {
      throw ConfigError(fmt::format("{}: seed is both in overrides and set by seeds; keep one", where));
    }
  }
  if (root["budget"]) parse_budget(root["budget"], where, &spec);
  for (const auto& p : spec.parameters()) {
    if (p.name() == "seed" && spec.seeds_size() > 0) {
      throw ConfigError(fmt::format("{}: seed is both in parameters and set by seeds; keep one", where));
    }
    if (spec.method() == "grid" && (p.has_min() || p.distribution() == "pattern")) {
      throw ConfigError(fmt::format("{}: parameters.{}: a {} needs method: random or tpe (grid needs values)",
                                    where, p.name(), p.has_min() ? "min/max range" : "pattern space"));
    }
    if (spec.overrides().count(p.name())) {
      throw ConfigError(fmt::format("{}: {} is both in overrides and in parameters", where, p.name()));
    }
  }
  return spec;
}

SweepSpec load_sweep_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(fmt::format("cannot read sweep file {}", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_sweep_yaml(ss.str(), path);
}

std::string find_base_config(const SweepSpec& spec, const std::string& sweep_path) {
  const fs::path base(spec.base());
  if (fs::exists(base)) return base.string();
  if (!sweep_path.empty() && base.is_relative()) {
    const fs::path beside = fs::path(sweep_path).parent_path() / base;
    if (fs::exists(beside)) return beside.string();
  }
  throw ConfigError(fmt::format("{}: base = \"{}\": no such config file (looked relative to the "
                                "working directory and to the sweep file's folder)",
                                sweep_path.empty() ? "sweep" : sweep_path, spec.base()));
}

std::string early_stop_to_json(const SweepSpec& spec) {
  if (!spec.has_early_stop()) return "";
  std::string out;
  google::protobuf::util::JsonPrintOptions opt;
  opt.always_print_primitive_fields = true;
  opt.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(spec.early_stop(), &out, opt);
  return out;
}

proto::EarlyStop early_stop_from_json(const std::string& json) {
  proto::EarlyStop es;
  if (json.empty()) return es;
  if (!google::protobuf::util::JsonStringToMessage(json, &es).ok()) {
    throw ConfigError("early_stop: not valid JSON for EarlyStop: " + json);
  }
  return es;
}

}  // namespace hylab::coordinator
