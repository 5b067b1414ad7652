// Comparing groups of trials honestly: mean, sample standard deviation and n per group, a
// significance marking against the best group, and Pareto fronts. Pure functions over the
// trial table of store/results.h (no database access here), so `hylab results`, `hylab local`
// and the dashboard's JSON API show the same numbers. See docs/RESULTS.md.
//
// Contract (what a caller may rely on):
// - Which trials count: a trial counts towards its group's statistics when its state is
//   "succeeded" and it has a numeric value of the metric. With include_stopped, trials in a
//   final state other than succeeded (stopped = early-stopped, failed, diverged, oom,
//   cancelled) count too if they have a value (their last one), and the group's `note` says
//   so. Pending and running trials never count. Trials that do not count are listed in the
//   group's `excluded` count and `note` ("excl. 2 stopped, 1 running").
// - Statistics: mean; std = sample standard deviation (divisor n - 1), NaN (null in JSON)
//   when n < 2; other metrics (tok_per_s, params, ...) are the mean over the counted trials.
// - Ranking: groups with n >= 1 ordered by mean (goal minimize: smallest first), then groups
//   with n = 0. rank is 1-based; n = 0 groups have rank 0.
// - Marking (`mark`), Welch's two-sided t-test of each group against the best (rank 1) at
//   alpha (default 0.05):
//     "best"           rank 1 ("best, no error bars" when its n < 2)
//     "~ best"         p >= alpha: not distinguishable from the best (seed noise can explain it)
//     "worse"          p < alpha
//     "no error bars"  this group or the best has n < 2, so no test is possible
//     "no data"        n = 0
//   No correction for multiple comparisons (k - 1 tests); docs/RESULTS.md says so.
// - Pareto: a point is on the front when no other point is at least as good on every axis
//   and strictly better on one. Points with a missing (NaN) coordinate are never on it and
//   dominate nothing.
// Thread safety: all functions are pure; call them from any thread.
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "store/results.h"

namespace hylab::store {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// ---- statistics on plain numbers ----

struct Summary {
  int64_t n = 0;
  double mean = kNaN;
  double std = kNaN;  // sample standard deviation (n - 1); NaN when n < 2
};
Summary summarize(const std::vector<double>& values);

struct WelchTest {
  double t = kNaN;   // (mean_a - mean_b) / standard error
  double df = kNaN;  // Welch-Satterthwaite degrees of freedom
  double p = kNaN;   // two-sided; NaN when either n < 2
};
// Equal means with zero spread give p = 1; different means with zero spread give p = 0.
WelchTest welch_t_test(const Summary& a, const Summary& b);

// P(T <= t) for Student's t with df > 0 degrees of freedom.
double student_t_cdf(double t, double df);

enum class Goal { kMinimize, kMaximize };
// "min"/"minimize" or "max"/"maximize"; throws hylab::Error naming `what` otherwise.
Goal parse_goal(const std::string& s, const std::string& what);
// The goal of a known metric: maximize for tok_per_s, mfu, recall_acc, decode_tok_per_s_*; minimize
// otherwise (val_bpb, train_loss, params, peak_mem_gib, cache_bytes, ...).
Goal default_goal(const std::string& metric);

// Ranks and marks groups given their summaries (see the contract above). Index i of the
// result describes groups[i].
struct Ranked {
  int rank = 0;        // 1 = best; 0 = no data
  std::string mark;    // best | ~ best | worse | no error bars | no data
  double p_vs_best = kNaN;
};
std::vector<Ranked> rank_groups(const std::vector<Summary>& groups, Goal goal, double alpha = 0.05);

// Pareto front of points (one coordinate per axis, goals[k] for axis k): true = on it.
std::vector<bool> pareto_front(const std::vector<std::vector<double>>& points, const std::vector<Goal>& goals);

// ---- groups of trials (rows of results()) ----

struct GroupQuery {
  std::vector<std::string> group_by;  // columns of the trial table, e.g. {"block_pattern", "mamba_d_state"}
  std::string metric = "val_bpb";
  Goal goal = Goal::kMinimize;
  bool include_stopped = false;
  double alpha = 0.05;
};

struct Group {
  std::vector<nlohmann::json> key;  // one value per group_by column
  std::vector<int64_t> trial_ids;   // every trial of the group, counted or not
  int64_t trials = 0;               // = trial_ids.size()
  int64_t excluded = 0;             // trials that do not count
  int64_t unfinished = 0;           // of those: pending or running (may count later)
  std::string note;                 // "excl. 1 stopped", "incl. 1 stopped", ...
  Summary metric;                   // over the counted trials
  std::vector<double> values;       // the counted trials' metric values, in trial order
  std::map<std::string, double> means;  // tok_per_s, params, mfu, peak_mem_gib, ... (NaN: none)
  Ranked ranked;
};

// Groups the rows of a results() table; groups come back ranked (best first). Throws
// hylab::Error naming the flag for a group_by or metric column that the table lacks.
std::vector<Group> group_trials(const Table& trials, const GroupQuery& q);

// As a table: the group_by columns, trials, n, excluded, <metric> (mean), <metric>_std,
// p_vs_best, mark, note, then the means of the other metrics under their own names
// (tok_per_s, params, ...; whole means as integers). With display = true (the aligned text
// table), <metric> becomes one text cell "mean ± std", <metric>_std and excluded are dropped
// (note says it) and only tok_per_s, params, decode_tok_per_s_b1, cache_bytes, steps follow.
Table groups_table(const std::vector<Group>& groups, const GroupQuery& q, bool display);

// As JSON (the dashboard's API): {"metric", "goal", "group_by", "alpha", "test",
// "include_stopped", "single_seed" (true when no group has n >= 2), "groups": [{"key": {col:
// value}, "trials", "trial_ids", "n", "excluded", "unfinished", "note", "mean", "std", "values", "rank",
// "mark", "p_vs_best", "means": {name: value}}]}; NaN as null.
nlohmann::json groups_json(const std::vector<Group>& groups, const GroupQuery& q);

// Lines to print under a grouped table: the test used, and a warning when the ranking has
// no error bars (every group n < 2) or some groups are single-seed.
std::string groups_footer(const std::vector<Group>& groups, const GroupQuery& q);

// The rows of `t` on the Pareto front of the named numeric columns (true = on it). Each axis
// is "name", "name:min" or "name:max" (default goal: default_goal(name)); at least two axes.
// Non-numeric cells count as missing. Throws hylab::Error naming --pareto for an unknown
// column, a bad goal or fewer than two axes.
std::vector<bool> pareto_mask(const Table& t, const std::vector<std::string>& axes);
// The rows of `t` that pareto_mask keeps, in their order.
Table pareto_rows(const Table& t, const std::vector<std::string>& axes);

// What `hylab results --group_by` and `hylab local` print for a trial table: table = the
// display table plus groups_footer; csv = groups_table (numbers); json = groups_json. With
// pareto_axes, only the groups on the front of those columns (group means) are kept.
std::string render_groups(const Table& trials, const GroupQuery& q, Format f,
                          const std::vector<std::string>& pareto_axes = {});

}  // namespace hylab::store
