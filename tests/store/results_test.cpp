// The coordinator's store and the results queries on a real SQLite file.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "common/check.h"
#include "store/compare.h"
#include "store/curve_compare.h"
#include "store/results.h"
#include "store/store.h"

namespace hylab::store {
namespace {

namespace fs = std::filesystem;

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("hylab_store_" + std::to_string(getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    store_ = Store::open((dir_ / "hylab.db").string());
  }
  void TearDown() override {
    store_.reset();
    fs::remove_all(dir_);
  }

  NewTrial trial(const std::string& pattern, int d_state, const std::string& fraction = "") {
    RunConfig c;
    c.set_depth(2);
    c.set_max_seq_len(32);
    c.add_block_pattern(pattern);
    c.set_mamba_d_state(d_state);
    NewTrial t;
    t.resolved = resolve_config(c);
    t.params = {{"block_pattern", pattern}, {"mamba_d_state", std::to_string(d_state)}};
    if (!fraction.empty()) t.params.push_back({"attention_fraction", fraction});
    return t;
  }

  // A sweep of 3 trials: one succeeded with a summary, one stopped with metrics only, one pending.
  int64_t make_sweep() {
    SweepRow s;
    s.name = "s";
    std::vector<NewTrial> ts = {trial("T*2", 16, "1"), trial("M*2", 16, "0"), trial("T,M", 32, "0.5")};
    for (size_t i = 0; i < ts.size(); ++i) ts[i].trial_index = static_cast<int64_t>(i);
    Tx tx(store_->db());
    const int64_t sweep_id = store_->create_sweep(s, ts);
    auto trials = store_->trials_of(sweep_id);
    store_->start_attempt(trials[0].trial_id, 1, "w1", false);
    put_metrics(store_->db(), trials[0].trial_id, 1,
                {{0, "train_loss", 5.0, 1}, {1, "train_loss", 4.0, 2}, {1, "val_bpb", 2.5, 2}});
    RunSummary sum;
    sum.params_total = 123456;
    sum.final_val_bpb = 2.25;
    sum.tok_per_s = 1500;
    sum.steps = 2;
    sum.recall_acc = 0.25;
    sum.val_bpb_2x = 2.125;
    sum.val_bpb_4x = 2.5;
    put_summary(store_->db(), trials[0].trial_id, sum);
    store_->finish_attempt(trials[0].trial_id, 1, proto::ATTEMPT_STATE_SUCCEEDED, "", 0, "");
    store_->set_trial_state(trials[0].trial_id, proto::TRIAL_STATE_SUCCEEDED, 0, "");
    store_->start_attempt(trials[1].trial_id, 1, "w1", false);
    put_metrics(store_->db(), trials[1].trial_id, 1,
                {{0, "train_loss", 6.0, 1}, {1, "val_bpb", 3.5, 2}, {2, "val_bpb", 3.0, 3},
                 {1, "tok_per_s", 100, 2}, {2, "tok_per_s", 300, 3}});
    store_->set_trial_state(trials[1].trial_id, proto::TRIAL_STATE_STOPPED, 0, "early stop");
    tx.commit();
    return sweep_id;
  }

  fs::path dir_;
  std::unique_ptr<Store> store_;
};

// The newest step among a trial's metrics, by a seek per metric name (the coordinator's
// recovery of trials.last_step after a crash): names whose curves end at different steps,
// the empty name, another trial's rows next to it, and a trial with none.
TEST_F(StoreTest, NewestMetricStepLooksAtEveryName) {
  SweepRow s;
  s.name = "s";
  std::vector<NewTrial> ts = {trial("T*2", 16), trial("M*2", 16), trial("T,M", 16)};
  for (size_t i = 0; i < ts.size(); ++i) ts[i].trial_index = static_cast<int64_t>(i);
  Tx tx(store_->db());
  const auto trials = store_->trials_of(store_->create_sweep(s, ts));
  const int64_t a = trials[0].trial_id, b = trials[1].trial_id, none = trials[2].trial_id;
  EXPECT_EQ(insert_metrics(store_->db(), a, 1, {{7, "train_loss", 1, 1}, {3, "val_bpb", 1, 1}, {2, "", 1, 1}}), 7);
  insert_metrics(store_->db(), a, 1, {{11, "", 1, 1}, {9, "zz", 1, 1}});
  insert_metrics(store_->db(), b, 1, {{50, "train_loss", 1, 1}});
  EXPECT_EQ(newest_metric_step(store_->db(), a), 11);
  EXPECT_EQ(newest_metric_step(store_->db(), b), 50);
  EXPECT_EQ(newest_metric_step(store_->db(), none), -1);
  // insert_metrics leaves last_step alone; put_metrics raises it.
  EXPECT_EQ(store_->trial(a).last_step, -1);
  put_metrics(store_->db(), b, 1, {{4, "lr", 1, 1}});
  EXPECT_EQ(store_->trial(b).last_step, 4);
  tx.commit();
}

TEST_F(StoreTest, CreateSweepNamesRunDirsAndLoadsBack) {
  const int64_t sweep_id = make_sweep();
  auto trials = store_->trials_of(sweep_id);
  ASSERT_EQ(trials.size(), 3u);
  EXPECT_EQ(trials[2].run_dir, "sweep-" + std::to_string(sweep_id) + "/trial-" + std::to_string(trials[2].trial_id));
  EXPECT_EQ(trials[2].state, proto::TRIAL_STATE_PENDING);
  EXPECT_EQ(store_->active_trials().size(), 1u);
  EXPECT_EQ(store_->sweep(sweep_id).name, "s");
  EXPECT_THROW(store_->sweep(999), Error);
  EXPECT_THROW(store_->set_trial_state(trials[2].trial_id, proto::TRIAL_STATE_UNSPECIFIED, 0, ""), Error);
  const auto series = store_->metric_series(sweep_id, "val_bpb");
  ASSERT_EQ(series.size(), 2u);
  EXPECT_EQ(series[1].second.size(), 2u);
  const auto j = store_->sweep_json(sweep_id);
  EXPECT_EQ(j["trials"].size(), 3u);
  EXPECT_EQ(j["counts"]["pending"], 1);
  EXPECT_EQ(j["trials"][0]["params"]["mamba_d_state"], 16);
}

// The evals beside val_bpb (trainer/trial_evals.h): summary columns next to val_bpb, the
// newest metric for a trial without a summary, NULL where not run; group means; maximize
// is recall_acc's default goal.
TEST_F(StoreTest, ResultsShowTheEvalsBesideValBpb) {
  const int64_t sweep_id = make_sweep();
  // The stopped trial (no summary) ran the evals at an eval step (evals_every_eval).
  put_metrics(store_->db(), store_->trials_of(sweep_id)[1].trial_id, 1, {{2, "recall_acc", 0.5, 3}});
  ResultsQuery q;
  q.sweep_id = sweep_id;
  const Table t = results(store_->db(), q);
  ASSERT_EQ(t.rows.size(), 3u);
  const int bpb = t.column("val_bpb"), x2 = t.column("val_bpb_2x"), x4 = t.column("val_bpb_4x"),
            recall = t.column("recall_acc");
  ASSERT_GE(x2, 0);
  EXPECT_EQ(x2, bpb + 1);
  EXPECT_EQ(x4, bpb + 2);
  EXPECT_EQ(recall, bpb + 3);
  EXPECT_DOUBLE_EQ(t.rows[0][x2].get<double>(), 2.125);
  EXPECT_DOUBLE_EQ(t.rows[0][x4].get<double>(), 2.5);
  EXPECT_DOUBLE_EQ(t.rows[0][recall].get<double>(), 0.25);
  EXPECT_DOUBLE_EQ(t.rows[1][recall].get<double>(), 0.5);  // stopped: the newest metric
  EXPECT_TRUE(t.rows[1][x2].is_null());
  EXPECT_TRUE(t.rows[2][recall].is_null());  // pending
  // A summary without evals (-1) stores NULL, not -1.
  RunSummary none;
  none.final_val_bpb = 3.0;
  put_summary(store_->db(), t.rows[2][t.column("trial_id")].get<int64_t>(), none);
  const Table again = results(store_->db(), q);
  EXPECT_TRUE(again.rows[2][recall].is_null());
  EXPECT_TRUE(again.rows[2][x4].is_null());
  // In CSV and JSON by name; grouped, a mean per group; recall_acc ranks by maximize.
  EXPECT_NE(render(t, Format::kCsv).find("val_bpb,val_bpb_2x,val_bpb_4x,recall_acc"), std::string::npos);
  EXPECT_NE(render(t, Format::kJson).find("\"recall_acc\": 0.25"), std::string::npos);
  EXPECT_EQ(default_goal("recall_acc"), Goal::kMaximize);
  EXPECT_EQ(default_goal("val_bpb_2x"), Goal::kMinimize);
  q.group_by = "block_pattern";
  const Table g = results(store_->db(), q);
  ASSERT_GE(g.column("recall_acc"), 0);
  ASSERT_GE(g.column("val_bpb_2x"), 0);
}

TEST_F(StoreTest, ResultsOneRowPerTrialWithFallbacksForStoppedTrials) {
  const int64_t sweep_id = make_sweep();
  ResultsQuery q;
  q.sweep_id = sweep_id;
  q.sort = "val_bpb";
  Table t = results(store_->db(), q);
  ASSERT_EQ(t.rows.size(), 3u);
  const int bpb = t.column("val_bpb"), state = t.column("state"), tps = t.column("tok_per_s");
  ASSERT_GE(t.column("attention_fraction"), 0);  // swept parameters become columns
  EXPECT_EQ(t.rows[0][state], "succeeded");
  EXPECT_DOUBLE_EQ(t.rows[0][bpb].get<double>(), 2.25);  // the summary wins over metrics
  EXPECT_EQ(t.rows[1][state], "stopped");
  EXPECT_DOUBLE_EQ(t.rows[1][bpb].get<double>(), 3.0);   // newest val_bpb metric
  EXPECT_DOUBLE_EQ(t.rows[1][tps].get<double>(), 200);   // mean tok/s after step 0
  EXPECT_TRUE(t.rows[2][bpb].is_null());                 // nulls sort last
  EXPECT_EQ(t.rows[2][t.column("block_pattern")], "T,M");
  q.sort = "-val_bpb";
  t = results(store_->db(), q);
  EXPECT_EQ(t.rows[0][state], "stopped");
  q.sort = "bogus";
  try {
    results(store_->db(), q);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--sort bogus: no such column"), std::string::npos);
  }
}

TEST_F(StoreTest, GroupByAndFormats) {
  const int64_t sweep_id = make_sweep();
  ResultsQuery q;
  q.sweep_id = sweep_id;
  q.group_by = "mamba_d_state";
  Table g = results(store_->db(), q);
  ASSERT_EQ(g.rows.size(), 2u);
  EXPECT_EQ(g.rows[0][0], 16);
  EXPECT_EQ(g.rows[0][g.column("trials")], 2);
  EXPECT_EQ(g.rows[0][g.column("n")], 1);  // the stopped trial's step-2 bpb is not averaged in
  EXPECT_DOUBLE_EQ(g.rows[0][g.column("val_bpb")].get<double>(), 2.25);
  EXPECT_EQ(g.rows[0][g.column("note")], "excl. 1 stopped");
  const std::string csv = render(g, Format::kCsv);
  EXPECT_EQ(csv.substr(0, csv.find('\n')).substr(0, 58),
            "mamba_d_state,trials,n,excluded,val_bpb,val_bpb_std,p_vs_b");
  const auto json = nlohmann::json::parse(render(g, Format::kJson));
  EXPECT_EQ(json.size(), 2u);
  EXPECT_EQ(json[1]["mamba_d_state"], 32);
  EXPECT_EQ(json[1]["mark"], "no data");  // its only trial is pending
  // Several keys, and the stopped trial counted when asked.
  q.group_by = "block_pattern, mamba_d_state";
  q.include_stopped = true;
  g = results(store_->db(), q);
  ASSERT_EQ(g.rows.size(), 3u);
  EXPECT_EQ(g.columns[1], "mamba_d_state");
  EXPECT_EQ(g.rows[1][0], "M*2");
  EXPECT_DOUBLE_EQ(g.rows[1][g.column("val_bpb")].get<double>(), 3.0);
  EXPECT_EQ(g.rows[1][g.column("note")], "incl. 1 stopped");
  q.include_stopped = false;
  const std::string table = render(results(store_->db(), ResultsQuery{sweep_id, "", ""}), Format::kTable);
  EXPECT_NE(table.find("123.5K"), std::string::npos) << table;  // params, human-sized
  EXPECT_THROW(parse_format("xml"), Error);
}

TEST_F(StoreTest, ForeignDatabasesAreNamed) {
  auto other = Db::open((dir_ / "other.db").string());
  other->exec("CREATE TABLE x(a)");
  try {
    results(*other, ResultsQuery{});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a hylab results database"), std::string::npos);
  }
  EXPECT_THROW(Db::open((dir_ / "missing.db").string(), /*read_only=*/true), Error);
}

TEST_F(StoreTest, CurvesHaveAStepColumnAndOneColumnPerMetric) {
  const int64_t sweep_id = make_sweep();
  auto trials = store_->trials_of(sweep_id);
  Table c = curves(store_->db(), {trials[1].trial_id});
  EXPECT_EQ(c.columns, (std::vector<std::string>{"trial_id", "step", "train_loss", "val_bpb", "tok_per_s"}));
  ASSERT_EQ(c.rows.size(), 3u);
  EXPECT_EQ(c.rows[0][1], 0);
  EXPECT_TRUE(c.rows[0][3].is_null());
  EXPECT_DOUBLE_EQ(c.rows[2][3].get<double>(), 3.0);
  const std::string csv = render(c, Format::kCsv);
  EXPECT_NE(csv.find("trial_id,step,train_loss,val_bpb,tok_per_s\n"), std::string::npos);
  EXPECT_THROW(curves(store_->db(), {424242}), Error);
}

TEST_F(StoreTest, CurvesAtTokensTakeTokensPerStepFromTheLoggedRate) {
  const int64_t sweep_id = make_sweep();
  auto trials = store_->trials_of(sweep_id);
  // Trial 1 logs tok_per_s and step_time_s: 2048 tokens per step (1024 tok/s x 2 s).
  put_metrics(store_->db(), trials[1].trial_id, 1, {{1, "step_time_s", 2.0, 2}, {1, "tok_per_s", 1024, 2}});
  const std::vector<Curve> c = load_curves(store_->db(), {trials[0].trial_id, trials[1].trial_id}, "val_bpb");
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].tokens_per_step, 524288);  // no rate logged: the config's total_batch_size
  EXPECT_EQ(c[1].tokens_per_step, 2048);
  EXPECT_EQ(c[1].points, (std::vector<std::pair<int64_t, double>>{{1, 3.5}, {2, 3.0}}));
  const Table t = align_at_tokens(c, "val_bpb");
  EXPECT_EQ(t.rows[0][0], 2048);
  EXPECT_THROW(load_curves(store_->db(), {trials[0].trial_id}, "nope"), Error);
  EXPECT_THROW(load_curves(store_->db(), {424242}, "val_bpb"), Error);
}

}  // namespace
}  // namespace hylab::store
