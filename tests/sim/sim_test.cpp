// The deterministic simulator (sim/simulator.h): the real coordinator logic and SQLite store
// against simulated workers, trainers, network and clock, under faults chosen by a seed.
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "sim/simulator.h"

namespace hylab::sim {
namespace {

namespace fs = std::filesystem;

std::string scratch_dir() {
  // tmpfs when there is one: the seeds write thousands of small transactions.
  const fs::path base = fs::is_directory("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
  const fs::path dir = base / ("hylab-sim-test-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir.string();
}

std::string report(const SimResult& r) {
  std::string out = "seed " + std::to_string(r.seed) + " (replay: hylab sim --seeds 1 --start " +
                    std::to_string(r.seed) + " --trace)\n";
  for (const auto& v : r.violations) out += "  VIOLATION " + v + "\n";
  for (const auto& t : r.trace) out += "  " + t + "\n";
  return out;
}

class SimTest : public ::testing::Test {
 protected:
  void SetUp() override { spdlog::set_level(std::getenv("HYLAB_SIM_LOG") ? spdlog::level::info : spdlog::level::off); }
  void TearDown() override {
    spdlog::set_level(spdlog::level::info);
    fs::remove_all(dir_);
  }
  std::string dir_ = scratch_dir();
};

TEST_F(SimTest, FaultFreeRunsCompleteEveryTrial) {
  SimOptions opt;
  opt.dir = dir_;
  opt.faults = false;
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    const SimResult r = run_seed(seed, opt);
    ASSERT_TRUE(r.violations.empty()) << report(r);
    EXPECT_GT(r.trials, 0);
    EXPECT_TRUE(r.faults.empty());
  }
}

// CI's share of the benchmark's 100,000 seeds. A failure prints the seed and its fault trace.
TEST_F(SimTest, FaultySeedsKeepEveryInvariant) {
  SimOptions opt;
  opt.dir = dir_;
  const char* env = std::getenv("HYLAB_SIM_SEEDS");
  const uint64_t n = env ? std::strtoull(env, nullptr, 10) : 300;
  const char* first = std::getenv("HYLAB_SIM_START");
  const uint64_t start = first ? std::strtoull(first, nullptr, 10) : 1;
  opt.trace = std::getenv("HYLAB_SIM_TRACE") != nullptr;
  std::map<std::string, int64_t> faults;
  for (uint64_t seed = start; seed < start + n; ++seed) {
    const SimResult r = run_seed(seed, opt);
    ASSERT_TRUE(r.violations.empty()) << report(r);
    for (const auto& [k, c] : r.faults) faults[k] += c;
  }
  // The seeds really exercised every kind of fault.
  if (n < 100) return;
  for (const char* kind : {"message_lost", "message_duplicated", "message_delayed", "worker_death",
                           "trainer_killed", "trainer_crash", "trainer_oom", "coordinator_crash",
                           "coordinator_crash_after_commit", "commit_failure", "clock_jump", "drain"}) {
    EXPECT_GT(faults[kind], 0) << kind;
  }
}

TEST_F(SimTest, ASeedReplaysExactly) {
  SimOptions opt;
  opt.dir = dir_;
  opt.trace = true;
  const SimResult a = run_seed(77, opt);
  const SimResult b = run_seed(77, opt);
  EXPECT_EQ(a.trace, b.trace);
  EXPECT_EQ(a.faults, b.faults);
  EXPECT_EQ(a.sim_ms, b.sim_ms);
  EXPECT_EQ(a.coordinator_steps, b.coordinator_steps);
}

}  // namespace
}  // namespace hylab::sim
