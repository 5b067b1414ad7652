#include "dashboard/api.h"

#include <sqlite3.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "common/run_config.h"
#include "common/states.h"
#include "store/curve_compare.h"
#include "store/schema.h"
#include "store/results.h"

namespace hylab::dashboard {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// One cell as JSON; columns named *_json holding JSON text come back parsed.
json cell(const store::Stmt& st, int col) {
  switch (st.column_type(col)) {
    case SQLITE_NULL:
      return nullptr;
    case SQLITE_INTEGER:
      return st.int64(col);
    case SQLITE_FLOAT:
      return st.real(col);
    default:
      break;
  }
  const std::string text = st.text(col);
  const std::string name = st.column_name(col);
  if (name.size() > 5 && name.compare(name.size() - 5, 5, "_json") == 0 && !text.empty()) {
    json parsed = json::parse(text, nullptr, false);
    if (!parsed.is_discarded()) return parsed;
  }
  return text;
}

// Every column of every row, as objects (generic: columns other branches add show up too).
json rows(store::Db& db, const std::string& sql, int64_t id) {
  auto st = db.prepare(sql);
  st.bind(1, id);
  json out = json::array();
  while (st.step()) {
    json row = json::object();
    for (int c = 0; c < st.column_count(); ++c) row[st.column_name(c)] = cell(st, c);
    out.push_back(std::move(row));
  }
  return out;
}

// Proto JSON writes 64-bit integers as strings; accept both.
double number(const json& obj, const char* key, double fallback) {
  auto it = obj.find(key);
  if (it == obj.end()) return fallback;
  if (it->is_number()) return it->get<double>();
  if (it->is_string()) {
    try {
      return std::stod(it->get<std::string>());
    } catch (const std::exception&) {
    }
  }
  return fallback;
}

// A running trial's horizon from its resolved config (-1: the trainer chooses it).
double num_iterations_of(const std::string& config_json) {
  const json c = json::parse(config_json, nullptr, false);
  return c.is_object() ? number(c, "num_iterations", -1) : -1;
}

// Evenly strided points, first and last kept.
json downsample(const std::vector<std::pair<int64_t, double>>& pts, int max_points) {
  json out = json::array();
  const size_t n = pts.size();
  const size_t keep = max_points > 1 ? static_cast<size_t>(max_points) : 2;
  const double stride = n > keep ? static_cast<double>(n - 1) / static_cast<double>(keep - 1) : 1.0;
  size_t last = n;  // index of the previous point written
  for (size_t k = 0; n > 0; ++k) {
    const size_t i =
        std::min(n - 1, static_cast<size_t>(std::llround(static_cast<double>(k) * stride)));
    if (i != last) out.push_back({pts[i].first, pts[i].second});
    last = i;
    if (i == n - 1) break;
  }
  return out;
}

std::vector<std::pair<int64_t, double>> series(store::Db& db, int64_t trial_id,
                                               const std::string& name) {
  auto st =
      db.prepare("SELECT step, value FROM metrics WHERE trial_id = ?1 AND name = ?2 ORDER BY step");
  st.bind(1, trial_id).bind(2, name);
  std::vector<std::pair<int64_t, double>> out;
  while (st.step()) out.emplace_back(st.int64(0), st.real(1));
  return out;
}

// Sweep rows with counts, progress and ETA; sweep_id 0 = all.
json sweep_rows(store::Db& db, int64_t sweep_id, double now) {
  auto st = db.prepare(
      "SELECT sweep_id, name, state, metric_name, metric_goal, priority, created_at, finished_at "
      "FROM sweeps WHERE ?1 = 0 OR sweep_id = ?1 ORDER BY sweep_id");
  st.bind(1, sweep_id);
  json out = json::array();
  std::map<int64_t, size_t> index;
  while (st.step()) {
    index[st.int64(0)] = out.size();
    out.push_back({{"sweep_id", st.int64(0)},
                   {"name", st.text(1)},
                   {"state", st.text(2)},
                   {"metric", {{"name", st.text(3)}, {"goal", st.text(4)}}},
                   {"priority", st.int64(5)},
                   {"created_at", st.real(6)},
                   {"finished_at", cell(st, 7)},
                   {"trials", 0},
                   {to_string(proto::TRIAL_STATE_PENDING), 0},
                   {to_string(proto::TRIAL_STATE_RUNNING), 0},
                   {to_string(proto::TRIAL_STATE_SUCCEEDED), 0},
                   {to_string(proto::TRIAL_STATE_FAILED), 0},
                   {to_string(proto::TRIAL_STATE_STOPPED), 0},
                   {"done", 0.0}});
  }
  auto tr = db.prepare(
      "SELECT sweep_id, state, last_step, config_json FROM trials "
      "WHERE ?1 = 0 OR sweep_id = ?1");
  tr.bind(1, sweep_id);
  while (tr.step()) {
    auto it = index.find(tr.int64(0));
    if (it == index.end()) continue;
    json& s = out[it->second];
    const proto::TrialState state = parse_trial_state(tr.text(1));
    s["trials"] = s["trials"].get<int64_t>() + 1;
    // The count keys are the words of pending, running, succeeded, stopped (early-stopped or
    // cancelled) and failed (failed, diverged, oom).
    proto::TrialState bucket = proto::TRIAL_STATE_FAILED;
    switch (state) {
      case proto::TRIAL_STATE_PENDING:
      case proto::TRIAL_STATE_RUNNING:
      case proto::TRIAL_STATE_SUCCEEDED: bucket = state; break;
      case proto::TRIAL_STATE_STOPPED:
      case proto::TRIAL_STATE_CANCELLED: bucket = proto::TRIAL_STATE_STOPPED; break;
      default: break;
    }
    const std::string key = to_string(bucket);
    s[key] = s[key].get<int64_t>() + 1;
    double done = 0;
    if (is_final(state)) {
      done = 1;
    } else if (state == proto::TRIAL_STATE_RUNNING) {
      const double horizon = num_iterations_of(tr.text(3));
      if (horizon > 0) done = std::clamp(static_cast<double>(tr.int64(2) + 1) / horizon, 0.0, 1.0);
    }
    s["done"] = s["done"].get<double>() + done;
  }
  for (json& s : out) {
    const double total = s["trials"].get<double>();
    const double progress = total > 0 ? s["done"].get<double>() / total : 0.0;
    s.erase("done");
    s["progress"] = progress;
    const bool open = parse_sweep_state(s["state"].get<std::string>()) == proto::SWEEP_STATE_RUNNING;
    const double end = open || s["finished_at"].is_null() ? now : s["finished_at"].get<double>();
    const double elapsed = std::max(0.0, end - s["created_at"].get<double>());
    s["elapsed_s"] = elapsed;
    s["eta_s"] =
        open && progress > 0 && progress < 1 ? json(elapsed * (1 - progress) / progress) : json();
  }
  return out;
}

}  // namespace

std::string expand_pattern(const std::string& compact) {
  std::string out;
  if (compact.empty()) return out;
  for (BlockType t : parse_block_pattern(compact)) out += block_type_letter(t);
  return out;
}

json sweeps(store::Db& db, double now) { return sweep_rows(db, 0, now); }

json sweep(store::Db& db, int64_t sweep_id, double now) {
  json rows_ = sweep_rows(db, sweep_id, now);
  if (rows_.empty()) throw NotFound("no sweep " + std::to_string(sweep_id));
  json out = rows_[0];
  auto st = db.prepare("SELECT spec_yaml, spec_path FROM sweeps WHERE sweep_id = ?1");
  st.bind(1, sweep_id);
  if (st.step()) {
    out["spec_yaml"] = st.text(0);
    out["spec_path"] = st.text(1);
  }
  store::ResultsQuery q;
  q.sweep_id = sweep_id;
  const store::Table t = store::results(db, q);
  json trials = json::array();
  for (const auto& r : t.rows) {
    json row = json::object();
    for (size_t c = 0; c < t.columns.size(); ++c) row[t.columns[c]] = r[c];
    trials.push_back(std::move(row));
  }
  out["columns"] = t.columns;
  out["trials"] = std::move(trials);
  return out;
}

// Tokens per optimizer step and the points, as `hylab results --curves --x tokens` reads them
// (store/curve_compare.h), so both show the same x; null/empty while the trial has no point.
static std::pair<json, std::vector<std::pair<int64_t, double>>> curve_of(
    store::Db& db, int64_t trial_id, const std::string& metric) {
  if (series(db, trial_id, metric).empty()) return {nullptr, {}};
  store::Curve c = store::load_curves(db, {trial_id}, metric).at(0);
  return {c.tokens_per_step, std::move(c.points)};
}

json sweep_curves(store::Db& db, int64_t sweep_id, const std::string& metric, int max_points) {
  if (sweep_rows(db, sweep_id, 0).empty()) throw NotFound("no sweep " + std::to_string(sweep_id));
  auto st = db.prepare(
      "SELECT t.trial_id, t.block_pattern, t.state, s.flops_per_token "
      "FROM trials t LEFT JOIN trial_summary s USING(trial_id) WHERE t.sweep_id = ?1 "
      "ORDER BY t.trial_index, t.trial_id");
  st.bind(1, sweep_id);
  json out = json::array();
  while (st.step()) {
    const int64_t id = st.int64(0);
    auto [tokens_per_step, points] = curve_of(db, id, metric);
    out.push_back({{"trial_id", id},
                   {"block_pattern", st.text(1)},
                   {"state", st.text(2)},
                   {"tokens_per_step", tokens_per_step},
                   {"flops_per_token", cell(st, 3)},
                   {"points", downsample(points, max_points)}});
  }
  return {{"metric", metric}, {"trials", out}};
}

json layer_map(store::Db& db, int64_t sweep_id) {
  if (sweep_rows(db, sweep_id, 0).empty()) throw NotFound("no sweep " + std::to_string(sweep_id));
  auto st = db.prepare(
      "SELECT t.trial_id, t.state, t.block_pattern, t.config_json, "
      "COALESCE(s.final_val_bpb, (SELECT value FROM metrics m WHERE m.trial_id = t.trial_id AND "
      "m.name = 'val_bpb' ORDER BY step DESC LIMIT 1)) "
      "FROM trials t LEFT JOIN trial_summary s USING(trial_id) WHERE t.sweep_id = ?1");
  st.bind(1, sweep_id);
  std::vector<json> out;
  while (st.step()) {
    // The resolved config lists one letter per layer; the compact column is the fallback.
    std::string layers;
    const json c = json::parse(st.text(3), nullptr, false);
    if (c.is_object() && c.contains("block_pattern") && c["block_pattern"].is_array()) {
      for (const auto& l : c["block_pattern"]) layers += expand_pattern(l.get<std::string>());
    }
    if (layers.empty()) layers = expand_pattern(st.text(2));
    out.push_back({{"trial_id", st.int64(0)},
                   {"state", st.text(1)},
                   {"block_pattern", st.text(2)},
                   {"layers", layers},
                   {"val_bpb", cell(st, 4)}});
  }
  std::stable_sort(out.begin(), out.end(), [](const json& a, const json& b) {
    if (a["val_bpb"].is_null() != b["val_bpb"].is_null()) return b["val_bpb"].is_null();
    if (!a["val_bpb"].is_null() && a["val_bpb"] != b["val_bpb"]) {
      return a["val_bpb"].get<double>() < b["val_bpb"].get<double>();
    }
    return a["trial_id"].get<int64_t>() < b["trial_id"].get<int64_t>();
  });
  return out;
}

json trial(store::Db& db, int64_t trial_id, const std::string& work_dir) {
  json found = rows(db, "SELECT * FROM trials WHERE trial_id = ?1", trial_id);
  if (found.empty()) throw NotFound("no trial " + std::to_string(trial_id));
  json out = {{"trial", found[0]}};
  json& t = out["trial"];
  // *_json columns come back parsed: give the two big ones their plain names.
  out["params"] = t.value("params_json", json::object());
  out["config"] = t.value("config_json", json::object());
  t.erase("params_json");
  t.erase("config_json");
  const json sweep_row = rows(db, "SELECT sweep_id, name, state FROM sweeps WHERE sweep_id = ?1",
                              t["sweep_id"].get<int64_t>());
  out["sweep"] = sweep_row.empty() ? json() : sweep_row[0];
  const json summary = rows(db, "SELECT * FROM trial_summary WHERE trial_id = ?1", trial_id);
  out["summary"] = summary.empty() ? json() : summary[0];
  // Provenance: the summary's provenance columns (store/schema.h kProvenanceKeys) that the
  // trainer filled in; null when none is (an older database, or a trial still running).
  out["provenance"] = nullptr;
  if (out["summary"].is_object()) {
    json p = json::object();
    for (const char* key : store::kProvenanceKeys) {
      const json& v = out["summary"].value(key, json());
      if (v.is_string() && !v.get<std::string>().empty()) p[key] = v;
    }
    if (!p.empty()) out["provenance"] = p;
  }
  out["attempts"] =
      rows(db, "SELECT * FROM trial_attempts WHERE trial_id = ?1 ORDER BY attempt", trial_id);
  out["events"] = rows(
      db, "SELECT * FROM events WHERE trial_id = ?1 ORDER BY event_id DESC LIMIT 50", trial_id);

  // The run directory: absolute for local runs, relative to the workers' work_dir for sweeps.
  const std::string run_dir = t.value("run_dir", "");
  fs::path dir = run_dir;
  if (!run_dir.empty() && dir.is_relative() && !work_dir.empty()) dir = fs::path(work_dir) / dir;
  std::error_code ec;
  const bool exists = !run_dir.empty() && fs::is_directory(dir, ec);
  out["run_dir"] = {{"path", run_dir},
                    {"resolved", exists ? fs::absolute(dir, ec).string() : ""},
                    {"exists", exists}};

  // Samples: the trainer logs "sample: TEXT" lines (train.log; else the attempts' log tails).
  json samples = json::array();
  auto scan = [&samples](std::istream& in) {
    std::string line;
    while (std::getline(in, line)) {
      const auto p = line.find("sample: ");
      if (p != std::string::npos) samples.push_back(line.substr(p + 8));
    }
  };
  if (exists) {
    std::ifstream log(dir / "train.log");
    scan(log);
  }
  if (samples.empty()) {
    for (const auto& a : out["attempts"]) {
      std::istringstream in(a.value("log_tail", ""));
      scan(in);
    }
  }
  out["samples"] = samples;
  return out;
}

json trial_curves(store::Db& db, int64_t trial_id, int max_points) {
  auto st = db.prepare(
      "SELECT s.flops_per_token FROM trials t LEFT JOIN trial_summary s USING(trial_id) WHERE "
      "t.trial_id = ?1");
  st.bind(1, trial_id);
  if (!st.step()) throw NotFound("no trial " + std::to_string(trial_id));
  json out = {{"trial_id", trial_id},
              {"tokens_per_step", curve_of(db, trial_id, "train_loss").first},
              {"flops_per_token", cell(st, 0)},
              {"metrics", json::object()}};
  auto names = db.prepare("SELECT DISTINCT name FROM metrics WHERE trial_id = ?1 ORDER BY name");
  names.bind(1, trial_id);
  while (names.step()) {
    const std::string name = names.text(0);
    out["metrics"][name] = downsample(series(db, trial_id, name), max_points);
  }
  return out;
}

}  // namespace hylab::dashboard
