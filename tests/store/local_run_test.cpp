// LocalRun on a real SQLite file: a local `hylab train` run becomes a trial of the "local"
// sweep; metrics are stored once per (trial, name, step), also across --resume.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <unistd.h>

#include "common/check.h"
#include "store/db.h"
#include "store/local_run.h"
#include "store/schema.h"

namespace hylab::store {
namespace {

namespace fs = std::filesystem;

class LocalRunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("hylab_local_run_" + std::to_string(getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    db_path_ = (dir_ / "sub" / "hylab.db").string();  // parent created on open
    RunConfig cfg;
    cfg.set_depth(2);
    cfg.add_block_pattern("T,M");
    cfg.set_max_seq_len(32);
    cfg.set_name("tiny");
    cfg.set_seed(7);
    resolved_ = resolve_config(cfg);
  }
  void TearDown() override { fs::remove_all(dir_); }

  int64_t scalar(const std::string& sql) {
    auto db = Db::open(db_path_);
    auto st = db->prepare(sql);
    EXPECT_TRUE(st.step()) << sql;
    return st.int64(0);
  }
  std::string text(const std::string& sql) {
    auto db = Db::open(db_path_);
    auto st = db->prepare(sql);
    EXPECT_TRUE(st.step()) << sql;
    return st.text(0);
  }

  fs::path dir_;
  std::string db_path_;
  RunConfig resolved_;
};

std::vector<MetricPoint> step_points(int64_t step, double loss) {
  return {{step, "train_loss", loss, 1000.0 + step}, {step, "lr", 0.02, 1000.0 + step}};
}

TEST_F(LocalRunTest, RecordsATrialOfTheLocalSweep) {
  const std::string run_dir = (dir_ / "run1").string();
  int64_t trial_id = 0;
  {
    auto run = LocalRun::open(db_path_, resolved_, run_dir);
    trial_id = run->trial_id();
    EXPECT_GT(trial_id, 0);
    EXPECT_EQ(text("SELECT state FROM trials WHERE trial_id=" + std::to_string(trial_id)), "running");
    for (int s = 0; s < 5; ++s) run->write(step_points(s, 5.0 - s));
    RunSummary sum;
    sum.params_total = 12345;
    sum.final_val_bpb = 2.5;
    sum.tok_per_s = 1000;
    sum.steps = 5;
    run->write_summary(sum);
    run->finish(proto::TRIAL_STATE_SUCCEEDED, "");
  }
  EXPECT_EQ(text("SELECT s.name FROM trials t JOIN sweeps s USING(sweep_id)"), "local");
  EXPECT_EQ(text("SELECT state FROM trials"), "succeeded");
  EXPECT_EQ(text("SELECT block_pattern FROM trials"), "T,M");
  EXPECT_EQ(scalar("SELECT n_mamba_layers FROM trials"), 1);
  EXPECT_EQ(scalar("SELECT seed FROM trials"), 7);
  EXPECT_EQ(scalar("SELECT COUNT(*) FROM metrics"), 10);
  EXPECT_EQ(scalar("SELECT last_step FROM trials"), 4);
  EXPECT_EQ(scalar("SELECT params_total FROM trial_summary"), 12345);
  EXPECT_EQ(text("SELECT state FROM trial_attempts WHERE attempt=1"), "succeeded");
  EXPECT_EQ(text("SELECT run_dir FROM trials"), fs::weakly_canonical(run_dir).string());
  // The config is stored resolved and parses back.
  RunConfig back = config_from_json(text("SELECT config_json FROM trials"));
  EXPECT_EQ(config_hash(back), config_hash(resolved_));
}

TEST_F(LocalRunTest, ResumeReplacesReemittedStepsWithoutDuplicates) {
  const std::string run_dir = (dir_ / "run2").string();
  int64_t trial_id = 0;
  {
    auto run = LocalRun::open(db_path_, resolved_, run_dir);
    trial_id = run->trial_id();
    for (int s = 0; s < 8; ++s) run->write(step_points(s, 10.0 + s));
    // killed: no finish(); the destructor records a failure
  }
  EXPECT_EQ(text("SELECT state FROM trials"), "failed");
  {
    auto run = LocalRun::reopen(db_path_, run_dir);
    EXPECT_EQ(run->trial_id(), trial_id);
    // Resumed from a checkpoint at step 5: steps 5..9 are emitted again / newly.
    for (int s = 5; s < 10; ++s) run->write(step_points(s, 20.0 + s));
    run->finish(proto::TRIAL_STATE_SUCCEEDED, "");
  }
  EXPECT_EQ(scalar("SELECT COUNT(*) FROM trials"), 1);
  EXPECT_EQ(scalar("SELECT attempt FROM trials"), 2);
  EXPECT_EQ(scalar("SELECT COUNT(*) FROM trial_attempts"), 2);
  EXPECT_EQ(scalar("SELECT COUNT(*) FROM metrics WHERE name='train_loss'"), 10);
  EXPECT_EQ(scalar("SELECT COUNT(DISTINCT step) FROM metrics WHERE name='train_loss'"), 10);
  // Step 6 now carries the resumed attempt's value.
  auto db = Db::open(db_path_);
  auto st = db->prepare("SELECT value, attempt FROM metrics WHERE name='train_loss' AND step=6");
  ASSERT_TRUE(st.step());
  EXPECT_DOUBLE_EQ(st.real(0), 26.0);
  EXPECT_EQ(st.int64(1), 2);
  st.reset();
  auto st2 = db->prepare("SELECT value, attempt FROM metrics WHERE name='train_loss' AND step=2");
  ASSERT_TRUE(st2.step());
  EXPECT_DOUBLE_EQ(st2.real(0), 12.0);
  EXPECT_EQ(st2.int64(1), 1);
}

TEST_F(LocalRunTest, TwoLocalRunsShareOneSweep) {
  LocalRun::open(db_path_, resolved_, (dir_ / "a").string())->finish(proto::TRIAL_STATE_OOM, "CUDA out of memory");
  LocalRun::open(db_path_, resolved_, (dir_ / "b").string())->finish(proto::TRIAL_STATE_DIVERGED, "loss is nan");
  EXPECT_EQ(scalar("SELECT COUNT(*) FROM sweeps"), 1);
  EXPECT_EQ(scalar("SELECT COUNT(*) FROM trials"), 2);
  EXPECT_EQ(scalar("SELECT MAX(trial_index) FROM trials"), 1);
  EXPECT_EQ(scalar("SELECT COUNT(*) FROM events WHERE kind='trial_finished'"), 2);
}

TEST_F(LocalRunTest, ADivergedStepWithANaNLossIsRecordedNotRefused) {
  // The trainer writes the NaN loss of the step that diverged, then finishes "diverged".
  // SQLite stores NaN as NULL: the write used to fail on metrics.value NOT NULL, and a
  // diverging `hylab train` exited 1 with that error instead of 3.
  auto run = LocalRun::open(db_path_, resolved_, (dir_ / "nan").string());
  run->write(step_points(0, 5.0));
  ASSERT_NO_THROW(run->write({{1, "train_loss", std::nan(""), 1001.0}}));
  run->finish(proto::TRIAL_STATE_DIVERGED, "training diverged at step 1: loss is nan");
  EXPECT_EQ(text("SELECT state FROM trials"), "diverged");
  EXPECT_EQ(scalar("SELECT last_step FROM trials"), 1);
  EXPECT_EQ(scalar("SELECT COUNT(*) FROM metrics WHERE name='train_loss'"), 1);  // step 0 only
}

TEST_F(LocalRunTest, ErrorsNameWhatIsWrong) {
  try {
    LocalRun::reopen(db_path_, (dir_ / "never").string());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no local run recorded"), std::string::npos) << e.what();
  }
  auto run = LocalRun::open(db_path_, resolved_, (dir_ / "c").string());
  try {
    run->finish(proto::TRIAL_STATE_STOPPED, "");  // early stopping is for sweeps
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("succeeded, failed, diverged, oom, cancelled"),
              std::string::npos);
  }
  run->finish(proto::TRIAL_STATE_CANCELLED, "SIGTERM");
}

TEST_F(LocalRunTest, RefusesANewerSchema) {
  {
    auto db = Db::open(db_path_);
    db->exec("PRAGMA user_version = 99");
  }
  EXPECT_THROW(LocalRun::open(db_path_, resolved_, (dir_ / "d").string()), Error);
}

}  // namespace
}  // namespace hylab::store
