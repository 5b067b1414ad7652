// End to end through the real `hylab` binary (env HYLAB_BIN): data prepare on generated text,
// then tiny hybrid models that train for real. Covers the trainer process contract: metrics
// JSON lines, checkpoints, SIGTERM (143) and --resume reproducing the uninterrupted losses
// bit for bit, 2 gloo ranks == 1 rank at the same global batch, divergence (3), bad config
// and data (2), a rank that never joins (init deadline).
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "tests/trainer/test_text.h"
#include "common/spawn.h"

namespace hylab::trainer {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

std::string hylab_bin() {
  const char* b = std::getenv("HYLAB_BIN");
  return b ? b : "";
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A TCP port that was free a moment ago (bind to port 0, read it back).
int free_tcp_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

struct Result {
  int code = -1;
  std::string out, err;
};

// Runs hylab with args; stdout/stderr captured through files in `dir`.
Result run_hylab(const std::vector<std::string>& args, const fs::path& dir,
                 const std::vector<std::string>& env = {}) {
  static int n = 0;
  const std::string out = (dir / ("out" + std::to_string(++n))).string();
  std::vector<std::string> argv = {hylab_bin()};
  argv.insert(argv.end(), args.begin(), args.end());
  SpawnOptions opt;
  opt.extra_env = env;
  opt.stdout_file = out;
  opt.stderr_file = out + ".err";
  Process p = Process::spawn(argv, opt);
  Result r;
  r.code = p.wait().code();
  r.out = slurp(out);
  r.err = slurp(out + ".err");
  return r;
}

// step -> value of the last record of `name` (re-emitted steps after a resume replace earlier ones).
std::map<int64_t, double> metric(const std::string& jsonl, const std::string& name) {
  std::map<int64_t, double> out;
  std::istringstream in(slurp(jsonl));
  for (std::string line; std::getline(in, line);) {
    const json j = json::parse(line);
    if (j["type"] == "metric" && j["name"] == name) {
      out[j["step"].get<int64_t>()] = j["value"].is_null() ? NAN : j["value"].get<double>();
    }
  }
  return out;
}

std::vector<json> records(const std::string& jsonl, const std::string& type) {
  std::vector<json> out;
  std::istringstream in(slurp(jsonl));
  for (std::string line; std::getline(in, line);) {
    json j = json::parse(line);
    if (j["type"] == type) out.push_back(j);
  }
  return out;
}

class TrainTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (hylab_bin().empty()) return;
    std::string tmpl = (fs::temp_directory_path() / "hylab_train_test_XXXXXX").string();
    root_ = ::mkdtemp(tmpl.data());
    std::ofstream(root_ / "corpus.txt") << testing::generated_text(600, 7);
    const Result r = run_hylab({"data", "prepare", "--input", (root_ / "corpus.txt").string(), "--out",
                                (root_ / "data").string(), "--vocab_size", "512",
                                "--val_fraction", "0.1"},
                               root_);
    ASSERT_EQ(r.code, 0) << r.err;
    // A two-layer hybrid small enough for a shared 2-core CI machine.
    std::ofstream(root_ / "tiny.yaml") << "name: tiny\n"
                                          "n_layer: 2\nn_embd: 64\nn_head: 2\nn_kv_head: 2\n"
                                          "block_pattern: \"TM\"\nmamba_d_state: 8\n"
                                          "max_seq_len: 32\ndevice_batch_size: 4\n"
                                          "total_batch_size: -1\neval_every: 0\neval_tokens: 1024\n"
                                          "sample_every: 0\ndevice: cpu\ndata: "
                                       << (root_ / "data").string() << "\n";
  }
  static void TearDownTestSuite() {
    if (!root_.empty()) fs::remove_all(root_);
  }
  void SetUp() override {
    if (hylab_bin().empty()) GTEST_SKIP() << "HYLAB_BIN is not set (run through ctest)";
  }
  // `hylab train` on the tiny config in a fresh run folder named `name`.
  Result train(const std::string& name, std::vector<std::string> extra,
               const std::vector<std::string>& env = {}) {
    std::vector<std::string> args = {"train", "--config", (root_ / "tiny.yaml").string(),
                                     "--run_dir", run_dir(name), "--metrics_jsonl", jsonl(name),
                                     "--probe_steps", "4"};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_hylab(args, root_, env);
  }
  static std::string run_dir(const std::string& name) { return (root_ / name).string(); }
  static std::string jsonl(const std::string& name) { return (root_ / (name + ".jsonl")).string(); }
  static fs::path root_;
};
fs::path TrainTest::root_;

TEST_F(TrainTest, TinyHybridLearnsAndWritesTheRunFolder) {
  const Result r = train("learn", {"--num_iterations=40", "--checkpoint_every=20"});
  ASSERT_EQ(r.code, 0) << r.err;
  const auto loss = metric(jsonl("learn"), "train_loss");
  ASSERT_EQ(loss.size(), 40u);
  double tail = 0;
  for (int64_t s = 35; s < 40; ++s) tail += loss.at(s) / 5;
  EXPECT_LT(tail, loss.at(0) - 1.0) << "loss did not fall: first " << loss.at(0) << ", last 5 " << tail;
  const auto bpb = metric(jsonl("learn"), "val_bpb");
  ASSERT_EQ(bpb.count(40), 1u);
  EXPECT_TRUE(std::isfinite(bpb.at(40)));
  EXPECT_GT(bpb.at(40), 0.1);
  const auto ck = records(jsonl("learn"), "checkpoint");
  ASSERT_EQ(ck.size(), 2u);
  EXPECT_EQ(ck[0]["step"], 20);
  EXPECT_EQ(ck[1]["step"], 40);
  const auto summary = records(jsonl("learn"), "summary");
  ASSERT_EQ(summary.size(), 1u);
  EXPECT_EQ(summary[0]["steps"], 40);
  EXPECT_GT(summary[0]["params_total"].get<int64_t>(), 0);
  EXPECT_GT(summary[0]["decode_tok_per_s_b32"].get<double>(), 0);
  EXPECT_GT(summary[0]["cache_bytes"].get<int64_t>(), 0);
  for (const char* f : {"config.json", "train.log", "tokenizer.model", "provenance.json",
                        "checkpoints/step_000040/meta.json"}) {
    EXPECT_TRUE(fs::exists(fs::path(run_dir("learn")) / f)) << f;
  }
  // Default retention (checkpoint_keep: {last: 1, best: 1}): step 20 had no evaluation, so
  // neither newest nor best once step 40 was written (tests/trainer/artifacts_test.cpp has more).
  EXPECT_FALSE(fs::exists(fs::path(run_dir("learn")) / "checkpoints/step_000020"));
  // The weights file's name belongs to model/checkpoint.h; only check that weights are there.
  int64_t weight_bytes = 0;
  for (const auto& e : fs::directory_iterator(fs::path(run_dir("learn")) / "checkpoints/step_000040")) {
    if (e.path().filename().string().rfind("model", 0) == 0) weight_bytes += fs::file_size(e.path());
  }
  EXPECT_GT(weight_bytes, 4 * summary[0]["params_total"].get<int64_t>() / 2);
  EXPECT_NE(slurp(run_dir("learn") + "/train.log").find("val bpb"), std::string::npos);
}

TEST_F(TrainTest, SigtermThenResumeReproducesTheUninterruptedLossesBitExactly) {
  const std::vector<std::string> cfg = {"--num_iterations=16", "--checkpoint_every=4", "--eval_every=8"};
  ASSERT_EQ(train("straight", cfg).code, 0);
  const auto want = metric(jsonl("straight"), "train_loss");
  ASSERT_EQ(want.size(), 16u);

  // Interrupted: SIGTERM once the first checkpoint is announced.
  std::vector<std::string> args = {"train", "--config", (root_ / "tiny.yaml").string(), "--run_dir",
                                   run_dir("cut"), "--metrics_jsonl", jsonl("cut"), "--probe_steps", "0"};
  args.insert(args.end(), cfg.begin(), cfg.end());
  args.insert(args.begin(), hylab_bin());
  SpawnOptions so;
  so.stderr_file = (root_ / "cut.err").string();
  so.stdout_file = (root_ / "cut.out").string();
  Process p = Process::spawn(args, so);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(2);
  while (records(jsonl("cut"), "checkpoint").empty() && std::chrono::steady_clock::now() < deadline) {
    const auto done = p.try_wait();
    ASSERT_FALSE(done) << "finished before it could be interrupted: " << done->code();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  p.signal(SIGTERM);
  const int code = p.wait().code();
  if (code == 0) GTEST_SKIP() << "the run finished before SIGTERM arrived (machine too fast)";
  ASSERT_EQ(code, 143);
  const auto before = metric(jsonl("cut"), "train_loss");
  EXPECT_LT(before.size(), 16u);

  const Result r = train("cut", {"--resume"});
  ASSERT_EQ(r.code, 0) << r.err;
  const auto got = metric(jsonl("cut"), "train_loss");
  ASSERT_EQ(got.size(), 16u);
  for (const auto& [step, v] : want) EXPECT_EQ(got.at(step), v) << "step " << step;  // bit-exact
  EXPECT_EQ(metric(jsonl("cut"), "val_bpb").at(16), metric(jsonl("straight"), "val_bpb").at(16));
  EXPECT_NE(r.out.find("resumed from"), std::string::npos);
}

// A worker names the checkpoint it relayed records up to (--resume_step): the trainer resumes
// from exactly that one, not the newest, and re-emits every later step bit-exactly; a step
// with no complete checkpoint is a usage error (exit 2).
TEST_F(TrainTest, ResumeStepResumesFromThatCheckpoint) {
  ASSERT_EQ(train("full", {"--num_iterations=12", "--checkpoint_every=4", "--eval_every=0",
                           "--checkpoint_keep_last=-1"}).code, 0);
  const auto want = metric(jsonl("full"), "train_loss");
  ASSERT_EQ(want.size(), 12u);
  ASSERT_TRUE(fs::exists(run_dir("full") + "/checkpoints/step_000008/meta.json"));
  const Result bad = run_hylab({"train", "--resume", run_dir("full"), "--resume_step", "6",
                                "--metrics_jsonl", jsonl("bad"), "--probe_steps", "0"},
                               root_);
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.err.find("--resume_step 6"), std::string::npos) << bad.err;
  const Result r = run_hylab({"train", "--resume", run_dir("full"), "--resume_step", "4",
                              "--metrics_jsonl", jsonl("again"), "--probe_steps", "0"},
                             root_);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("step_000004 (step 4)"), std::string::npos) << r.out;
  const auto got = metric(jsonl("again"), "train_loss");
  ASSERT_EQ(got.size(), 8u);
  EXPECT_EQ(got.begin()->first, std::next(want.begin(), 4)->first);
  for (const auto& [step, v] : got) EXPECT_EQ(v, want.at(step)) << "step " << step;  // bit-exact
}

TEST_F(TrainTest, TwoGlooRanksMatchOneRankAtTheSameGlobalBatch) {
  // 1 rank x 2 micro-steps vs 2 ranks x 1 micro-step: 256 tokens per step either way.
  const std::vector<std::string> cfg = {"--num_iterations=8", "--total_batch_size=256"};
  ASSERT_EQ(train("one", cfg).code, 0);
  std::vector<std::string> two = cfg;
  two.push_back("--nproc=2");
  const Result r = train("two", two);
  ASSERT_EQ(r.code, 0) << r.err;
  const auto a = metric(jsonl("one"), "train_loss"), b = metric(jsonl("two"), "train_loss");
  ASSERT_EQ(a.size(), 8u);
  ASSERT_EQ(b.size(), 8u);
  int exact = 0;
  for (const auto& [step, v] : a) {
    EXPECT_NEAR(b.at(step), v, 1e-5 * std::abs(v)) << "step " << step;
    exact += b.at(step) == v;
  }
  std::printf("2 ranks vs 1 rank: %d of 8 losses bit-identical\n", exact);
  EXPECT_NE(slurp(run_dir("two") + "/train.log").find("2 rank(s), backend gloo"), std::string::npos);

  // The same two ranks started the way torchrun/SLURM do: RANK/WORLD_SIZE and a TCPStore at
  // MASTER_ADDR:MASTER_PORT served by rank 0.
  const int port = free_tcp_port();
  std::vector<Process> ranks;
  for (int r = 0; r < 2; ++r) {
    SpawnOptions so;
    so.extra_env = {"RANK=" + std::to_string(r), "WORLD_SIZE=2", "LOCAL_RANK=" + std::to_string(r),
                    "MASTER_ADDR=127.0.0.1", "MASTER_PORT=" + std::to_string(port)};
    so.stdout_file = (root_ / ("tcp" + std::to_string(r) + ".out")).string();
    so.stderr_file = so.stdout_file + ".err";
    std::vector<std::string> args = {hylab_bin(), "train", "--config", (root_ / "tiny.yaml").string(),
                                     "--run_dir", run_dir("tcp"), "--metrics_jsonl", jsonl("tcp"),
                                     "--probe_steps", "0"};
    args.insert(args.end(), cfg.begin(), cfg.end());
    ranks.push_back(Process::spawn(args, so));
  }
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(ranks[r].wait().code(), 0) << slurp((root_ / ("tcp" + std::to_string(r) + ".out.err")).string());
  }
  const auto c = metric(jsonl("tcp"), "train_loss");
  ASSERT_EQ(c.size(), 8u);
  for (const auto& [step, v] : b) EXPECT_EQ(c.at(step), v) << "step " << step;
}

TEST_F(TrainTest, DivergenceExitsWith3) {
  // Norms and the logit softcap keep the loss finite for most bad settings (an embedding
  // learning rate of 1e37 no longer overflows within 30 steps here: the updates change sign);
  // a scalar learning rate this large throws the Mamba layer's A_log and D to where its
  // scan turns NaN within a few steps.
  // Recorded in a results database: the NaN loss of the diverged step used to fail its
  // NOT NULL column, and the run exited 1 with a SQLite error instead of 3.
  // (Without --metrics_jsonl: the run records into the database.)
  const std::string db = (root_ / "diverge.db").string();
  const Result r = run_hylab({"train", "--config", (root_ / "tiny.yaml").string(), "--run_dir",
                              run_dir("diverge"), "--probe_steps", "4", "--num_iterations=30",
                              "--scalar_lr=1e30", "--warmdown_ratio=0", "--db", db},
                             root_);
  EXPECT_EQ(r.code, 3) << r.err;
  EXPECT_NE(r.err.find("diverged"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("NOT NULL"), std::string::npos) << r.err;
  const Result res = run_hylab({"results", "--db", db, "--format", "json"}, root_);
  ASSERT_EQ(res.code, 0) << res.err;
  EXPECT_NE(res.out.find("\"diverged\""), std::string::npos) << res.out;
}

TEST_F(TrainTest, ResumingAFinishedRunKeepsItsSummary) {
  // --resume of a run that reached its last step trains nothing; it used to write a new
  // summary with tok/s 0 over the run's own.
  const std::string db = (root_ / "finished.db").string();
  const std::vector<std::string> args = {"train", "--config", (root_ / "tiny.yaml").string(),
                                         "--run_dir", run_dir("finished"), "--probe_steps", "4",
                                         "--num_iterations=4", "--db", db};
  Result r = run_hylab(args, root_);
  ASSERT_EQ(r.code, 0) << r.err;
  std::vector<std::string> resume = args;
  resume.push_back("--resume");
  r = run_hylab(resume, root_);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(slurp(run_dir("finished") + "/train.log").find("summary is kept"), std::string::npos);
  const Result res = run_hylab({"results", "--db", db, "--format", "json"}, root_);
  ASSERT_EQ(res.code, 0) << res.err;
  const json rows = json::parse(res.out);
  ASSERT_EQ(rows.size(), 1u) << res.out;
  ASSERT_TRUE(rows[0]["tok_per_s"].is_number()) << res.out;
  EXPECT_GT(rows[0]["tok_per_s"].get<double>(), 0) << res.out;
  EXPECT_EQ(rows[0]["state"], "succeeded") << res.out;
}

TEST_F(TrainTest, AValSplitSmallerThanOneMicroBatchIsEvaluatedInFewerRows) {
  const json meta = json::parse(slurp((root_ / "data" / "meta.json").string()));
  const int64_t val_tokens = meta["val_tokens"].get<int64_t>();
  const int64_t B = val_tokens / 32 + 2;  // B x 32 + 1 tokens: more than the val split holds
  ASSERT_LT(B * 32, meta["train_tokens"].get<int64_t>());
  const Result r = train("smallval", {"--num_iterations=2", "--device_batch_size=" + std::to_string(B)});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE((r.out + r.err).find("evaluating " + std::to_string(val_tokens > 32 ? (val_tokens - 1) / 32 : 0) +
                                 " rows at a time"),
            std::string::npos)
      << r.out << r.err;
  const auto bpb = metric(jsonl("smallval"), "val_bpb");
  ASSERT_EQ(bpb.count(2), 1u);
  EXPECT_TRUE(std::isfinite(bpb.at(2)) && bpb.at(2) > 0);
}

TEST_F(TrainTest, BenchTrainPrintsItsFiguresAsJson) {
  const std::string cfg = (root_ / "tiny.yaml").string();
  Result r = run_hylab({"bench", "train", "--config", cfg, "--steps", "2", "--warmup", "1"}, root_);
  ASSERT_EQ(r.code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_GT(j["tok_per_s"].get<double>(), 0);
  EXPECT_GT(j["step_ms"].get<double>(), 0);
  EXPECT_GT(j["micro_step_ms"].get<double>(), 0);
  EXPECT_GT(j["optimizer_ms"].get<double>(), 0);
  EXPECT_EQ(j["tokens_per_step"].get<int64_t>(), 4 * 32);  // tiny.yaml: 4 x 32, one micro-step
  EXPECT_EQ(j["steps"].get<int64_t>(), 2);
  EXPECT_GT(j["params_total"].get<int64_t>(), 0);
  EXPECT_TRUE(j["profile"].is_null());
  // On a CPU build the profiler has no GPU work to report (or no Kineto at all): a clear error.
  r = run_hylab({"bench", "train", "--config", cfg, "--steps", "1", "--warmup", "0", "--profile",
                 (root_ / "trace.json").string()},
                root_);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("profiler:"), std::string::npos) << r.err;
}

TEST_F(TrainTest, BadDataOrConfigExitsWith2AndSaysWhy) {
  Result r = train("nodata", {"--data=" + (root_ / "missing").string()});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("hylab data prepare"), std::string::npos) << r.err;
  // As a sweep's trial arrives at a worker: vocab_size set (from the client's data), the data
  // path relative and absent where the trainer runs. This used to fail with "filesystem
  // error: cannot copy file" (exit 1, retried like a crash); it is a config error (exit 2,
  // not retried) that names the path and the directory it is relative to.
  r = train("nodata_rel", {"--data=missing_rel_data", "--vocab_size=512"});
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("data = \"missing_rel_data\": no such directory"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("relative to " + fs::current_path().string()), std::string::npos) << r.err;
  r = train("badkey", {"--no_such_key=3"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("no_such_key"), std::string::npos) << r.err;
  r = train("badbatch", {"--total_batch_size=100"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("not a multiple of"), std::string::npos) << r.err;
}

// Starts `hylab train --nproc 2` for many steps; returns once rank 0 has logged a step.
Process start_two_ranks(const fs::path& root, const std::string& name, std::string* err_file) {
  *err_file = (root / (name + ".err")).string();
  SpawnOptions so;
  so.stderr_file = *err_file;
  so.stdout_file = (root / (name + ".out")).string();
  Process p = Process::spawn(
      {hylab_bin(), "train", "--config", (root / "tiny.yaml").string(), "--run_dir",
       (root / name).string(), "--metrics_jsonl", (root / (name + ".jsonl")).string(), "--nproc", "2",
       "--num_iterations=100000"},
      so);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(2);
  while (metric((root / (name + ".jsonl")).string(), "train_loss").empty() &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return p;
}

TEST_F(TrainTest, SigtermToTheLauncherStopsEveryRankWith143) {
  std::string err;
  Process p = start_two_ranks(root_, "term", &err);
  ASSERT_FALSE(metric(jsonl("term"), "train_loss").empty()) << slurp(err);
  const auto t0 = std::chrono::steady_clock::now();
  p.signal(SIGTERM);
  EXPECT_EQ(p.wait().code(), 143) << slurp(err);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 30);
}

TEST_F(TrainTest, ARankThatDiesTakesTheRunDown) {
  std::string err;
  Process p = start_two_ranks(root_, "die", &err);
  ASSERT_FALSE(metric(jsonl("die"), "train_loss").empty()) << slurp(err);
  // "launched 2 ranks (pids A B)": kill rank 1 hard.
  const std::string log = slurp(err);
  const size_t at = log.find("(pids ");
  ASSERT_NE(at, std::string::npos) << log;
  std::istringstream pids(log.substr(at + 6));
  pid_t rank0 = 0, rank1 = 0;
  pids >> rank0 >> rank1;
  ASSERT_GT(rank1, 0);
  const auto t0 = std::chrono::steady_clock::now();
  ::kill(rank1, SIGKILL);
  EXPECT_EQ(p.wait().code(), 128 + SIGKILL);  // the failing rank's status
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 60);
  EXPECT_NE(::kill(rank0, 0), 0) << "rank 0 outlived the run";
  EXPECT_NE(slurp(err).find("rank 1 exited with status 137"), std::string::npos) << slurp(err);
}

TEST_F(TrainTest, ARankThatNeverJoinsFailsTheRunWithinTheDeadline) {
  // Rank 0 of 2, started alone: rank 1 never arrives.
  const auto t0 = std::chrono::steady_clock::now();
  const Result r = train("alone", {"--num_iterations=2"},
                         {"RANK=0", "WORLD_SIZE=2", "LOCAL_RANK=0", "HYLAB_DIST_INIT_TIMEOUT_S=3",
                          "HYLAB_RENDEZVOUS_FILE=" + (root_ / "alone.store").string()});
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("only 1 of 2 ranks joined within 3 s"), std::string::npos) << r.err;
  EXPECT_LT(s, 60);
}

}  // namespace
}  // namespace hylab::trainer
