// Worker parts: the metrics spool reader, exit-status mapping, GPU inventory parsing, and the
// trial runner with real child processes. The runner's tests launch a small shell script in
// place of `hylab train` so that exit codes, signals and process groups can be provoked on
// purpose; the real trainer runs under the runner in tests/e2e.
#include <gtest/gtest.h>

#include <map>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "worker/gpu_inventory.h"
#include "worker/metrics_tail.h"
#include "worker/trial_runner.h"

namespace hylab::worker {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// A process that exists and is not a zombie (a killed grandchild may wait for its reaper).
bool process_alive(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string pid_s, comm, state;
  if (!(stat >> pid_s >> comm >> state)) return false;
  return state != "Z" && state != "X";
}

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch()).count();
}

class WorkerPartsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("hylab_worker_" + std::to_string(getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A stand-in trainer: a shell script that receives the trainer's argv.
  std::string script(const std::string& body) {
    const std::string path = (dir_ / "fake_train.sh").string();
    std::ofstream(path) << "#!/bin/sh\n" << body << "\n";
    fs::permissions(path, fs::perms::owner_all);
    return path;
  }

  LaunchSpec spec(const std::string& bin, int64_t attempt = 1) {
    LaunchSpec s;
    s.trial_id = 7;
    s.attempt = attempt;
    s.run_dir = (dir_ / "run").string();
    s.config_json = "{\"depth\": 2}";
    s.hylab_bin = bin;
    return s;
  }

  static void wait_exit(TrialRunner& r, int timeout_ms = 10000) {
    const int64_t deadline = now_ms() + timeout_ms;
    while (!r.poll(now_ms()) && now_ms() < deadline) std::this_thread::sleep_for(10ms);
    ASSERT_TRUE(r.exited());
  }

  fs::path dir_;
};

TEST(MetricsRecords, ParsesTheTrainerContract) {
  std::string err;
  auto m = parse_record(R"({"type":"metric","step":3,"name":"train_loss","value":2.5,"time":100.5})", &err);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->kind, Record::Kind::kMetric);
  EXPECT_EQ(m->metric.step(), 3);
  EXPECT_EQ(m->metric.name(), "train_loss");
  EXPECT_DOUBLE_EQ(m->metric.wall_time(), 100.5);
  auto c = parse_record(R"({"type":"checkpoint","step":10})", &err);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->step, 10);
  auto s = parse_record(R"({"type":"summary","params_total":99,"final_val_bpb":1.5,"params":{"mlp":3},"cache_bytes":7})", &err);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->summary.params_total(), 99);
  EXPECT_EQ(s->summary.params_json(), R"({"mlp":3})");
  EXPECT_DOUBLE_EQ(s->summary.final_train_loss(), -1);  // absent -> not evaluated
  auto p = parse_record(R"({"type":"summary","provenance":{"hylab_commit":"abc","host":"n1"},"disk_bytes":4096})", &err);
  ASSERT_TRUE(p);
  EXPECT_EQ(nlohmann::json::parse(p->summary.provenance_json())["hylab_commit"], "abc");
  EXPECT_EQ(p->summary.disk_bytes(), 4096);
  EXPECT_FALSE(parse_record("{not json", &err));
  EXPECT_FALSE(parse_record(R"({"type":"metric","step":1,"name":"train_loss","value":null})", &err));
  EXPECT_NE(err.find("not a finite number"), std::string::npos);
  EXPECT_FALSE(parse_record(R"({"type":"gossip"})", &err));
}

TEST_F(WorkerPartsTest, TailReadsCompleteLinesOnlyAndKeepsItsPlace) {
  const std::string path = (dir_ / "m.jsonl").string();
  MetricsTail tail(path);
  EXPECT_TRUE(tail.read(10).empty());  // no file yet
  {
    std::ofstream f(path);
    f << R"({"type":"metric","step":0,"name":"a","value":1})" << "\n"
      << "garbage line\n"
      << R"({"type":"metric","step":1,"name":"a","value":2})" << "\n"
      << R"({"type":"metric","step":2,"na)";  // partial: the writer is mid-line
  }
  auto r = tail.read(10);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_TRUE(tail.has_more());
  EXPECT_TRUE(tail.read(10).empty());
  {
    std::ofstream f(path, std::ios::app);
    f << R"(me":"a","value":3})" << "\n" << R"({"type":"checkpoint","step":2})" << "\n";
  }
  r = tail.read(1);  // at most 1
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].metric.step(), 2);
  r = tail.read(10);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].kind, Record::Kind::kCheckpoint);
  EXPECT_FALSE(tail.has_more());
  EXPECT_EQ(read_all_records(path).size(), 4u);
}

TEST(ExitStatus, FollowsTheTrainerContract) {
  auto exited = [](int code) { return code << 8; };  // as waitpid encodes an exit code
  EXPECT_EQ(classify_exit(exited(0), false, false).outcome, proto::TRIAL_OUTCOME_SUCCEEDED);
  EXPECT_EQ(classify_exit(exited(1), false, false).outcome, proto::TRIAL_OUTCOME_FAILED);
  EXPECT_EQ(classify_exit(exited(2), false, false).outcome, proto::TRIAL_OUTCOME_BAD_CONFIG);
  EXPECT_EQ(classify_exit(exited(3), false, false).outcome, proto::TRIAL_OUTCOME_DIVERGED);
  EXPECT_EQ(classify_exit(exited(4), false, false).outcome, proto::TRIAL_OUTCOME_OOM);
  EXPECT_EQ(classify_exit(exited(143), true, false).outcome, proto::TRIAL_OUTCOME_CANCELLED);
  EXPECT_EQ(classify_exit(exited(143), false, true).outcome, proto::TRIAL_OUTCOME_PREEMPTED);
  EXPECT_EQ(classify_exit(exited(143), false, false).outcome, proto::TRIAL_OUTCOME_PREEMPTED);
  EXPECT_EQ(classify_exit(SIGKILL, true, false).outcome, proto::TRIAL_OUTCOME_CANCELLED);
  const ExitInfo killed = classify_exit(SIGKILL, false, false);
  EXPECT_EQ(killed.outcome, proto::TRIAL_OUTCOME_FAILED);
  EXPECT_EQ(killed.exit_code, -SIGKILL);
  EXPECT_NE(killed.reason.find("SIGKILL"), std::string::npos);
  EXPECT_EQ(classify_exit(SIGSEGV, false, false).outcome, proto::TRIAL_OUTCOME_FAILED);
  EXPECT_EQ(classify_exit(exited(0), true, false).outcome, proto::TRIAL_OUTCOME_SUCCEEDED);
}

TEST_F(WorkerPartsTest, ARunDirThatLinksOutOfTheWorkDirIsRefused) {
  const fs::path work = dir_ / "work", outside = dir_ / "outside";
  fs::create_directories(work / "sweep_1");
  fs::create_directories(outside);
  EXPECT_EQ(run_dir_escape(work.string(), "sweep_1/trial_1"), "");     // not there yet: fine
  fs::create_directory_symlink(outside, work / "sweep_2");             // a parent is a link out
  fs::create_directory_symlink(outside, work / "sweep_1" / "trial_3"); // the run dir is one
  fs::create_directory_symlink(work / "sweep_1", work / "alias");      // a link that stays inside
  EXPECT_NE(run_dir_escape(work.string(), "sweep_2/trial_2").find("outside the work_dir"), std::string::npos);
  EXPECT_NE(run_dir_escape(work.string(), "sweep_1/trial_3").find("outside the work_dir"), std::string::npos);
  EXPECT_EQ(run_dir_escape(work.string(), "alias/trial_4"), "");
}

TEST(ExitStatus, ABadConfigSaysWhatTheTrainerSaid) {
  const std::string tail =
      "step 0\nhylab train: config error: data = \"d\": no such directory (looked relative to /w)\n";
  EXPECT_EQ(config_error_of(tail), "data = \"d\": no such directory (looked relative to /w)");
  EXPECT_EQ(config_error_of("Segmentation fault\n"), "");
}

TEST(Inventory, ParsesNvidiaSmi) {
  const auto gpus = parse_nvidia_smi("0, NVIDIA H200, 143771\n1, NVIDIA H200, 143771\nbad line\n");
  ASSERT_EQ(gpus.size(), 2u);
  EXPECT_EQ(gpus[1].index, 1);
  EXPECT_EQ(gpus[1].name, "NVIDIA H200");
  EXPECT_NEAR(gpus[0].mem_gib, 140.4, 0.1);
  const Inventory cpu = detect_inventory("none", 3);
  EXPECT_TRUE(cpu.gpus.empty());
  EXPECT_EQ(cpu.slots, 3);
  EXPECT_GT(cpu.mem_gib, 0);
  EXPECT_THROW(detect_inventory("9999", 1), std::exception);
  EXPECT_THROW(detect_inventory("x", 1), std::exception);
}

// `--gpus auto` offers the GPUs this process was given (CUDA_VISIBLE_DEVICES, SLURM's
// variables), not every GPU nvidia-smi lists.
TEST(Inventory, AutoHonoursCudaVisibleDevicesAndSlurm) {
  const auto listed = parse_nvidia_smi(
      "0, GPU-aaaa1111-0000, NVIDIA H200, 143771\n1, GPU-bbbb2222-0000, NVIDIA H200, 143771\n"
      "2, GPU-cccc3333-0000, NVIDIA H200, 143771\n3, GPU-dddd4444-0000, NVIDIA H200, 143771\n");
  ASSERT_EQ(listed.size(), 4u);
  EXPECT_EQ(listed[2].uuid, "GPU-cccc3333-0000");
  EXPECT_EQ(listed[2].name, "NVIDIA H200");
  auto env_of = [](std::map<std::string, std::string> vars) {
    return [vars](const char* name) -> const char* {
      auto it = vars.find(name);
      return it == vars.end() ? nullptr : it->second.c_str();
    };
  };
  auto indices = [](const std::vector<GpuInfo>& gpus) {
    std::vector<int> out;
    for (const auto& g : gpus) out.push_back(g.index);
    return out;
  };
  std::string source;
  EXPECT_EQ(indices(visible_gpus(listed, env_of({}), &source)), (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(source, "");
  EXPECT_EQ(indices(visible_gpus(listed, env_of({{"CUDA_VISIBLE_DEVICES", "2,3"}}), &source)),
            (std::vector<int>{2, 3}));
  EXPECT_EQ(source, "CUDA_VISIBLE_DEVICES");
  EXPECT_EQ(indices(visible_gpus(listed, env_of({{"CUDA_VISIBLE_DEVICES", "GPU-bbbb"}}))),
            (std::vector<int>{1}));  // a UUID prefix, as CUDA accepts
  EXPECT_TRUE(visible_gpus(listed, env_of({{"CUDA_VISIBLE_DEVICES", ""}})).empty());
  EXPECT_TRUE(visible_gpus(listed, env_of({{"CUDA_VISIBLE_DEVICES", "NoDevFiles"}})).empty());
  EXPECT_TRUE(visible_gpus(listed, env_of({{"CUDA_VISIBLE_DEVICES", "-1"}})).empty());
  // SLURM: CUDA_VISIBLE_DEVICES wins; else the step's, then the job's allocation.
  EXPECT_EQ(indices(visible_gpus(listed, env_of({{"CUDA_VISIBLE_DEVICES", "1"}, {"SLURM_JOB_GPUS", "0,1,2"}}))),
            (std::vector<int>{1}));
  EXPECT_EQ(indices(visible_gpus(listed, env_of({{"SLURM_STEP_GPUS", "3"}, {"SLURM_JOB_GPUS", "0,3"}}), &source)),
            (std::vector<int>{3}));
  EXPECT_EQ(source, "SLURM_STEP_GPUS");
  EXPECT_EQ(indices(visible_gpus(listed, env_of({{"SLURM_JOB_GPUS", "0,2"}}))), (std::vector<int>{0, 2}));
  EXPECT_EQ(indices(visible_gpus(listed, env_of({{"GPU_DEVICE_ORDINAL", "1,2"}}))), (std::vector<int>{1, 2}));
  // A cgroup (SLURM ConstrainDevices) renumbers the allowed GPUs from 0 while nvidia-smi
  // there lists only them: taken by position, and trials get the renumbered index.
  const auto confined = parse_nvidia_smi("2, GPU-cccc3333-0000, NVIDIA H200, 143771\n"
                                         "3, GPU-dddd4444-0000, NVIDIA H200, 143771\n");
  const auto mine = visible_gpus(confined, env_of({{"CUDA_VISIBLE_DEVICES", "0,1"}}));
  ASSERT_EQ(mine.size(), 2u);
  EXPECT_EQ(mine[1].index, 1);
  EXPECT_EQ(mine[1].uuid, "GPU-dddd4444-0000");
  // Errors name the variable and the value.
  try {
    visible_gpus(listed, env_of({{"CUDA_VISIBLE_DEVICES", "7"}}));
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("CUDA_VISIBLE_DEVICES=7"), std::string::npos) << e.what();
  }
  EXPECT_THROW(visible_gpus(listed, env_of({{"SLURM_JOB_GPUS", "gpu0"}})), std::exception);
}

// On a GPU machine: what nvidia-smi lists is what the worker offers (one slot per GPU).
TEST(Inventory, DetectsThisMachinesGpus) {
  if (std::system("nvidia-smi -L >/dev/null 2>&1") != 0) GTEST_SKIP() << "no nvidia-smi here";
  const Inventory inv = detect_inventory("auto", 1);
  ASSERT_FALSE(inv.gpus.empty());
  EXPECT_EQ(inv.slots, static_cast<int>(inv.gpus.size()));
  for (const auto& g : inv.gpus) {
    EXPECT_FALSE(g.name.empty());
    EXPECT_GT(g.mem_gib, 1.0);
    std::printf("GPU %d: %s, %.1f GiB\n", g.index, g.name.c_str(), g.mem_gib);
  }
  const Inventory first = detect_inventory(std::to_string(inv.gpus[0].index), 1);
  EXPECT_EQ(first.slots, 1);
  EXPECT_EQ(detect_inventory("none", 2).slots, 2);
}

TEST_F(WorkerPartsTest, RunnerPassesTheContractArgvAndCollectsExitAndLog) {
  const std::string bin = script(
      "echo \"args: $*\"\n"
      "echo \"trial $HYLAB_TRIAL_ID attempt $HYLAB_ATTEMPT\"\n"
      "cat \"$3\" >/dev/null || exit 9\n"
      "echo '{\"type\":\"metric\",\"step\":0,\"name\":\"train_loss\",\"value\":1.5}' >> \"$7\"\n"
      "echo boom >&2\n"
      "exit 3");
  LaunchSpec s = spec(bin, 2);
  s.resume = true;
  s.nproc = 2;
  EXPECT_EQ(trainer_argv(s), (std::vector<std::string>{bin, "train", "--config", s.run_dir + "/config.json",
                                                       "--run_dir", s.run_dir, "--metrics_jsonl",
                                                       s.run_dir + "/metrics.a2.jsonl", "--resume",
                                                       "--nproc", "2"}));
  LaunchSpec at = s;
  at.resume_step = 40;
  const auto argv_at = trainer_argv(at);
  EXPECT_EQ(std::vector<std::string>(argv_at.begin() + 8, argv_at.begin() + 11),
            (std::vector<std::string>{"--resume", "--resume_step", "40"}));
  TrialRunner r(s);
  r.start();
  EXPECT_GT(r.pid(), 0);
  wait_exit(r);
  EXPECT_EQ(r.exit_info().outcome, proto::TRIAL_OUTCOME_DIVERGED);
  const std::string log = r.log_tail();
  EXPECT_NE(log.find("trial 7 attempt 2"), std::string::npos) << log;
  EXPECT_NE(log.find("boom"), std::string::npos) << log;
  EXPECT_EQ(read_all_records(r.metrics_path()).size(), 1u);
  std::ifstream cfg(s.run_dir + "/config.json");
  std::string text((std::istreambuf_iterator<char>(cfg)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, "{\"depth\": 2}\n");
}

TEST_F(WorkerPartsTest, CancelTerminatesTheWholeProcessGroupAndEscalates) {
  // The "trainer" starts a grandchild (like a second rank) and ignores SIGTERM.
  const std::string pidfile = (dir_ / "grandchild.pid").string();
  const std::string bin = script("trap '' TERM\nsleep 300 &\necho $! > " + pidfile + "\nwhile true; do sleep 0.05; done");
  TrialRunner r(spec(bin));
  r.start();
  pid_t grandchild = 0;
  for (int i = 0; i < 200 && grandchild == 0; ++i) {
    std::ifstream f(pidfile);
    f >> grandchild;
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_GT(grandchild, 0);
  const int64_t t0 = now_ms();
  r.cancel(now_ms(), /*grace_ms=*/300, /*shutting_down=*/false);
  wait_exit(r);
  EXPECT_GE(now_ms() - t0, 250);  // SIGTERM was ignored: SIGKILL after the grace period
  EXPECT_EQ(r.exit_info().outcome, proto::TRIAL_OUTCOME_CANCELLED);
  std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(process_alive(grandchild)) << "the grandchild survived the cancel";
}

TEST_F(WorkerPartsTest, ShutdownMarksTrialsPreempted) {
  TrialRunner r(spec(script("exec sleep 300")));
  r.start();
  r.cancel(now_ms(), 5000, /*shutting_down=*/true);
  wait_exit(r);
  EXPECT_EQ(r.exit_info().outcome, proto::TRIAL_OUTCOME_PREEMPTED);
}

TEST_F(WorkerPartsTest, StartFailsClearlyForAMissingTrainer) {
  TrialRunner r(spec((dir_ / "no-such-hylab").string()));
  try {
    r.start();
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("not executable"), std::string::npos) << e.what();
  }
}

TEST_F(WorkerPartsTest, EarlierAttemptSpoolsAreFoundInOrder) {
  fs::create_directories(dir_ / "run");
  for (const char* n : {"metrics.a2.jsonl", "metrics.a1.jsonl", "metrics.a3.jsonl", "other.jsonl"}) {
    std::ofstream(dir_ / "run" / n) << "";
  }
  const auto found = earlier_attempt_spools((dir_ / "run").string(), 3);
  ASSERT_EQ(found.size(), 2u);
  EXPECT_EQ(found[0].first, 1);
  EXPECT_EQ(found[1].first, 2);
}

// A trainer killed after it wrote checkpoint 8 but before its checkpoint record reached the
// spool (the newest record says 4): the retry resumes from checkpoint 8, the newest on disk,
// so every step up to 8 must be relayed (relaying up to the record, 4, lost steps 5-8).
TEST_F(WorkerPartsTest, RelayedMetricsReachTheResumeStep) {
  fs::create_directories(dir_ / "run");
  {
    std::ofstream a1(dir_ / "run" / "metrics.a1.jsonl");
    for (int s = 1; s <= 9; ++s) {
      a1 << "{\"type\":\"metric\",\"step\":" << s << ",\"name\":\"train_loss\",\"value\":" << s
         << ".5}\n";
      if (s == 4) a1 << "{\"type\":\"checkpoint\",\"step\":4}\n";
    }
  }
  {
    // Attempt 2 resumed from 4 and wrote steps 5-6 again (the later attempt's records win).
    std::ofstream a2(dir_ / "run" / "metrics.a2.jsonl");
    a2 << "{\"type\":\"metric\",\"step\":5,\"name\":\"train_loss\",\"value\":50}\n";
    a2 << "{\"type\":\"metric\",\"step\":6,\"name\":\"train_loss\",\"value\":60}\n";
  }
  const std::string run = (dir_ / "run").string();
  auto steps = [](const std::vector<proto::Metric>& ms) {
    std::vector<int64_t> out;
    for (const auto& m : ms) out.push_back(m.step());
    return out;
  };
  const auto to8 = relayed_metrics(run, 3, 8);
  EXPECT_EQ(steps(to8), (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(to8[4].value(), 50);
  EXPECT_EQ(to8[4].attempt(), 2);
  EXPECT_EQ(to8[6].attempt(), 1);
  EXPECT_EQ(steps(relayed_metrics(run, 3, 2)), (std::vector<int64_t>{1, 2}));
}

}  // namespace
}  // namespace hylab::worker
