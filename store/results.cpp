#include "store/results.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <optional>
#include <set>

#include "common/check.h"
#include "store/compare.h"
#include "store/schema.h"

namespace hylab::store {
namespace {

using nlohmann::json;

json real_or_null(const Stmt& st, int col) { return st.is_null(col) ? json() : json(st.real(col)); }
json int_or_null(const Stmt& st, int col) { return st.is_null(col) ? json() : json(st.int64(col)); }

std::string column_list(const Table& t) {
  std::string out;
  for (const auto& c : t.columns) out += (out.empty() ? "" : ", ") + c;
  return out;
}

// Orders numbers before strings before nulls; numbers numerically.
bool cell_less(const json& a, const json& b) {
  auto rank = [](const json& v) { return v.is_number() ? 0 : v.is_string() ? 1 : 2; };
  if (rank(a) != rank(b)) return rank(a) < rank(b);
  if (a.is_number()) return a.get<double>() < b.get<double>();
  if (a.is_string()) return a.get<std::string>() < b.get<std::string>();
  return false;
}

std::string cell_text(const json& v) {
  if (v.is_null()) return "";
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  if (v.is_number()) return fmt::format("{}", v.get<double>());
  return v.dump();
}

std::string human(double v) {
  const double a = std::fabs(v);
  if (a >= 1e9) return fmt::format("{:.2f}G", v / 1e9);
  if (a >= 1e6) return fmt::format("{:.2f}M", v / 1e6);
  if (a >= 1e4) return fmt::format("{:.1f}K", v / 1e3);
  if (a >= 100) return fmt::format("{:.0f}", v);
  if (a >= 10) return fmt::format("{:.2f}", v);
  return fmt::format("{:.4f}", v);
}

std::string table_text(const json& v) {
  if (v.is_number_integer()) {
    const int64_t i = v.get<int64_t>();
    return std::llabs(i) >= 10000 ? human(static_cast<double>(i)) : std::to_string(i);
  }
  if (v.is_number()) return human(v.get<double>());
  return cell_text(v);
}

std::string csv_quote(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

// A clear error for a file that is not a hylab database (instead of "no such table").
void require_schema(Db& db) {
  auto st = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'trials'");
  if (!st.step()) {
    HYLAB_FAIL("{} is not a hylab results database (no trials table); pass the --db that the "
               "coordinator or `hylab train` wrote", db.path());
  }
}

// "flops 1e+18", "tokens 5e+08", "steps 1500" or "ratio 20": the horizon a trial's resolved
// config asked for (common/run_config.h; configs stored before budgets existed have no
// target_* keys).
// A number of a config's JSON (proto JSON writes int64 fields as strings), else fallback.
double config_number(const json& cfg, const char* key, double fallback) {
  if (!cfg.contains(key)) return fallback;
  const json& v = cfg[key];
  if (v.is_number()) return v.get<double>();
  if (v.is_string()) {
    char* end = nullptr;
    const std::string& s = v.get_ref<const std::string&>();
    const double d = std::strtod(s.c_str(), &end);
    if (!s.empty() && end == s.c_str() + s.size()) return d;
  }
  return fallback;
}

std::string budget_of(const json& cfg) {
  auto num = [&](const char* key, double fallback) { return config_number(cfg, key, fallback); };
  if (num("num_iterations", -1) >= 0) return fmt::format("steps {}", static_cast<int64_t>(num("num_iterations", 0)));
  if (num("target_flops", -1) > 0) return fmt::format("flops {:.4g}", num("target_flops", 0));
  if (num("target_tokens", -1) > 0) return fmt::format("tokens {:.4g}", num("target_tokens", 0));
  return fmt::format("ratio {}", num("target_param_data_ratio", 20));
}

// Appends budget, train_flops (flops_per_token * steps * tokens per step), disk_bytes, run_dir
// (the newest attempt's absolute folder on its worker, else trials.run_dir) and the provenance
// columns (store/schema.h kProvenanceKeys, when asked) to a results table.
void append_artifact_columns(Db& db, Table* t, bool provenance) {
  auto st = db.prepare(R"SQL(
    SELECT t.config_json, t.gpus, s.flops_per_token, s.steps, s.disk_bytes,
           COALESCE(NULLIF((SELECT a.run_dir FROM trial_attempts a WHERE a.trial_id = t.trial_id
                            ORDER BY a.attempt DESC LIMIT 1), ''), t.run_dir),
           s.hylab_version, s.hylab_commit, s.torch_version, s.cuda_version, s.nccl_version,
           s.driver_version, s.gpu_name, s.host
    FROM trials t LEFT JOIN trial_summary s USING(trial_id) WHERE t.trial_id = ?)SQL");
  const int id = t->column("trial_id");
  for (const char* c : {"budget", "train_flops", "disk_bytes", "run_dir"}) t->columns.push_back(c);
  if (provenance) {
    for (const char* c : kProvenanceKeys) t->columns.push_back(c);
  }
  for (auto& row : t->rows) {
    st.bind(1, row[id].get<int64_t>());
    HYLAB_CHECK(st.step(), "results: trial {} vanished", row[id].get<int64_t>());
    const json cfg = json::parse(st.text(0), nullptr, false);
    const bool ok = cfg.is_object();
    row.push_back(ok ? json(budget_of(cfg)) : json());
    json flops;
    if (ok && !st.is_null(2) && !st.is_null(3)) {
      const double tbs = config_number(cfg, "total_batch_size", -1);
      const double per_step = tbs > 0 ? tbs
                                      : config_number(cfg, "device_batch_size", 0) *
                                            config_number(cfg, "max_seq_len", 0) *
                                            static_cast<double>(std::max<int64_t>(1, st.int64(1)));
      flops = st.real(2) * static_cast<double>(st.int64(3)) * per_step;
    }
    row.push_back(flops);
    row.push_back(int_or_null(st, 4));
    row.push_back(st.text(5));
    for (int c = 6; c < 14 && provenance; ++c) row.push_back(st.is_null(c) ? json() : json(st.text(c)));
    st.reset();
  }
}

}  // namespace

int Table::column(const std::string& name) const {
  for (size_t i = 0; i < columns.size(); ++i) {
    if (columns[i] == name) return static_cast<int>(i);
  }
  return -1;
}

Table results(Db& db, const ResultsQuery& q) {
  require_schema(db);
  auto st = db.prepare(R"SQL(
    SELECT t.trial_id, t.sweep_id, sw.name, t.state, t.block_pattern, t.n_layer, t.n_attn_layers,
           t.n_mamba_layers, t.mamba_d_state, t.mamba_expand, t.seed, t.params_json,
           s.params_total,
           COALESCE(s.final_val_bpb, (SELECT value FROM metrics m WHERE m.trial_id = t.trial_id
                                      AND m.name = 'val_bpb' ORDER BY m.step DESC LIMIT 1)),
           COALESCE(s.final_train_loss, (SELECT value FROM metrics m WHERE m.trial_id = t.trial_id
                                         AND m.name = 'train_loss' ORDER BY m.step DESC LIMIT 1)),
           COALESCE(s.tok_per_s, (SELECT AVG(value) FROM metrics m WHERE m.trial_id = t.trial_id
                                  AND m.name = 'tok_per_s' AND m.step > 0)),
           COALESCE(s.mfu, (SELECT AVG(value) FROM metrics m WHERE m.trial_id = t.trial_id
                            AND m.name = 'mfu' AND m.step > 0)),
           COALESCE(s.peak_mem_gib, (SELECT MAX(value) FROM metrics m WHERE m.trial_id = t.trial_id
                                     AND m.name IN ('mem_reserved_gib', 'mem_alloc_gib'))),
           s.decode_tok_per_s_b1, s.decode_tok_per_s_b32, s.cache_bytes,
           COALESCE(s.steps, NULLIF(t.last_step, -1)), t.attempt, t.reason,
           COALESCE(s.recall_acc, (SELECT value FROM metrics m WHERE m.trial_id = t.trial_id
                                   AND m.name = 'recall_acc' ORDER BY m.step DESC LIMIT 1)),
           COALESCE(s.val_bpb_2x, (SELECT value FROM metrics m WHERE m.trial_id = t.trial_id
                                   AND m.name = 'val_bpb_2x' ORDER BY m.step DESC LIMIT 1)),
           COALESCE(s.val_bpb_4x, (SELECT value FROM metrics m WHERE m.trial_id = t.trial_id
                                   AND m.name = 'val_bpb_4x' ORDER BY m.step DESC LIMIT 1))
    FROM trials t JOIN sweeps sw USING(sweep_id) LEFT JOIN trial_summary s USING(trial_id)
    WHERE (?1 = 0 OR t.sweep_id = ?1)
    ORDER BY t.trial_id)SQL");
  st.bind(1, q.sweep_id);
  Table t;
  t.columns = {"trial_id", "sweep_id", "sweep", "state", "block_pattern", "n_layer", "n_attn_layers",
               "n_mamba_layers", "mamba_d_state", "mamba_expand", "seed"};
  const std::vector<std::string> tail = {"params", "val_bpb", "val_bpb_2x", "val_bpb_4x",
                                         "recall_acc", "train_loss", "tok_per_s", "mfu",
                                         "peak_mem_gib", "decode_tok_per_s_b1",
                                         "decode_tok_per_s_b32", "cache_bytes", "steps",
                                         "attempt", "reason"};
  std::vector<std::vector<json>> head_rows, tail_rows;
  std::vector<json> swept;  // per row: the params object
  std::vector<std::string> extra;  // swept names that are not columns, in first-seen order
  while (st.step()) {
    head_rows.push_back({st.int64(0), st.int64(1), st.text(2), st.text(3), st.text(4), st.int64(5),
                         st.int64(6), st.int64(7), st.int64(8), st.int64(9), st.int64(10)});
    json params = json::parse(st.text(11), nullptr, false);
    if (!params.is_object()) params = json::object();
    for (auto it = params.begin(); it != params.end(); ++it) {
      const bool known = std::find(t.columns.begin(), t.columns.end(), it.key()) != t.columns.end() ||
                         std::find(tail.begin(), tail.end(), it.key()) != tail.end() ||
                         std::find(extra.begin(), extra.end(), it.key()) != extra.end();
      if (!known) extra.push_back(it.key());
    }
    swept.push_back(params);
    tail_rows.push_back({int_or_null(st, 12), real_or_null(st, 13), real_or_null(st, 25),
                         real_or_null(st, 26), real_or_null(st, 24), real_or_null(st, 14),
                         real_or_null(st, 15), real_or_null(st, 16), real_or_null(st, 17),
                         real_or_null(st, 18), real_or_null(st, 19), int_or_null(st, 20),
                         int_or_null(st, 21), st.int64(22), st.text(23)});
  }
  for (const auto& e : extra) t.columns.push_back(e);
  for (const auto& c : tail) t.columns.push_back(c);
  for (size_t r = 0; r < head_rows.size(); ++r) {
    std::vector<json> row = head_rows[r];
    for (const auto& e : extra) row.push_back(swept[r].contains(e) ? swept[r][e] : json());
    row.insert(row.end(), tail_rows[r].begin(), tail_rows[r].end());
    t.rows.push_back(std::move(row));
  }
  append_artifact_columns(db, &t, q.provenance);
  if (!q.sort.empty()) {
    const bool desc = q.sort[0] == '-';
    const std::string col = desc ? q.sort.substr(1) : q.sort;
    const int c = t.column(col);
    if (c < 0) HYLAB_FAIL("--sort {}: no such column; columns: {}", col, column_list(t));
    std::stable_sort(t.rows.begin(), t.rows.end(), [&](const auto& a, const auto& b) {
      if (desc && !a[c].is_null() && !b[c].is_null()) return cell_less(b[c], a[c]);
      return cell_less(a[c], b[c]);
    });
  }
  if (!q.group_by.empty()) {
    GroupQuery g;
    g.group_by = split_list(q.group_by);
    g.include_stopped = q.include_stopped;
    return groups_table(group_trials(t, g), g, /*display=*/false);
  }
  return t;
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find(',', start);
    if (end == std::string::npos) end = text.size();
    std::string part = text.substr(start, end - start);
    part.erase(0, part.find_first_not_of(" \t"));
    part.erase(part.find_last_not_of(" \t") + 1);
    if (!part.empty()) out.push_back(part);
    start = end + 1;
  }
  return out;
}

Table curves(Db& db, const std::vector<int64_t>& trial_ids) {
  require_schema(db);
  std::set<std::string> names_set;
  std::map<std::pair<int64_t, int64_t>, std::map<std::string, double>> cells;  // (trial, step)
  for (int64_t id : trial_ids) {
    auto exists = db.prepare("SELECT 1 FROM trials WHERE trial_id = ?");
    exists.bind(1, id);
    if (!exists.step()) HYLAB_FAIL("--curves: no trial with trial_id {} in {}", id, db.path());
    auto st = db.prepare("SELECT step, name, value FROM metrics WHERE trial_id = ? ORDER BY step");
    st.bind(1, id);
    while (st.step()) {
      names_set.insert(st.text(1));
      cells[{id, st.int64(0)}][st.text(1)] = st.real(2);
    }
  }
  std::vector<std::string> names;
  for (const char* first : {"train_loss", "val_bpb"}) {
    if (names_set.erase(first)) names.push_back(first);
  }
  names.insert(names.end(), names_set.begin(), names_set.end());
  Table t;
  t.columns = {"trial_id", "step"};
  t.columns.insert(t.columns.end(), names.begin(), names.end());
  // Rows in the order the trials were asked for, steps increasing.
  for (int64_t id : trial_ids) {
    for (auto it = cells.lower_bound({id, INT64_MIN}); it != cells.end() && it->first.first == id; ++it) {
      std::vector<json> row = {id, it->first.second};
      for (const auto& n : names) {
        auto v = it->second.find(n);
        row.push_back(v == it->second.end() ? json() : json(v->second));
      }
      t.rows.push_back(std::move(row));
    }
  }
  return t;
}

Format parse_format(const std::string& s) {
  if (s == "table") return Format::kTable;
  if (s == "csv") return Format::kCsv;
  if (s == "json") return Format::kJson;
  HYLAB_FAIL("--format {}: expected table, csv or json", s);
}

std::string render(const Table& t, Format f) {
  std::string out;
  if (f == Format::kJson) {
    json arr = json::array();
    for (const auto& row : t.rows) {
      json obj = json::object();
      for (size_t c = 0; c < t.columns.size(); ++c) obj[t.columns[c]] = row[c];
      arr.push_back(obj);
    }
    // Text stored before the wire sanitised it may hold invalid UTF-8: U+FFFD, not an error.
    return arr.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
  }
  if (f == Format::kCsv) {
    for (size_t c = 0; c < t.columns.size(); ++c) out += (c ? "," : "") + csv_quote(t.columns[c]);
    out += "\n";
    for (const auto& row : t.rows) {
      for (size_t c = 0; c < row.size(); ++c) out += (c ? "," : "") + csv_quote(cell_text(row[c]));
      out += "\n";
    }
    return out;
  }
  // table: skip columns that are empty in every row; right-align numbers.
  std::vector<size_t> cols;
  for (size_t c = 0; c < t.columns.size(); ++c) {
    bool any = false;
    for (const auto& row : t.rows) any = any || !(row[c].is_null() || row[c] == "");
    if (any || t.rows.empty()) cols.push_back(c);
  }
  std::vector<size_t> width;
  std::vector<std::vector<std::string>> text(t.rows.size());
  for (size_t k = 0; k < cols.size(); ++k) {
    width.push_back(t.columns[cols[k]].size());
    for (size_t r = 0; r < t.rows.size(); ++r) {
      std::string s = table_text(t.rows[r][cols[k]]);
      if (s.size() > 48) s = s.substr(0, 45) + "...";
      width[k] = std::max(width[k], s.size());
      text[r].push_back(std::move(s));
    }
  }
  for (size_t k = 0; k < cols.size(); ++k) {
    out += fmt::format("{:<{}}", t.columns[cols[k]], width[k]) + (k + 1 < cols.size() ? "  " : "");
  }
  out += "\n";
  for (size_t r = 0; r < t.rows.size(); ++r) {
    for (size_t k = 0; k < cols.size(); ++k) {
      const bool num = t.rows[r][cols[k]].is_number();
      out += num ? fmt::format("{:>{}}", text[r][k], width[k]) : fmt::format("{:<{}}", text[r][k], width[k]);
      if (k + 1 < cols.size()) out += "  ";
    }
    out += "\n";
  }
  if (t.rows.empty()) out += "(no rows)\n";
  return out;
}

}  // namespace hylab::store
