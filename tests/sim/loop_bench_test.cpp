// The loop benchmark (sim/loop_bench.h) on a few workers: every worker registered and ran its
// trial, every metrics batch of every round was stored once, and the rounds crossed heartbeat
// ticks, so the progress written behind reached the rows.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "common/check.h"
#include "sim/loop_bench.h"
#include "store/db.h"

namespace hylab::sim {
namespace {

namespace fs = std::filesystem;

TEST(LoopBench, StoresEveryBatchOnceAndCountsEveryMessage) {
  const std::string dir = (fs::temp_directory_path() / ("hylab-loop-test-" + std::to_string(::getpid()))).string();
  const nlohmann::json row = run_loop_bench(300, 25, dir);
  EXPECT_EQ(row["metric_rows"].get<int64_t>(), 300 * 25);
  // A metrics batch per worker per round, a heartbeat per worker every 10th round (0, 10, 20).
  EXPECT_EQ(row["messages"].get<int64_t>(), 300 * 25 + 300 * 3);
  EXPECT_GT(row["us_per_message"].get<double>(), 0.0);
  EXPECT_LE(row["step_ms"].get<double>() + row["checkpoint_ms"].get<double>(), row["wall_ms"].get<double>() + 1);
  {
    auto db = store::Db::open((fs::path(dir) / "hylab.db").string(), true);
    auto q = db->prepare("SELECT COUNT(*) FROM trials WHERE last_step > 0");
    ASSERT_TRUE(q.step());
    EXPECT_EQ(q.int64(0), 300);
  }
  fs::remove_all(dir);
  EXPECT_THROW(run_loop_bench(0, 1, dir), Error);
}

}  // namespace
}  // namespace hylab::sim
