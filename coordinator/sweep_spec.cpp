#include "coordinator/sweep_spec.h"

#include <google/protobuf/util/json_util.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "common/check.h"
#include "common/config_keys.h"

namespace hylab::coordinator {
namespace {

namespace fs = std::filesystem;

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
  check_keys(body, {"values", "value", "generate", "min", "max", "distribution"}, where);
  int kinds = 0;
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
    check_keys(g, {"attention_fraction", "placement"}, gw);
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
        throw ConfigError(fmt::format("{}.placement: expected a non-empty list of even, early, late", gw));
      }
      for (size_t i = 0; i < pl.size(); ++i) {
        const auto s = scalar_as<std::string>(pl[i], fmt::format("{}.placement[{}]", gw, i), "even, early or late");
        if (s != "even" && s != "early" && s != "late") {
          throw ConfigError(fmt::format("{}.placement[{}] = \"{}\": expected even, early or late", gw, i, s));
        }
        gen->add_placement(s);
      }
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
      const auto d = scalar_as<std::string>(body["distribution"], where + ".distribution", "a name");
      if (d != "uniform" && d != "log_uniform" && d != "int_uniform") {
        throw ConfigError(fmt::format("{}.distribution = \"{}\": expected uniform, log_uniform or int_uniform", where, d));
      }
      if (d == "log_uniform" && p->min() <= 0) {
        throw ConfigError(fmt::format("{}: log_uniform needs min > 0 (got {})", where, p->min()));
      }
      p->set_distribution(d);
    }
  } else if (body["distribution"]) {
    throw ConfigError(fmt::format("{}.distribution: only meaningful with min and max", where));
  }
  if (kinds != 1) {
    throw ConfigError(fmt::format(
        "{}: give exactly one of values, value, generate or min/max (got {})", where, kinds));
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
                    "max_retries", "early_stop", "priority", "parameters", "overrides"},
             where);
  SweepSpec spec;
  auto str = [&](const char* key) {
    return scalar_as<std::string>(root[key], fmt::format("{}: {}", where, key), "a string");
  };
  auto integer = [&](const YAML::Node& n, const std::string& field) {
    return scalar_as<int64_t>(n, fmt::format("{}: {}", where, field), "an integer");
  };
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
    if (spec.method() != "grid" && spec.method() != "random") {
      throw ConfigError(fmt::format("{}: method = \"{}\": expected grid or random", where, spec.method()));
    }
  }
  if (root["count"]) spec.set_count(static_cast<int32_t>(integer(root["count"], "count")));
  if (root["seed"]) spec.set_seed(integer(root["seed"], "seed"));
  if (spec.method() == "random" && spec.count() < 1) {
    throw ConfigError(fmt::format("{}: count = {}: method random needs count >= 1", where, spec.count()));
  }
  if (root["max_retries"]) {
    spec.set_max_retries(static_cast<int32_t>(integer(root["max_retries"], "max_retries")));
    if (spec.max_retries() < 0 || spec.max_retries() > 100) {
      throw ConfigError(fmt::format("{}: max_retries = {}: expected 0..100", where, spec.max_retries()));
    }
  }
  if (root["priority"]) spec.set_priority(static_cast<int32_t>(integer(root["priority"], "priority")));
  if (root["metric"]) {
    const std::string mw = where + ": metric";
    const YAML::Node m = require_map(root["metric"], mw);
    check_keys(m, {"name", "goal"}, mw);
    auto* metric = spec.mutable_metric();
    if (m["name"]) metric->set_name(scalar_as<std::string>(m["name"], mw + ".name", "a metric name"));
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
    if (r["gpus_per_trial"]) res->set_gpus_per_trial(static_cast<int32_t>(integer(r["gpus_per_trial"], "resources.gpus_per_trial")));
    if (r["nodes_per_trial"]) res->set_nodes_per_trial(static_cast<int32_t>(integer(r["nodes_per_trial"], "resources.nodes_per_trial")));
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
    check_keys(e, {"type", "min_steps", "min_trials", "eta", "rungs"}, ew);
    auto* es = spec.mutable_early_stop();
    if (!e["type"]) throw ConfigError(fmt::format("{}.type: required (median or asha)", ew));
    es->set_type(scalar_as<std::string>(e["type"], ew + ".type", "median or asha"));
    if (es->type() != "median" && es->type() != "asha") {
      throw ConfigError(fmt::format("{}.type = \"{}\": expected median or asha", ew, es->type()));
    }
    if (e["min_steps"]) es->set_min_steps(integer(e["min_steps"], "early_stop.min_steps"));
    if (e["min_trials"]) es->set_min_trials(static_cast<int32_t>(integer(e["min_trials"], "early_stop.min_trials")));
    if (e["eta"]) es->set_eta(static_cast<int32_t>(integer(e["eta"], "early_stop.eta")));
    if (e["rungs"]) es->set_rungs(static_cast<int32_t>(integer(e["rungs"], "early_stop.rungs")));
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
  for (const auto& p : spec.parameters()) {
    if (spec.method() == "grid" && p.has_min()) {
      throw ConfigError(fmt::format("{}: parameters.{}: a min/max range needs method: random (grid needs values)",
                                    where, p.name()));
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
