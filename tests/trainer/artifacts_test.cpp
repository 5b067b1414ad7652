// Equal budgets, provenance and artifacts end to end through the real `hylab` binary on tiny
// models: checkpoint retention (and resuming from what it kept), --target_flops giving two
// patterns the same FLOPs within one step, the provenance in the summary, and for a local
// run recorded in SQLite: `hylab results` (run_dir, disk use, budget, provenance),
// `hylab results --trial`, `hylab logs` and `hylab --version`.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "tests/trainer/test_text.h"
#include "trainer/retention.h"
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

struct Result {
  int code = -1;
  std::string out, err;
};

std::vector<json> records(const std::string& jsonl, const std::string& type) {
  std::vector<json> out;
  std::istringstream in(slurp(jsonl));
  for (std::string line; std::getline(in, line);) {
    json j = json::parse(line);
    if (j["type"] == type) out.push_back(j);
  }
  return out;
}

class ArtifactsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (hylab_bin().empty()) return;
    std::string tmpl = (fs::temp_directory_path() / "hylab_artifacts_test_XXXXXX").string();
    root_ = ::mkdtemp(tmpl.data());
    std::ofstream(root_ / "corpus.txt") << testing::generated_text(300, 11);
    const Result r =
        run({"data", "prepare", "--input", (root_ / "corpus.txt").string(), "--out",
             (root_ / "data").string(), "--vocab_size", "512", "--val_fraction", "0.1"});
    ASSERT_EQ(r.code, 0) << r.err;
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
  static Result run(const std::vector<std::string>& args) {
    static int n = 0;
    const std::string out = (root_ / ("out" + std::to_string(++n))).string();
    std::vector<std::string> argv = {hylab_bin()};
    argv.insert(argv.end(), args.begin(), args.end());
    SpawnOptions opt;
    opt.stdout_file = out;
    opt.stderr_file = out + ".err";
    Process p = Process::spawn(argv, opt);
    Result r;
    r.code = p.wait().code();
    r.out = slurp(out);
    r.err = slurp(out + ".err");
    return r;
  }
  // `hylab train` on the tiny config, records to <name>.jsonl (as under a worker).
  static Result train(const std::string& name, std::vector<std::string> extra) {
    std::vector<std::string> args = {"train",     "--config",      (root_ / "tiny.yaml").string(),
                                     "--run_dir", dir(name),       "--metrics_jsonl",
                                     jsonl(name), "--probe_steps", "0"};
    args.insert(args.end(), extra.begin(), extra.end());
    return run(args);
  }
  static std::string dir(const std::string& name) { return (root_ / name).string(); }
  static std::string jsonl(const std::string& name) { return (root_ / (name + ".jsonl")).string(); }
  static std::set<int64_t> kept(const std::string& name) {
    std::set<int64_t> steps;
    for (const auto& c : list_checkpoints(dir(name))) steps.insert(c.step);
    return steps;
  }
  static fs::path root_;
};
fs::path ArtifactsTest::root_;

TEST_F(ArtifactsTest, RetentionKeepsTheLastAndTheBestAndTheKeptOneResumes) {
  const std::vector<std::string> every2 = {"--num_iterations=6", "--checkpoint_every=2",
                                           "--eval_every=2"};
  std::vector<std::string> args = every2;
  args.push_back("--checkpoint_keep_last=-1");
  ASSERT_EQ(train("all", args).code, 0);
  EXPECT_EQ(kept("all"), (std::set<int64_t>{2, 4, 6}));  // -1 keeps every checkpoint

  const Result r = train("keep", every2);  // the default: checkpoint_keep {last: 1, best: 1}
  ASSERT_EQ(r.code, 0) << r.err;
  std::map<int64_t, double> bpb;
  for (const auto& m : records(jsonl("keep"), "metric")) {
    if (m["name"] == "val_bpb") bpb[m["step"].get<int64_t>()] = m["value"].get<double>();
  }
  int64_t best = 2;
  for (int64_t s : {4, 6}) {
    if (bpb.at(s) <= bpb.at(best)) best = s;
  }
  EXPECT_EQ(kept("keep"), (std::set<int64_t>{best, 6}));
  EXPECT_NE(slurp(dir("keep") + "/train.log").find("deleted checkpoint"), std::string::npos);
  EXPECT_EQ(records(jsonl("keep"), "checkpoint").size(), 3u);  // every checkpoint was announced

  // The newest kept checkpoint resumes; retention goes on in the resumed run.
  const Result resumed =
      train("keep", {"--resume", "--num_iterations=8", "--checkpoint_keep", "{last: 1, best: 0}"});
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  EXPECT_NE(resumed.out.find("(step 6)"), std::string::npos) << resumed.out;
  EXPECT_EQ(kept("keep"), (std::set<int64_t>{8}));
  const auto summary = records(jsonl("keep"), "summary");
  ASSERT_EQ(summary.size(), 2u);
  EXPECT_EQ(summary[1]["steps"], 8);
  // disk_bytes: the run folder after retention, one checkpoint's weights and more.
  int64_t ckpt_bytes = directory_bytes(dir("keep") + "/checkpoints/step_000008");
  EXPECT_GT(summary[1]["disk_bytes"].get<int64_t>(), ckpt_bytes);
  EXPECT_LT(summary[1]["disk_bytes"].get<int64_t>(), directory_bytes(dir("keep")) + 1);
}

TEST_F(ArtifactsTest, TargetFlopsGivesTwoPatternsTheSameFlopsWithinOneStep) {
  const double budget = 8e8;
  std::map<std::string, json> summary;
  for (const std::string pattern : {"TT", "MM"}) {
    const Result r =
        train("flops_" + pattern, {"--target_flops=8e8", "--block_pattern=" + pattern});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("(target_flops)"), std::string::npos) << r.out;
    const auto s = records(jsonl("flops_" + pattern), "summary");
    ASSERT_EQ(s.size(), 1u);
    summary[pattern] = s[0];
  }
  const double tokens_per_step = 4 * 32;  // device_batch_size x max_seq_len, one rank
  double flops[2], per_step[2];
  int i = 0;
  for (const auto& [pattern, s] : summary) {
    per_step[i] = s["flops_per_token"].get<double>() * tokens_per_step;
    flops[i] = per_step[i] * s["steps"].get<double>();
    EXPECT_LE(std::fabs(flops[i] - budget), 0.5 * per_step[i]) << pattern;
    ++i;
  }
  EXPECT_LE(std::fabs(flops[0] - flops[1]), std::max(per_step[0], per_step[1]));
  EXPECT_NE(summary["TT"]["steps"], summary["MM"]["steps"]);  // each from its own FLOPs per token

  // Two horizons at once are a config error (exit 2) naming both.
  const Result both = train("both", {"--target_flops=8e8", "--num_iterations=3"});
  EXPECT_EQ(both.code, 2);
  EXPECT_NE(both.err.find("num_iterations = 3 and target_flops = 8e+08 both set the horizon"),
            std::string::npos)
      << both.err;
}

TEST_F(ArtifactsTest, ALocalRunShowsProvenanceRunDirDiskAndLogs) {
  const Result version = run({"--version"});
  ASSERT_EQ(version.code, 0) << version.err;
  EXPECT_EQ(version.out.rfind("hylab 0.1.0 (commit ", 0), 0u) << version.out;
  EXPECT_NE(version.out.find("LibTorch "), std::string::npos) << version.out;
  const std::string commit = version.out.substr(20, version.out.find(')') - 20);
  EXPECT_FALSE(commit.empty());

  const std::string db = (root_ / "local.db").string();
  const Result r = run({"train", "--config", (root_ / "tiny.yaml").string(), "--run_dir",
                        dir("local"), "--db", db, "--probe_steps", "0", "--num_iterations=2"});
  ASSERT_EQ(r.code, 0) << r.err;
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);

  const Result res = run({"results", "--db", db, "--format", "json"});
  ASSERT_EQ(res.code, 0) << res.err;
  const json rows = json::parse(res.out);
  ASSERT_EQ(rows.size(), 1u);
  const json& row = rows[0];
  EXPECT_EQ(row["run_dir"], fs::canonical(dir("local")).string());
  EXPECT_GT(row["disk_bytes"].get<int64_t>(), 0);
  EXPECT_EQ(row["budget"], "steps 2");
  EXPECT_GT(row["train_flops"].get<double>(), 0);
  EXPECT_EQ(row["hylab_commit"], commit);
  EXPECT_EQ(row["hylab_version"], "0.1.0");
  EXPECT_EQ(row["gpu_name"], "cpu");
  EXPECT_EQ(row["cuda_version"], "none");  // this CPU LibTorch
  EXPECT_EQ(row["host"], host);
  EXPECT_FALSE(row["torch_version"].get<std::string>().empty());
  EXPECT_EQ(json::parse(slurp(dir("local") + "/provenance.json"))["hylab_commit"], commit);

  const int64_t trial_id = row["trial_id"].get<int64_t>();
  const Result view = run({"results", "--db", db, "--trial", std::to_string(trial_id)});
  ASSERT_EQ(view.code, 0) << view.err;
  EXPECT_NE(view.out.find("hylab_commit"), std::string::npos) << view.out;
  EXPECT_NE(view.out.find(commit), std::string::npos) << view.out;
  const Result table = run({"results", "--db", db});
  EXPECT_EQ(table.out.find("hylab_commit"), std::string::npos)
      << "provenance stays out of the text table";
  EXPECT_NE(table.out.find("run_dir"), std::string::npos) << table.out;

  const Result logs = run({"logs", std::to_string(trial_id), "--db", db});
  ASSERT_EQ(logs.code, 0) << logs.err;
  EXPECT_EQ(logs.out, slurp(dir("local") + "/train.log"));
  EXPECT_NE(logs.out.find("step 00001/00002"), std::string::npos) << logs.out;
  const Result unknown = run({"logs", "4242", "--db", db});
  EXPECT_EQ(unknown.code, 1);
  EXPECT_NE(unknown.err.find("no trial with trial_id 4242 in " + db), std::string::npos)
      << unknown.err;
}

}  // namespace
}  // namespace hylab::trainer
