#include "store/compare.h"

#include <algorithm>
#include <cmath>

#include "common/check.h"
#include "common/states.h"

namespace hylab::store {
namespace {

using nlohmann::json;

// Regularized incomplete beta I_x(a, b) by its continued fraction (modified Lentz), the
// textbook route: the fraction converges fast for x < (a + 1) / (a + b + 2); above that, use
// the symmetry I_x(a, b) = 1 - I_{1-x}(b, a).
double beta_fraction(double a, double b, double x) {
  constexpr double kTiny = 1e-300, kEps = 1e-15;
  auto guard = [](double v) { return std::fabs(v) < kTiny ? kTiny : v; };
  double c = 1.0;
  double d = 1.0 / guard(1.0 - (a + b) * x / (a + 1.0));
  double h = d;
  for (int m = 1; m <= 500; ++m) {
    const double m2 = 2.0 * m;
    double num = m * (b - m) * x / ((a - 1.0 + m2) * (a + m2));  // even step
    d = 1.0 / guard(1.0 + num * d);
    c = guard(1.0 + num / c);
    h *= d * c;
    num = -(a + m) * (a + b + m) * x / ((a + m2) * (a + 1.0 + m2));  // odd step
    d = 1.0 / guard(1.0 + num * d);
    c = guard(1.0 + num / c);
    const double delta = d * c;
    h *= delta;
    if (std::fabs(delta - 1.0) < kEps) break;
  }
  return h;
}

double incomplete_beta(double a, double b, double x) {
  if (x <= 0) return 0.0;
  if (x >= 1) return 1.0;
  const double front =
      std::exp(std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) + a * std::log(x) + b * std::log1p(-x));
  if (x < (a + 1.0) / (a + b + 2.0)) return front * beta_fraction(a, b, x) / a;
  return 1.0 - front * beta_fraction(b, a, 1.0 - x) / b;
}

bool better(double a, double b, Goal g) { return g == Goal::kMinimize ? a < b : a > b; }

double number_or_nan(const json& v) { return v.is_number() ? v.get<double>() : kNaN; }
json nan_to_null(double v) { return std::isnan(v) ? json() : json(v); }

std::string column_list(const Table& t) {
  std::string out;
  for (const auto& c : t.columns) out += (out.empty() ? "" : ", ") + c;
  return out;
}

// Columns averaged per group besides the metric, when the trial table has them.
const std::vector<std::string> kMeanColumns = {"val_bpb", "val_bpb_2x", "val_bpb_4x", "recall_acc",
                                               "train_loss", "tok_per_s", "mfu", "params",
                                               "peak_mem_gib", "decode_tok_per_s_b1",
                                               "decode_tok_per_s_b32", "cache_bytes", "steps"};

// The text table's columns besides the metric (the others are in CSV/JSON and per trial).
const std::vector<std::string> kDisplayMeans = {"val_bpb", "val_bpb_2x", "recall_acc", "tok_per_s",
                                                "params", "decode_tok_per_s_b1",
                                                "cache_bytes", "steps"};

// Means of counts (params, steps) stay integers when they are whole.
json whole_or_real(double v) {
  if (std::isnan(v)) return json();
  if (std::floor(v) == v && std::fabs(v) < 9e15) return json(static_cast<int64_t>(v));
  return json(v);
}

std::string fixed4(double v) {
  if (std::isnan(v)) return "";
  return std::fabs(v) >= 1e4 ? fmt::format("{:.4g}", v) : fmt::format("{:.4f}", v);
}

std::string p_text(double p) {
  if (std::isnan(p)) return "";
  return p < 0.001 ? "<0.001" : fmt::format("{:.3f}", p);
}

}  // namespace

Summary summarize(const std::vector<double>& values) {
  Summary s;
  s.n = static_cast<int64_t>(values.size());
  if (s.n == 0) return s;
  double sum = 0;
  for (double v : values) sum += v;
  s.mean = sum / static_cast<double>(s.n);
  if (s.n < 2) return s;
  double ss = 0;
  for (double v : values) ss += (v - s.mean) * (v - s.mean);
  s.std = std::sqrt(ss / static_cast<double>(s.n - 1));
  return s;
}

double student_t_cdf(double t, double df) {
  HYLAB_CHECK(df > 0, "student_t_cdf: df = {}: expected > 0", df);
  if (std::isnan(t)) return kNaN;
  if (std::isinf(t)) return t > 0 ? 1.0 : 0.0;
  const double tail = 0.5 * incomplete_beta(0.5 * df, 0.5, df / (df + t * t));  // P(T > |t|)
  return t >= 0 ? 1.0 - tail : tail;
}

WelchTest welch_t_test(const Summary& a, const Summary& b) {
  WelchTest w;
  if (a.n < 2 || b.n < 2) return w;
  const double va = a.std * a.std / static_cast<double>(a.n);
  const double vb = b.std * b.std / static_cast<double>(b.n);
  const double se2 = va + vb;
  if (se2 == 0) {  // no spread at all: the means either agree or they do not
    w.t = a.mean == b.mean ? 0.0 : std::copysign(INFINITY, a.mean - b.mean);
    w.df = static_cast<double>(a.n + b.n - 2);
    w.p = a.mean == b.mean ? 1.0 : 0.0;
    return w;
  }
  w.t = (a.mean - b.mean) / std::sqrt(se2);
  w.df = se2 * se2 / (va * va / static_cast<double>(a.n - 1) + vb * vb / static_cast<double>(b.n - 1));
  w.p = std::min(1.0, 2.0 * (1.0 - student_t_cdf(std::fabs(w.t), w.df)));
  return w;
}

Goal parse_goal(const std::string& s, const std::string& what) {
  if (s == "min" || s == "minimize") return Goal::kMinimize;
  if (s == "max" || s == "maximize") return Goal::kMaximize;
  HYLAB_FAIL("{}: goal \"{}\": expected min (minimize) or max (maximize)", what, s);
}

Goal default_goal(const std::string& metric) {
  if (metric == "tok_per_s" || metric == "mfu" || metric == "recall_acc" ||
      metric.rfind("decode_tok_per_s", 0) == 0) {
    return Goal::kMaximize;
  }
  return Goal::kMinimize;
}

std::vector<Ranked> rank_groups(const std::vector<Summary>& groups, Goal goal, double alpha) {
  std::vector<size_t> order;
  for (size_t i = 0; i < groups.size(); ++i) {
    if (groups[i].n > 0) order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return better(groups[a].mean, groups[b].mean, goal); });
  std::vector<Ranked> out(groups.size());
  for (auto& r : out) r.mark = "no data";
  for (size_t k = 0; k < order.size(); ++k) {
    const size_t i = order[k];
    Ranked& r = out[i];
    r.rank = static_cast<int>(k) + 1;
    if (k == 0) {
      r.mark = "best";
      continue;
    }
    const Summary& best = groups[order[0]];
    if (groups[i].n < 2 || best.n < 2) {
      r.mark = "no error bars";
      continue;
    }
    r.p_vs_best = welch_t_test(groups[i], best).p;
    r.mark = r.p_vs_best >= alpha ? "~ best" : "worse";
  }
  // A best group without error bars cannot be called best with any confidence.
  if (!order.empty() && groups[order[0]].n < 2) out[order[0]].mark = "best, no error bars";
  return out;
}

std::vector<bool> pareto_front(const std::vector<std::vector<double>>& points, const std::vector<Goal>& goals) {
  auto complete = [](const std::vector<double>& p) {
    return std::none_of(p.begin(), p.end(), [](double v) { return std::isnan(v); });
  };
  std::vector<bool> on(points.size(), false);
  for (size_t i = 0; i < points.size(); ++i) {
    HYLAB_CHECK(points[i].size() == goals.size(), "pareto_front: point {} has {} coordinates, expected {}", i,
                points[i].size(), goals.size());
    if (!complete(points[i])) continue;
    bool dominated = false;
    for (size_t j = 0; j < points.size() && !dominated; ++j) {
      if (j == i || !complete(points[j])) continue;
      bool all_as_good = true, one_better = false;
      for (size_t k = 0; k < goals.size(); ++k) {
        if (better(points[i][k], points[j][k], goals[k])) all_as_good = false;
        if (better(points[j][k], points[i][k], goals[k])) one_better = true;
      }
      dominated = all_as_good && one_better;
    }
    on[i] = !dominated;
  }
  return on;
}

std::vector<Group> group_trials(const Table& trials, const GroupQuery& q) {
  std::vector<int> key_cols;
  for (const auto& g : q.group_by) {
    const int c = trials.column(g);
    if (c < 0) HYLAB_FAIL("--group_by {}: no such column; columns: {}", g, column_list(trials));
    key_cols.push_back(c);
  }
  const int metric = trials.column(q.metric);
  if (metric < 0) HYLAB_FAIL("--metric {}: no such column; columns: {}", q.metric, column_list(trials));
  const int state_col = trials.column("state"), id_col = trials.column("trial_id");
  std::vector<std::pair<std::string, int>> mean_cols;
  for (const auto& name : kMeanColumns) {
    if (name != q.metric && trials.column(name) >= 0) mean_cols.emplace_back(name, trials.column(name));
  }

  struct Acc {
    Group g;
    std::map<std::string, int> excluded_by_state, included_by_state;
    std::map<std::string, std::vector<double>> others;
  };
  std::vector<Acc> accs;
  for (const auto& row : trials.rows) {
    std::vector<json> key;
    for (int c : key_cols) key.push_back(row[c]);
    auto it = std::find_if(accs.begin(), accs.end(), [&](const Acc& a) { return a.g.key == key; });
    if (it == accs.end()) {
      accs.push_back(Acc{});
      accs.back().g.key = key;
      it = accs.end() - 1;
    }
    Acc& a = *it;
    if (id_col >= 0 && row[id_col].is_number_integer()) a.g.trial_ids.push_back(row[id_col].get<int64_t>());
    ++a.g.trials;
    // A table without a state column holds results only.
    const proto::TrialState state = state_col >= 0 && row[state_col].is_string()
                                        ? parse_trial_state(row[state_col].get<std::string>())
                                        : proto::TRIAL_STATE_SUCCEEDED;
    const bool succeeded = state == proto::TRIAL_STATE_SUCCEEDED;
    const bool has_value = row[metric].is_number() && std::isfinite(row[metric].get<double>());
    const bool counts = has_value && (succeeded || (q.include_stopped && is_final(state)));
    if (!counts) {
      ++a.g.excluded;
      if (!is_final(state)) ++a.g.unfinished;
      ++a.excluded_by_state[has_value || !succeeded ? to_string(state)
                                                    : to_string(state) + " without " + q.metric];
      continue;
    }
    if (!succeeded) ++a.included_by_state[to_string(state)];
    a.g.values.push_back(row[metric].get<double>());
    for (const auto& [name, c] : mean_cols) {
      if (row[c].is_number()) a.others[name].push_back(row[c].get<double>());
    }
  }

  std::vector<Summary> summaries;
  for (Acc& a : accs) {
    a.g.metric = summarize(a.g.values);
    for (const auto& [name, c] : mean_cols) a.g.means[name] = summarize(a.others[name]).mean;
    auto describe = [](const char* prefix, const std::map<std::string, int>& by_state) {
      std::string s;
      for (const auto& [state, n] : by_state) s += fmt::format("{}{} {}", s.empty() ? prefix : ", ", n, state);
      return s;
    };
    const std::string incl = describe("incl. ", a.included_by_state);
    const std::string excl = describe("excl. ", a.excluded_by_state);
    a.g.note = incl + (!incl.empty() && !excl.empty() ? "; " : "") + excl;
    summaries.push_back(a.g.metric);
  }
  const std::vector<Ranked> ranked = rank_groups(summaries, q.goal, q.alpha);
  std::vector<Group> out;
  for (size_t i = 0; i < accs.size(); ++i) {
    accs[i].g.ranked = ranked[i];
    out.push_back(std::move(accs[i].g));
  }
  std::stable_sort(out.begin(), out.end(), [](const Group& a, const Group& b) {
    if ((a.ranked.rank == 0) != (b.ranked.rank == 0)) return b.ranked.rank == 0;
    return a.ranked.rank < b.ranked.rank;
  });
  return out;
}

Table groups_table(const std::vector<Group>& groups, const GroupQuery& q, bool display) {
  Table t;
  t.columns = q.group_by;
  for (const char* c : {"trials", "n"}) t.columns.push_back(c);
  if (!display) t.columns.push_back("excluded");  // the text table's note says it
  t.columns.push_back(display ? q.metric + " (mean ± std)" : q.metric);
  if (!display) t.columns.push_back(q.metric + "_std");
  for (const char* c : {"p_vs_best", "mark", "note"}) t.columns.push_back(c);
  std::vector<std::string> mean_names;
  if (!groups.empty()) {
    for (const auto& [name, v] : groups.front().means) mean_names.push_back(name);
  }
  // A stable, readable order for the other metrics: kMeanColumns' order.
  std::vector<std::string> ordered;
  for (const auto& name : kMeanColumns) {
    if (std::find(mean_names.begin(), mean_names.end(), name) == mean_names.end()) continue;
    if (display && std::find(kDisplayMeans.begin(), kDisplayMeans.end(), name) == kDisplayMeans.end()) continue;
    ordered.push_back(name);
  }
  t.columns.insert(t.columns.end(), ordered.begin(), ordered.end());
  for (const Group& g : groups) {
    std::vector<json> row = g.key;
    row.push_back(g.trials);
    row.push_back(g.metric.n);
    if (!display) row.push_back(g.excluded);
    if (display) {
      std::string cell = fixed4(g.metric.mean);
      if (g.metric.n >= 2) cell += " ± " + fixed4(g.metric.std);
      row.push_back(g.metric.n == 0 ? json() : json(cell));
      row.push_back(g.ranked.rank == 1 ? json("-") : json(p_text(g.ranked.p_vs_best)));
    } else {
      row.push_back(nan_to_null(g.metric.mean));
      row.push_back(nan_to_null(g.metric.std));
      row.push_back(nan_to_null(g.ranked.p_vs_best));
    }
    row.push_back(g.ranked.mark);
    row.push_back(g.note);
    for (const auto& name : ordered) {
      auto it = g.means.find(name);
      row.push_back(it == g.means.end() ? json() : whole_or_real(it->second));
    }
    t.rows.push_back(std::move(row));
  }
  return t;
}

json groups_json(const std::vector<Group>& groups, const GroupQuery& q) {
  bool any_error_bars = false;
  json arr = json::array();
  for (const Group& g : groups) {
    any_error_bars = any_error_bars || g.metric.n >= 2;
    json key = json::object();
    for (size_t k = 0; k < q.group_by.size() && k < g.key.size(); ++k) key[q.group_by[k]] = g.key[k];
    json means = json::object();
    for (const auto& [name, v] : g.means) means[name] = nan_to_null(v);
    arr.push_back({{"key", key},
                   {"trials", g.trials},
                   {"trial_ids", g.trial_ids},
                   {"n", g.metric.n},
                   {"excluded", g.excluded},
                   {"unfinished", g.unfinished},
                   {"note", g.note},
                   {"mean", nan_to_null(g.metric.mean)},
                   {"std", nan_to_null(g.metric.std)},
                   {"values", g.values},
                   {"rank", g.ranked.rank},
                   {"mark", g.ranked.mark},
                   {"p_vs_best", nan_to_null(g.ranked.p_vs_best)},
                   {"means", means}});
  }
  return {{"metric", q.metric},
          {"goal", q.goal == Goal::kMinimize ? "minimize" : "maximize"},
          {"group_by", q.group_by},
          {"alpha", q.alpha},
          {"test", "welch_t_two_sided_vs_best"},
          {"include_stopped", q.include_stopped},
          {"single_seed", !any_error_bars},
          {"groups", arr}};
}

std::string groups_footer(const std::vector<Group>& groups, const GroupQuery& q) {
  int64_t with_bars = 0, without = 0, excluded = 0, unfinished = 0;
  for (const Group& g : groups) {
    if (g.metric.n >= 2) ++with_bars;
    else if (g.metric.n == 1) ++without;
    excluded += g.excluded;
    unfinished += g.unfinished;
  }
  std::string out;
  if (with_bars == 0 && without > 0) {
    out += "NO ERROR BARS: every group has a single counted trial (n = 1), so this ranking cannot tell a\n"
           "real difference from seed noise. ";
    const bool by_seed = std::find(q.group_by.begin(), q.group_by.end(), "seed") != q.group_by.end();
    out += unfinished > 0 ? "More trials are still to finish (see note).\n"
           : by_seed      ? "Leave seed out of --group_by to pool the seeds.\n"
                          : "Add `seeds: [0, 1, 2]` to the sweep to measure the spread.\n";
  } else {
    out += fmt::format("mark: Welch's two-sided t-test of each group's {} against the best group (alpha {}); "
                       "\"~ best\" = not distinguishable from the best at this n.\n",
                       q.metric, q.alpha);
    if (without > 0) {
      out += fmt::format("{} group(s) with n = 1 have no error bars and are not tested.\n", without);
    }
  }
  if (excluded > 0) {
    const bool stopped = excluded > unfinished;  // some ended without succeeding
    out += fmt::format("{} trial(s) not counted (see note){}.\n", excluded,
                       stopped && !q.include_stopped
                           ? "; --include_stopped counts stopped and failed trials' last value"
                           : "");
  }
  return out;
}

std::vector<bool> pareto_mask(const Table& t, const std::vector<std::string>& axes) {
  if (axes.size() < 2) {
    HYLAB_FAIL("--pareto: {} axis given; expected two or more columns, e.g. --pareto val_bpb,tok_per_s",
               axes.size());
  }
  std::vector<int> cols;
  std::vector<Goal> goals;
  for (const auto& axis : axes) {
    const size_t colon = axis.find(':');
    const std::string name = axis.substr(0, colon);
    const int c = t.column(name);
    if (c < 0) HYLAB_FAIL("--pareto {}: no such column; columns: {}", name, column_list(t));
    cols.push_back(c);
    goals.push_back(colon == std::string::npos ? default_goal(name)
                                               : parse_goal(axis.substr(colon + 1), "--pareto " + axis));
  }
  std::vector<std::vector<double>> points;
  for (const auto& row : t.rows) {
    std::vector<double> p;
    for (int c : cols) p.push_back(number_or_nan(row[c]));
    points.push_back(std::move(p));
  }
  return pareto_front(points, goals);
}

Table pareto_rows(const Table& t, const std::vector<std::string>& axes) {
  const std::vector<bool> on = pareto_mask(t, axes);
  Table out;
  out.columns = t.columns;
  for (size_t r = 0; r < t.rows.size(); ++r) {
    if (on[r]) out.rows.push_back(t.rows[r]);
  }
  return out;
}

std::string render_groups(const Table& trials, const GroupQuery& q, Format f,
                          const std::vector<std::string>& pareto_axes) {
  std::vector<Group> groups = group_trials(trials, q);
  if (!pareto_axes.empty()) {
    const std::vector<bool> on = pareto_mask(groups_table(groups, q, /*display=*/false), pareto_axes);
    std::vector<Group> kept;
    for (size_t i = 0; i < groups.size(); ++i) {
      if (on[i]) kept.push_back(std::move(groups[i]));
    }
    groups = std::move(kept);
  }
  if (f == Format::kJson) return groups_json(groups, q).dump(2) + "\n";
  if (f == Format::kCsv) return render(groups_table(groups, q, /*display=*/false), f);
  std::string out = render(groups_table(groups, q, /*display=*/true), f);
  if (!pareto_axes.empty()) {
    std::string axes;
    for (const auto& a : pareto_axes) axes += (axes.empty() ? "" : ", ") + a;
    out += fmt::format("Pareto front of the group means over {}: {} group(s).\n", axes, groups.size());
  }
  return out + groups_footer(groups, q);
}

}  // namespace hylab::store
