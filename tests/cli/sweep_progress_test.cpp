// `sweep show`'s percent done and ETA, and `sweep submit --wait`'s exit status: pure
// functions of the coordinator's show_sweep reply.
#include "cli/sweep_progress.h"

#include <gtest/gtest.h>

namespace hylab::cli {
namespace {

using nlohmann::json;

json sweep(const std::string& state, json counts, double created_at = 1000) {
  return {{"sweep_id", 3},
          {"name", "q"},
          {"state", state},
          {"created_at", created_at},
          {"counts", counts}};
}

TEST(SweepProgress, PercentAndEtaAtThePaceSoFar) {
  // 2 of 8 done in 100 s: 6 left at 50 s each.
  const json s =
      sweep("running", {{"succeeded", 1}, {"failed", 1}, {"running", 2}, {"pending", 4}});
  const SweepProgress p = sweep_progress(s, 1100);
  EXPECT_EQ(p.total, 8);
  EXPECT_EQ(p.done, 2);
  EXPECT_EQ(p.running, 2);
  EXPECT_EQ(p.failed, 1);
  EXPECT_DOUBLE_EQ(p.percent, 25);
  EXPECT_DOUBLE_EQ(p.eta_s, 300);
  EXPECT_FALSE(p.finished);
  EXPECT_EQ(progress_line(s, p),
            "sweep 3 (q): 2/8 trials done (25%), 2 running, 1 failed, ETA 5m00s");
  const SweepProgress fresh = sweep_progress(sweep("running", {{"pending", 4}}), 1010);
  EXPECT_LT(fresh.eta_s, 0);
  EXPECT_NE(progress_line(sweep("running", {{"pending", 4}}), fresh).find("ETA unknown"),
            std::string::npos);
}

TEST(SweepProgress, ExitStatusIsTheOutcome) {
  auto status = [](const std::string& state, json counts) {
    const SweepProgress p = sweep_progress(sweep(state, counts), 2000);
    EXPECT_TRUE(p.finished);
    return sweep_exit_status(p);
  };
  EXPECT_EQ(status("completed", {{"succeeded", 3}, {"stopped", 2}}),
            kSweepSucceeded);  // early stops are fine
  EXPECT_EQ(status("completed", {{"succeeded", 3}, {"oom", 1}}), kSweepTrialsFailed);
  EXPECT_EQ(status("completed", {{"diverged", 1}}), kSweepTrialsFailed);
  EXPECT_EQ(status("cancelled", {{"succeeded", 1}, {"cancelled", 2}}), kSweepCancelled);
  EXPECT_EQ(status("completed", json::object()), kSweepSucceeded);  // an empty sweep
}

TEST(SweepProgress, Durations) {
  EXPECT_EQ(format_duration(42), "42s");
  EXPECT_EQ(format_duration(250), "4m10s");
  EXPECT_EQ(format_duration(7300), "2h01m");
  EXPECT_EQ(format_duration(-5), "0s");
}

TEST(SweepProgress, LocalExitsZeroWhenTrialsWereEarlyStopped) {
  // `hylab local` used to exit 1 unless every trial succeeded, so a sweep with early stopping
  // "failed" whenever early stopping did its job.
  auto local = [](std::vector<std::string> states) {
    json trials = json::array();
    for (const auto& s : states) trials.push_back({{"state", s}});
    return local_exit_status({{"state", "completed"}, {"trials", trials}});
  };
  EXPECT_EQ(local({"succeeded", "stopped", "stopped"}), 0);
  EXPECT_EQ(local({"succeeded"}), 0);
  EXPECT_EQ(local({"succeeded", "failed"}), 1);
  EXPECT_EQ(local({"stopped", "diverged"}), 1);
  EXPECT_EQ(local({}), 1);
}

}  // namespace
}  // namespace hylab::cli
