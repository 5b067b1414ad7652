// Provenance, budget, disk use and run_dir in the results, on a real SQLite file; and the
// kAddedColumns migration of a database made before those columns existed.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "common/check.h"
#include "store/results.h"
#include "store/schema.h"
#include "store/store.h"
#include "store/trial_view.h"

namespace hylab::store {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

class ArtifactsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("hylab_store_artifacts_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    db_path_ = (dir_ / "hylab.db").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  // One sweep of two trials: a FLOP budget and an explicit num_iterations. The first ran
  // (attempt 1 on w1, its folder recorded) and has a summary with provenance.
  std::vector<int64_t> make_sweep(Store& store) {
    std::vector<NewTrial> ts(2);
    for (int i = 0; i < 2; ++i) {
      RunConfig c;
      c.set_depth(2);
      c.set_max_seq_len(32);
      c.set_device_batch_size(4);
      c.set_total_batch_size(-1);
      if (i == 0)
        c.set_target_flops(3e12);
      else
        c.set_num_iterations(40);
      ts[i].resolved = resolve_config(c);
      ts[i].trial_index = i;
    }
    Tx tx(store.db());
    SweepRow s;
    s.name = "art";
    s.gpus_per_trial = 2;
    const int64_t sweep_id = store.create_sweep(s, ts);
    std::vector<int64_t> ids;
    for (const auto& t : store.trials_of(sweep_id)) ids.push_back(t.trial_id);
    store.start_attempt(ids[0], 1, "w1", false);
    store.db()
        .prepare("UPDATE trial_attempts SET run_dir = ? WHERE trial_id = ? AND attempt = 1")
        .bind(1, "/work/sweep-1/trial-1")
        .bind(2, ids[0])
        .run();
    RunSummary sum;
    sum.flops_per_token = 1e6;
    sum.steps = 100;
    sum.disk_bytes = 123456789;
    sum.provenance_json = json{{"hylab_version", "0.1.0"},  {"hylab_commit", "abc123def456"},
                               {"torch_version", "2.11.0"}, {"cuda_version", "13.0"},
                               {"nccl_version", "2.28.3"},  {"driver_version", "570.86.15"},
                               {"gpu_name", "NVIDIA H200"}, {"host", "gpu-7"}}
                              .dump();
    put_summary(store.db(), ids[0], sum);
    tx.commit();
    return ids;
  }

  fs::path dir_;
  std::string db_path_;
};

TEST_F(ArtifactsTest, ResultsShowBudgetDiskRunDirAndProvenance) {
  auto store = Store::open(db_path_);
  const auto ids = make_sweep(*store);
  ResultsQuery with;
  with.provenance = true;
  const Table t = results(store->db(), with);
  ASSERT_EQ(t.rows.size(), 2u);
  const auto& ran = t.rows[0];
  EXPECT_EQ(ran[t.column("budget")], "flops 3e+12");
  EXPECT_EQ(t.rows[1][t.column("budget")], "steps 40");
  // flops_per_token * steps * tokens per step (4 x 32 per rank, 2 ranks: total_batch_size -1).
  EXPECT_DOUBLE_EQ(ran[t.column("train_flops")].get<double>(), 1e6 * 100 * 4 * 32 * 2);
  EXPECT_EQ(ran[t.column("disk_bytes")], 123456789);
  EXPECT_EQ(ran[t.column("run_dir")], "/work/sweep-1/trial-1");  // the attempt's absolute folder
  EXPECT_EQ(t.rows[1][t.column("run_dir")],
            "sweep-1/trial-" + std::to_string(ids[1]));  // not started
  EXPECT_EQ(ran[t.column("hylab_commit")], "abc123def456");
  EXPECT_EQ(ran[t.column("gpu_name")], "NVIDIA H200");
  EXPECT_EQ(ran[t.column("driver_version")], "570.86.15");
  EXPECT_EQ(ran[t.column("host")], "gpu-7");
  EXPECT_TRUE(t.rows[1][t.column("hylab_commit")].is_null());  // no summary yet
  // Sorting by the new columns works like any other.
  ResultsQuery q;
  q.sort = "-disk_bytes";
  EXPECT_EQ(results(store->db(), q).rows[0][0], ids[0]);

  // Without asking, the provenance columns stay out (the text table, `hylab local`'s table).
  const Table narrow = results(store->db(), ResultsQuery{});
  EXPECT_LT(narrow.column("hylab_commit"), 0);
  EXPECT_GE(narrow.column("run_dir"), 0);
  EXPECT_EQ(narrow.columns.size(), t.columns.size() - std::size(kProvenanceKeys));
  EXPECT_NE(render(t, Format::kCsv).find("abc123def456"), std::string::npos);
}

TEST_F(ArtifactsTest, TrialViewHasEveryColumnAndTheConfig) {
  auto store = Store::open(db_path_);
  const auto ids = make_sweep(*store);
  const json j = json::parse(render_trial(store->db(), ids[0], Format::kJson));
  EXPECT_EQ(j["trial_id"], ids[0]);
  EXPECT_EQ(j["cuda_version"], "13.0");
  EXPECT_EQ(j["nccl_version"], "2.28.3");
  EXPECT_EQ(j["torch_version"], "2.11.0");
  EXPECT_EQ(j["config"]["target_flops"], 3e12);
  const std::string text = render_trial(store->db(), ids[0], Format::kTable);
  EXPECT_NE(text.find("hylab_commit"), std::string::npos) << text;
  EXPECT_NE(text.find("abc123def456"), std::string::npos) << text;
  EXPECT_NE(text.find("\"target_flops\""), std::string::npos) << text;
  try {
    render_trial(store->db(), 999, Format::kTable);
    FAIL() << "expected an error for an unknown trial";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no trial with trial_id 999"), std::string::npos)
        << e.what();
  }
}

TEST_F(ArtifactsTest, ADatabaseWithoutTheNewColumnsGetsThemWhenOpened) {
  {
    auto store = Store::open(db_path_);
    // As made before provenance existed: drop the added columns again.
    for (const char* c : kProvenanceKeys) {
      store->db().exec(std::string("ALTER TABLE trial_summary DROP COLUMN ") + c);
    }
    store->db().exec("ALTER TABLE trial_summary DROP COLUMN disk_bytes");
    store->db().exec("ALTER TABLE trial_attempts DROP COLUMN run_dir");
    for (const char* c : {"recall_acc", "val_bpb_2x", "val_bpb_4x"}) {
      store->db().exec(std::string("ALTER TABLE trial_summary DROP COLUMN ") + c);
    }
  }
  auto store = Store::open(db_path_);  // ensure_schema adds them back
  const auto ids = make_sweep(*store);
  ResultsQuery with;
  with.provenance = true;
  const Table t = results(store->db(), with);
  EXPECT_EQ(t.rows[0][t.column("hylab_commit")], "abc123def456");
  EXPECT_EQ(t.rows[0][t.column("run_dir")], "/work/sweep-1/trial-1");
  EXPECT_EQ(t.rows[0][t.column("disk_bytes")], 123456789);
  EXPECT_TRUE(t.rows[0][t.column("recall_acc")].is_null());  // the evals' columns are back, empty
  (void)ids;
}

}  // namespace
}  // namespace hylab::store
