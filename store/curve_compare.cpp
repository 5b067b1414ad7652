#include "store/curve_compare.h"

#include <algorithm>
#include <cmath>
#include <set>

#include <nlohmann/json.hpp>

#include "common/check.h"

namespace hylab::store {

using nlohmann::json;

Table align_at_tokens(const std::vector<Curve>& curves, const std::string& metric) {
  std::set<int64_t> grid;
  for (const Curve& c : curves) {
    for (const auto& [step, v] : c.points) grid.insert(step * c.tokens_per_step);
  }
  Table t;
  t.columns = {"tokens"};
  for (const Curve& c : curves) t.columns.push_back(fmt::format("{} #{}", metric, c.trial_id));
  std::vector<size_t> next(curves.size(), 0);  // per curve: first point beyond the last x
  for (const int64_t x : grid) {
    std::vector<json> row = {x};
    for (size_t i = 0; i < curves.size(); ++i) {
      const Curve& c = curves[i];
      while (next[i] < c.points.size() && c.points[next[i]].first * c.tokens_per_step <= x) ++next[i];
      const bool before_first = next[i] == 0;
      const bool after_last = c.points.empty() || c.points.back().first * c.tokens_per_step < x;
      row.push_back(before_first || after_last ? json() : json(c.points[next[i] - 1].second));
    }
    t.rows.push_back(std::move(row));
  }
  return t;
}

std::vector<Curve> load_curves(Db& db, const std::vector<int64_t>& trial_ids, const std::string& metric) {
  std::vector<Curve> out;
  bool any = false;
  for (const int64_t id : trial_ids) {
    auto cfg = db.prepare("SELECT config_json FROM trials WHERE trial_id = ?");
    cfg.bind(1, id);
    if (!cfg.step()) HYLAB_FAIL("--curves: no trial with trial_id {} in {}", id, db.path());
    Curve c;
    c.trial_id = id;
    // tokens per step from the logged rate: tok_per_s = tokens per step / step_time_s.
    auto rate = db.prepare(R"SQL(
      SELECT a.value * b.value FROM metrics a JOIN metrics b USING(trial_id, step)
      WHERE a.trial_id = ? AND a.name = 'tok_per_s' AND b.name = 'step_time_s' ORDER BY 1)SQL");
    rate.bind(1, id);
    std::vector<double> products;
    while (rate.step()) products.push_back(rate.real(0));
    if (!products.empty()) {
      c.tokens_per_step = std::llround(products[products.size() / 2]);
    } else {
      const json j = json::parse(cfg.text(0), nullptr, false);
      auto field = [&j](const char* name, int64_t fallback) -> int64_t {  // proto JSON: int64 as text
        if (!j.is_object() || !j.contains(name)) return fallback;
        if (j[name].is_number()) return j[name].get<int64_t>();
        if (j[name].is_string()) return std::stoll(j[name].get<std::string>());
        return fallback;
      };
      const int64_t total = field("total_batch_size", -1);
      c.tokens_per_step = total > 0 ? total : field("device_batch_size", 0) * field("max_seq_len", 0);
    }
    auto st = db.prepare("SELECT step, value FROM metrics WHERE trial_id = ? AND name = ? ORDER BY step");
    st.bind(1, id).bind(2, metric);
    while (st.step()) c.points.emplace_back(st.int64(0), st.real(1));
    any = any || !c.points.empty();
    out.push_back(std::move(c));
  }
  if (!trial_ids.empty() && !any) {
    HYLAB_FAIL("--metric {}: none of the trials has this metric (e.g. val_bpb, train_loss)", metric);
  }
  return out;
}

}  // namespace hylab::store
