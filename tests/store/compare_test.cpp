// Group statistics, the significance marking and Pareto fronts (store/compare.h): pure
// functions checked on made-up groups whose means, spreads and p-values are known.
#include <gtest/gtest.h>

#include <cmath>

#include "common/check.h"
#include "store/compare.h"
#include "store/curve_compare.h"

namespace hylab::store {
namespace {

using nlohmann::json;

// Three values m - d, m, m + d: mean m, sample std exactly d.
std::vector<double> three(double m, double d) { return {m - d, m, m + d}; }

TEST(Compare, SummaryIsMeanSampleStdAndN) {
  const Summary s = summarize({2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0});
  EXPECT_EQ(s.n, 8);
  EXPECT_DOUBLE_EQ(s.mean, 5.0);
  EXPECT_NEAR(s.std, std::sqrt(32.0 / 7.0), 1e-12);  // divisor n - 1, not n
  const Summary one = summarize({2.5});
  EXPECT_EQ(one.n, 1);
  EXPECT_DOUBLE_EQ(one.mean, 2.5);
  EXPECT_TRUE(std::isnan(one.std));
  EXPECT_EQ(summarize({}).n, 0);
  EXPECT_NEAR(summarize(three(2.58, 0.004)).std, 0.004, 1e-12);
}

TEST(Compare, StudentTMatchesClosedFormsAndTables) {
  for (double t : {-3.0, -0.7, 0.0, 0.4, 1.0, 2.5, 10.0}) {
    EXPECT_NEAR(student_t_cdf(t, 1), 0.5 + std::atan(t) / M_PI, 1e-12) << t;       // Cauchy
    EXPECT_NEAR(student_t_cdf(t, 2), 0.5 + t / (2 * std::sqrt(2 + t * t)), 1e-12) << t;
  }
  // Two-sided 5 % critical values from any t table.
  EXPECT_NEAR(student_t_cdf(12.706205, 1), 0.975, 1e-6);
  EXPECT_NEAR(student_t_cdf(2.776445, 4), 0.975, 1e-6);
  EXPECT_NEAR(student_t_cdf(2.228139, 10), 0.975, 1e-6);
  EXPECT_NEAR(student_t_cdf(1.959964, 1e7), 0.975, 1e-6);  // the normal limit
  EXPECT_NEAR(student_t_cdf(-4.032143, 5), 0.005, 1e-6);
}

TEST(Compare, WelchOnEqualSpreadsHasPooledDegreesOfFreedom) {
  // n = 3 each, equal std d: df = 2 (n - 1) = 4, t = diff / (d sqrt(2/3)).
  const Summary a = summarize(three(2.580, 0.004)), b = summarize(three(2.590, 0.004));
  const WelchTest w = welch_t_test(a, b);
  EXPECT_NEAR(w.df, 4.0, 1e-9);
  EXPECT_NEAR(w.t, -0.010 / (0.004 * std::sqrt(2.0 / 3.0)), 1e-9);
  EXPECT_NEAR(w.p, 2 * student_t_cdf(w.t, 4), 1e-12);
  // n = 2 each: df = 2, whose CDF is closed-form: p = 1 - |t| / sqrt(2 + t^2).
  const WelchTest w2 = welch_t_test(summarize({1.0, 2.0}), summarize({3.0, 4.0}));
  EXPECT_NEAR(w2.df, 2.0, 1e-9);
  EXPECT_NEAR(w2.t, -2.0 / std::sqrt(0.5), 1e-12);
  EXPECT_NEAR(w2.p, 1 - std::fabs(w2.t) / std::sqrt(2 + w2.t * w2.t), 1e-12);
  // Unequal spreads: Welch-Satterthwaite df, between min(n) - 1 and n_a + n_b - 2.
  const WelchTest w3 = welch_t_test(summarize({1, 2, 3, 4, 5}), summarize({2, 4, 6, 8, 10}));
  EXPECT_NEAR(w3.df, 6.25 / 1.0625, 1e-9);
  // Degenerate and untestable cases.
  EXPECT_DOUBLE_EQ(welch_t_test(summarize({1, 1}), summarize({1, 1})).p, 1.0);
  EXPECT_DOUBLE_EQ(welch_t_test(summarize({1, 1}), summarize({2, 2})).p, 0.0);
  EXPECT_TRUE(std::isnan(welch_t_test(summarize({1}), summarize({2, 3})).p));
}

TEST(Compare, MarkingOnMadeUpGroupsWithKnownMeansAndSpreads) {
  // Seed noise std 0.004 with n = 3 (the quickstart's measured spread). With df = 4 the 5 %
  // critical |t| is 2.776445, i.e. a difference of 2.776445 * 0.004 * sqrt(2/3) = 0.009068.
  const double crit = 2.776445 * 0.004 * std::sqrt(2.0 / 3.0);
  const std::vector<Summary> groups = {
      summarize(three(2.5900, 0.004)),         // 0: clearly worse (diff 0.0100)
      summarize(three(2.5800, 0.004)),         // 1: best
      summarize(three(2.5800 + crit - 2e-4, 0.004)),  // 2: just inside the noise: ~ best
      summarize(three(2.5800 + crit + 2e-4, 0.004)),  // 3: just outside: worse
      summarize({2.5801}),                     // 4: one seed: no error bars
      summarize({}),                           // 5: nothing finished
      summarize(three(2.5830, 0.004)),         // 6: well inside the noise
  };
  const std::vector<Ranked> r = rank_groups(groups, Goal::kMinimize);
  EXPECT_EQ(r[1].rank, 1);
  EXPECT_EQ(r[1].mark, "best");
  EXPECT_EQ(r[4].rank, 2);
  EXPECT_EQ(r[4].mark, "no error bars");
  EXPECT_TRUE(std::isnan(r[4].p_vs_best));
  EXPECT_EQ(r[6].mark, "~ best");
  EXPECT_EQ(r[2].mark, "~ best");
  EXPECT_GT(r[2].p_vs_best, 0.05);
  EXPECT_LT(r[2].p_vs_best, 0.07);
  EXPECT_EQ(r[3].mark, "worse");
  EXPECT_LT(r[3].p_vs_best, 0.05);
  EXPECT_GT(r[3].p_vs_best, 0.035);
  EXPECT_EQ(r[0].mark, "worse");
  EXPECT_EQ(r[0].rank, 6);
  EXPECT_EQ(r[5].rank, 0);
  EXPECT_EQ(r[5].mark, "no data");
  // Maximize flips the order; the same spreads give the same p-values.
  const std::vector<Ranked> up = rank_groups(groups, Goal::kMaximize);
  EXPECT_EQ(up[0].mark, "best");
  EXPECT_EQ(up[1].mark, "worse");
  // A best group with one trial: nothing can be tested, and the best says so.
  const std::vector<Ranked> single = rank_groups({summarize({2.0}), summarize(three(2.1, 0.01))}, Goal::kMinimize);
  EXPECT_EQ(single[0].mark, "best, no error bars");
  EXPECT_EQ(single[1].mark, "no error bars");
}

TEST(Compare, ParetoFrontWithPerAxisGoals) {
  // (val_bpb: minimize, tok_per_s: maximize)
  const std::vector<std::vector<double>> pts = {
      {2.50, 1000},  // 0: front (best bpb)
      {2.60, 3000},  // 1: front (fastest)
      {2.55, 2000},  // 2: front (trade-off)
      {2.56, 1900},  // 3: dominated by 2
      {2.50, 900},   // 4: dominated by 0 (equal bpb, slower)
      {kNaN, 9999},  // 5: missing: never on the front, dominates nothing
      {2.60, 3000},  // 6: equal to 1: neither dominates the other
  };
  const std::vector<bool> on = pareto_front(pts, {Goal::kMinimize, Goal::kMaximize});
  EXPECT_EQ(on, (std::vector<bool>{true, true, true, false, false, false, true}));
  // Both minimized: only the lowest bpb at the lowest rate survives.
  const std::vector<bool> both_min = pareto_front(pts, {Goal::kMinimize, Goal::kMinimize});
  EXPECT_EQ(both_min, (std::vector<bool>{false, false, false, false, true, false, false}));
}

// A trial table shaped like results(): the columns compare.h reads.
Table made_up_trials() {
  Table t;
  t.columns = {"trial_id", "state", "block_pattern", "mamba_d_state", "seed", "val_bpb", "tok_per_s", "params"};
  auto row = [&](int64_t id, const char* state, const char* pattern, int d_state, int seed, json bpb, double tps) {
    t.rows.push_back({id, state, pattern, d_state, seed, bpb, tps, 1000});
  };
  row(1, "succeeded", "T*4", 16, 0, 2.58, 1000);
  row(2, "succeeded", "T*4", 16, 1, 2.59, 1100);
  row(3, "succeeded", "M*4", 16, 0, 2.50, 800);
  row(4, "succeeded", "M*4", 16, 1, 2.52, 900);
  row(5, "stopped", "M*4", 16, 2, 3.10, 700);   // early-stopped at a high bpb
  row(6, "succeeded", "M*4", 32, 0, 2.40, 600);
  row(7, "failed", "M*4", 32, 1, json(), 0);
  row(8, "running", "M*4", 32, 2, 2.90, 650);
  return t;
}

TEST(Compare, GroupBySeveralKeysExcludesStoppedTrialsUnlessAsked) {
  const Table trials = made_up_trials();
  GroupQuery q;
  q.group_by = {"block_pattern", "mamba_d_state"};
  std::vector<Group> g = group_trials(trials, q);
  ASSERT_EQ(g.size(), 3u);
  // Ranked by mean val_bpb: (M*4, 32) 2.40 n=1, (M*4, 16) 2.51 n=2, (T*4, 16) 2.585 n=2.
  EXPECT_EQ(g[0].key, (std::vector<json>{"M*4", 32}));
  EXPECT_EQ(g[0].metric.n, 1);
  EXPECT_EQ(g[0].trials, 3);
  EXPECT_EQ(g[0].excluded, 2);
  EXPECT_EQ(g[0].note, "excl. 1 failed, 1 running");
  EXPECT_EQ(g[0].unfinished, 1);
  EXPECT_EQ(g[0].ranked.mark, "best, no error bars");
  EXPECT_EQ(g[1].key, (std::vector<json>{"M*4", 16}));
  EXPECT_EQ(g[1].metric.n, 2);           // the stopped trial's 3.10 is not averaged in
  EXPECT_NEAR(g[1].metric.mean, 2.51, 1e-12);
  EXPECT_NEAR(g[1].metric.std, std::sqrt(2) * 0.01, 1e-12);
  EXPECT_NEAR(g[1].means.at("tok_per_s"), 850, 1e-9);
  EXPECT_EQ(g[1].note, "excl. 1 stopped");
  EXPECT_EQ(g[1].trial_ids, (std::vector<int64_t>{3, 4, 5}));
  EXPECT_EQ(g[2].key, (std::vector<json>{"T*4", 16}));
  EXPECT_NEAR(g[2].metric.mean, 2.585, 1e-12);

  q.include_stopped = true;  // the stopped trial's last value counts, and the note says so
  g = group_trials(trials, q);
  const auto m16 = std::find_if(g.begin(), g.end(), [](const Group& x) { return x.key[1] == 16 && x.key[0] == "M*4"; });
  ASSERT_NE(m16, g.end());
  EXPECT_EQ(m16->metric.n, 3);
  EXPECT_NEAR(m16->metric.mean, (2.50 + 2.52 + 3.10) / 3, 1e-12);
  EXPECT_EQ(m16->note, "incl. 1 stopped");
  // Running trials never count; a failed one without a value cannot.
  EXPECT_EQ(g[0].metric.n, 1);

  // One key pools seeds (and d_state): M*4 has 3 succeeded trials.
  q.include_stopped = false;
  q.group_by = {"block_pattern"};
  g = group_trials(trials, q);
  ASSERT_EQ(g.size(), 2u);
  EXPECT_EQ(g[0].key[0], "M*4");
  EXPECT_EQ(g[0].metric.n, 3);
  EXPECT_EQ(g[1].ranked.mark, "~ best");  // T*4 2.585 vs M*4 2.473 +- 0.064: within the noise

  q.group_by = {"block_pattern", "nope"};
  try {
    group_trials(trials, q);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--group_by nope: no such column"), std::string::npos);
  }
}

TEST(Compare, TablesJsonAndFooterTellWhatTheRankingMeans) {
  const Table trials = made_up_trials();
  GroupQuery q;
  q.group_by = {"block_pattern", "mamba_d_state"};
  const std::vector<Group> g = group_trials(trials, q);
  const Table data = groups_table(g, q, /*display=*/false);
  EXPECT_EQ(data.columns[0], "block_pattern");
  EXPECT_EQ(data.columns[1], "mamba_d_state");
  ASSERT_GE(data.column("val_bpb_std"), 0);
  EXPECT_TRUE(data.rows[0][data.column("val_bpb_std")].is_null());  // n = 1
  EXPECT_NEAR(data.rows[1][data.column("val_bpb")].get<double>(), 2.51, 1e-12);
  const Table shown = groups_table(g, q, /*display=*/true);
  EXPECT_EQ(shown.rows[1][shown.column("val_bpb (mean ± std)")], "2.5100 ± 0.0141");
  EXPECT_EQ(shown.rows[0][shown.column("val_bpb (mean ± std)")], "2.4000");
  const json j = groups_json(g, q);
  EXPECT_EQ(j["test"], "welch_t_two_sided_vs_best");
  EXPECT_FALSE(j["single_seed"].get<bool>());
  EXPECT_EQ(j["groups"][1]["key"]["block_pattern"], "M*4");
  EXPECT_EQ(j["groups"][1]["n"], 2);
  EXPECT_TRUE(j["groups"][0]["std"].is_null());
  EXPECT_NE(groups_footer(g, q).find("Welch"), std::string::npos);
  EXPECT_NE(groups_footer(g, q).find("n = 1 have no error bars"), std::string::npos);

  // Every group single-seed: the footer says the ranking has no error bars.
  Table one_seed = trials;
  one_seed.rows = {trials.rows[0], trials.rows[2]};
  q.group_by = {"block_pattern"};
  const std::vector<Group> single = group_trials(one_seed, q);
  EXPECT_NE(groups_footer(single, q).find("NO ERROR BARS"), std::string::npos);
  EXPECT_NE(groups_footer(single, q).find("Add `seeds"), std::string::npos);
  GroupQuery by_seed = q;
  by_seed.group_by = {"block_pattern", "seed"};
  Table finished = trials;
  finished.rows = {trials.rows[0], trials.rows[1], trials.rows[2]};  // all succeeded
  EXPECT_NE(groups_footer(group_trials(finished, by_seed), by_seed).find("Leave seed out"), std::string::npos);
  // ... unless more trials of the groups are still running: then it says that instead.
  one_seed.rows.push_back(trials.rows[7]);  // M*4, running
  const std::vector<Group> so_far = group_trials(one_seed, q);
  EXPECT_NE(groups_footer(so_far, q).find("still to finish"), std::string::npos);
  EXPECT_EQ(groups_footer(so_far, q).find("--include_stopped"), std::string::npos);
  EXPECT_TRUE(groups_json(single, q)["single_seed"].get<bool>());
}

TEST(Compare, ParetoRowsKeepTheFrontOfNamedColumns) {
  const Table trials = made_up_trials();
  // val_bpb (min) x tok_per_s (max) over the trials with a value: 6 (2.40), 3 (2.50, 800),
  // 4 (2.52, 900), 1 (2.58, 1000), 2 (2.59, 1100) are the front; 5 and 8 are dominated.
  const Table front = pareto_rows(trials, {"val_bpb", "tok_per_s"});
  std::vector<int64_t> ids;
  for (const auto& r : front.rows) ids.push_back(r[0].get<int64_t>());
  EXPECT_EQ(ids, (std::vector<int64_t>{1, 2, 3, 4, 6}));
  // Explicit goals: both minimized keeps only the low-bpb, low-rate corner.
  const Table corner = pareto_rows(trials, {"val_bpb:min", "tok_per_s:min"});
  ASSERT_EQ(corner.rows.size(), 1u);
  EXPECT_EQ(corner.rows[0][0], 6);
  EXPECT_THROW(pareto_rows(trials, {"val_bpb"}), Error);
  EXPECT_THROW(pareto_rows(trials, {"val_bpb", "bogus"}), Error);
  EXPECT_THROW(pareto_rows(trials, {"val_bpb", "tok_per_s:up"}), Error);
}

TEST(CurveCompare, CurvesAreReadAtEqualTokensByTheLastPointAtOrBefore) {
  // Trial 1: 100 tokens per step, points at steps 0, 10, 20 (tokens 0, 1000, 2000).
  // Trial 2: 250 tokens per step, points at steps 0, 2, 4, 6 (tokens 0, 500, 1000, 1500).
  const std::vector<Curve> curves = {{1, 100, {{0, 3.0}, {10, 2.5}, {20, 2.0}}},
                                     {2, 250, {{0, 3.1}, {2, 2.9}, {4, 2.4}, {6, 2.2}}}};
  const Table t = align_at_tokens(curves, "val_bpb");
  EXPECT_EQ(t.columns, (std::vector<std::string>{"tokens", "val_bpb #1", "val_bpb #2"}));
  ASSERT_EQ(t.rows.size(), 5u);  // the union: 0, 500, 1000, 1500, 2000
  const std::vector<int64_t> tokens = {0, 500, 1000, 1500, 2000};
  const std::vector<json> one = {3.0, 3.0, 2.5, 2.5, 2.0};     // last point at or before
  const std::vector<json> two = {3.1, 2.9, 2.4, 2.2, json()};  // nothing past its last point
  for (size_t r = 0; r < tokens.size(); ++r) {
    EXPECT_EQ(t.rows[r][0], tokens[r]);
    EXPECT_EQ(t.rows[r][1], one[r]) << r;
    EXPECT_EQ(t.rows[r][2], two[r]) << r;
  }
  // A curve that starts late is empty before its first point.
  const Table late = align_at_tokens({{3, 10, {{5, 1.0}}}, {4, 10, {{1, 2.0}, {9, 1.5}}}}, "m");
  ASSERT_EQ(late.rows.size(), 3u);
  EXPECT_TRUE(late.rows[0][1].is_null());
  EXPECT_EQ(late.rows[1][1], 1.0);
  EXPECT_EQ(late.rows[1][2], 2.0);
  EXPECT_TRUE(late.rows[2][1].is_null());
}

}  // namespace
}  // namespace hylab::store
