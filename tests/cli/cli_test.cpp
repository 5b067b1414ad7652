// `hylab` conventions, each checked on the built executable: usage errors exit 2 with a
// "did you mean", `config keys`, int64 as JSON numbers, help that lists an input once,
// train flags that are config keys, sweeps that set any key, results that refuse missing
// ids and honour --format, HYLAB_INSECURE.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "common/run_config.h"
#include "store/schema.h"
#include "store/store.h"

namespace hylab {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct Result {
  int status = -1;
  std::string out, err;
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* b = std::getenv("HYLAB_BIN");
    if (b == nullptr || !fs::exists(b)) GTEST_SKIP() << "HYLAB_BIN not set (run through ctest)";
    bin_ = b;
    dir_ = fs::temp_directory_path() /
           ("hylab_cli_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  // Runs `hylab ARGS` (a shell word list, already quoted where needed) with `env` prefixed.
  Result hylab(const std::string& args, const std::string& env = "") {
    const fs::path out = dir_ / "stdout", err = dir_ / "stderr";
    const std::string cmd =
        env + " '" + bin_ + "' " + args + " >'" + out.string() + "' 2>'" + err.string() + "'";
    const int st = std::system(cmd.c_str());
    Result r;
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    r.out = slurp(out);
    r.err = slurp(err);
    return r;
  }

  std::string bin_;
  fs::path dir_;
};

TEST_F(CliTest, UsageErrorsExit2AndSuggestTheNearestName) {
  struct Case {
    const char* args;
    const char* hint;
  } cases[] = {
      {"train --num_iteration=5", "did you mean --num_iterations?"},
      {"train --devise cpu", "did you mean --device?"},
      {"config show --depht=4", "did you mean --depth?"},
      {"results --sortt val_bpb", "did you mean --sort?"},
      {"resuls", "did you mean results?"},
      {"sweep sumbit x.yaml", "did you mean submit?"},
      {"workers --timeout-msec 5", "did you mean --timeout_ms?"},
  };
  for (const auto& c : cases) {
    const Result r = hylab(c.args);
    EXPECT_EQ(r.status, 2) << c.args << "\n" << r.err;
    EXPECT_NE(r.err.find(c.hint), std::string::npos) << c.args << "\n" << r.err;
  }
  // CLI11's own parse errors (104-109 before) exit 2 as well; --help exits 0.
  EXPECT_EQ(hylab("sweep show").status, 2);  // a required argument missing
  EXPECT_EQ(hylab("results --sweep notanumber").status, 2);
  EXPECT_EQ(hylab("results --format").status, 2);
  EXPECT_EQ(hylab("--help").status, 0);
  EXPECT_EQ(hylab("train --help").status, 0);
  // Nothing close: no guess.
  const Result far = hylab("results --zzzzzzzz");
  EXPECT_EQ(far.status, 2);
  EXPECT_EQ(far.err.find("did you mean"), std::string::npos) << far.err;
}

TEST_F(CliTest, ConfigKeysListsEveryKeyWithDefaultAndHelp) {
  const Result keys = hylab("config keys --format json");
  ASSERT_EQ(keys.status, 0) << keys.err;
  const json list = json::parse(keys.out);
  const Result show = hylab("config show");
  ASSERT_EQ(show.status, 0) << show.err;
  const json resolved = json::parse(show.out);  // every field set
  std::set<std::string> listed;
  for (const auto& k : list) {
    listed.insert(k["key"].get<std::string>());
    EXPECT_FALSE(k["help"].get<std::string>().empty()) << k.dump();
  }
  for (auto it = resolved.begin(); it != resolved.end(); ++it)
    EXPECT_TRUE(listed.count(it.key())) << it.key();
  EXPECT_EQ(listed.size(), resolved.size());
  for (const auto& k : list) {
    if (k["key"] == "num_iterations") {
      EXPECT_EQ(k["default"], "-1");
      EXPECT_NE(k["help"].get<std::string>().find("horizon"), std::string::npos);
    }
  }
  const Result table = hylab("config keys");
  EXPECT_EQ(table.status, 0);
  EXPECT_NE(table.out.find("mamba_d_state"), std::string::npos);
}

TEST_F(CliTest, ConfigShowPrintsInt64AsJsonNumbers) {
  const Result r = hylab("config show --total_batch_size=1048576 --seed=7");
  ASSERT_EQ(r.status, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_TRUE(j["total_batch_size"].is_number_integer()) << r.out;
  EXPECT_EQ(j["total_batch_size"], 1048576);
  EXPECT_TRUE(j["seed"].is_number_integer());
  EXPECT_TRUE(j["num_iterations"].is_number_integer());
  EXPECT_TRUE(j["eval_tokens"].is_number_integer());
}

TEST_F(CliTest, DataInfoHelpShowsItsInputOnce) {
  const Result r = hylab("data info --help");
  ASSERT_EQ(r.status, 0);
  size_t n = 0;
  for (size_t at = r.out.find("Data folder"); at != std::string::npos;
       at = r.out.find("Data folder", at + 1))
    ++n;
  EXPECT_EQ(n, 1u) << r.out;
  // Both spellings still work (and a missing folder is named).
  for (const char* args : {"data info nope_dir", "data info --data nope_dir"}) {
    const Result e = hylab(args);
    EXPECT_NE(e.status, 0);
    EXPECT_NE(e.err.find("nope_dir"), std::string::npos) << e.err;
  }
  EXPECT_EQ(hylab("data info").status, 2);
  const Result show = hylab("config show --help");
  size_t m = 0;
  for (size_t at = show.out.find("Config file"); at != std::string::npos;
       at = show.out.find("Config file", at + 1))
    ++m;
  EXPECT_EQ(m, 1u) << show.out;
}

// Every `hylab train` flag is process plumbing or a config key: anything that changes what a
// trial computes must be a key, or a sweep cannot set it (probe_steps was a train flag).
TEST_F(CliTest, TrainFlagsAreConfigKeysOrPlumbing) {
  const Result help = hylab("train --help");
  ASSERT_EQ(help.status, 0);
  const std::set<std::string> plumbing = {"help",          "help_all", "config", "run_dir",
                                          "metrics_jsonl", "resume",   "nproc",  "db",
                                          "resume_step"};
  // Option lines start with their names: "  --run_dir,--run-dir TEXT  Run folder ...".
  const std::regex line_re("^\\s+((--[a-z][a-z0-9_-]*,?)+)");
  const std::regex flag_re("--([a-z][a-z0-9_-]*)");
  std::set<std::string> seen;
  std::istringstream lines(help.out);
  for (std::string line; std::getline(lines, line);) {
    std::smatch m;
    if (!std::regex_search(line, m, line_re)) continue;
    const std::string names = m[1];
    for (std::sregex_iterator it(names.begin(), names.end(), flag_re), end; it != end; ++it) {
      std::string name = (*it)[1];
      std::replace(name.begin(), name.end(), '-', '_');
      seen.insert(name);
      EXPECT_TRUE(plumbing.count(name) || is_config_key(name))
          << "--" << name
          << " changes a trial but is not a config key: add it to proto/config.proto";
    }
  }
  EXPECT_TRUE(seen.count("run_dir")) << help.out;
  EXPECT_FALSE(seen.count("probe_steps")) << "probe_steps is a config key now";
}

// A sweep can vary any key a trial uses, probe_steps included.
TEST_F(CliTest, SweepCanSetEveryKeyATrialUses) {
  std::ofstream(dir_ / "base.yaml") << "depth: 2\nn_embd: 64\nn_head: 1\nmax_seq_len: 32\n";
  std::ofstream(dir_ / "sweep.yaml") << "name: probes\nbase: " << (dir_ / "base.yaml").string()
                                     << "\noverrides: {num_iterations: 5}\n"
                                     << "parameters:\n  probe_steps: {values: [0, 8]}\n";
  const Result r =
      hylab("sweep submit --dry_run --format json '" + (dir_ / "sweep.yaml").string() + "'");
  ASSERT_EQ(r.status, 0) << r.err;
  const json trials = json::parse(r.out);
  ASSERT_EQ(trials.size(), 2u);
  EXPECT_EQ(trials[0]["config"]["probe_steps"], 0);
  EXPECT_EQ(trials[1]["config"]["probe_steps"], 8);
  EXPECT_TRUE(trials[0]["config"]["num_iterations"].is_number_integer());  // int64 as a number
  // A mistyped parameter name gets a suggestion.
  std::ofstream(dir_ / "typo.yaml") << "name: t\nbase: " << (dir_ / "base.yaml").string()
                                    << "\nparameters:\n  probe_step: {values: [0]}\n";
  const Result t = hylab("sweep submit --dry_run '" + (dir_ / "typo.yaml").string() + "'");
  EXPECT_NE(t.status, 0);
  EXPECT_NE(t.err.find("did you mean \"probe_steps\"?"), std::string::npos) << t.err;
}

// Every sweep file we ship (the studies and the published-hybrid presets) loads and
// `hylab sweep submit --dry_run`s cleanly from a checkout: configs/ and sweeps/ as shipped, a
// prepared-data stand-in (meta.json with the default corpus's vocabulary) at data/default.
TEST_F(CliTest, EveryShippedSweepDryRuns) {
  const char* src = std::getenv("HYLAB_SOURCE_DIR");
  const fs::path root = src ? src : fs::current_path();
  ASSERT_TRUE(fs::exists(root / "sweeps")) << root;
  fs::create_directory_symlink(root / "sweeps", dir_ / "sweeps");
  fs::create_directory_symlink(root / "configs", dir_ / "configs");
  fs::create_directories(dir_ / "data" / "default");
  std::ofstream(dir_ / "data" / "default" / "meta.json") << R"({"vocab_size": 8192})";
  int files = 0;
  std::map<std::string, std::set<std::string>> patterns;  // file -> its trials' block_pattern
  for (const auto& e : fs::directory_iterator(root / "sweeps")) {
    if (e.path().extension() != ".yaml") continue;
    ++files;
    const std::string rel = "sweeps/" + e.path().filename().string();
    const Result r = hylab("sweep submit --dry_run --format json '" + rel + "'", "cd '" + dir_.string() + "' &&");
    ASSERT_EQ(r.status, 0) << rel << ": " << r.err;
    const json trials = json::parse(r.out, nullptr, false);
    ASSERT_TRUE(trials.is_array()) << rel << ": " << r.out;
    EXPECT_GE(trials.size(), 1u) << rel;
    for (const auto& t : trials) {
      EXPECT_EQ(t["config"]["vocab_size"], 8192) << rel;
      if (t["params"].contains("block_pattern")) {
        patterns[e.path().filename().string()].insert(t["params"]["block_pattern"].get<std::string>());
      }
    }
  }
  EXPECT_GE(files, 12);
  // The presets' layouts, as their comments describe them.
  auto patterns_of = [&](const std::string& file) { return patterns[file]; };
  using Set = std::set<std::string>;
  EXPECT_EQ(patterns_of("hybrid_nemotron_h_d12.yaml"), (Set{"M2*3,T,M2*5,T,M2*2"}));
  EXPECT_EQ(patterns_of("hybrid_nemotron_h_d20.yaml"), (Set{"M2*3,T,M2*6,T,M2*5,T,M2*3"}));
  EXPECT_EQ(patterns_of("hybrid_jamba_d12.yaml"), (Set{"M*4,T,M*7"}));
  EXPECT_EQ(patterns_of("hybrid_samba_d12.yaml"), (Set{"T,M*11", "M*5,T,M*6", "M*11,T"}));
  EXPECT_EQ(patterns_of("hybrid_qwen3_next_d12.yaml"), (Set{"M*3,T,M*3,T,M*3,T"}));
  EXPECT_EQ(patterns_of("hybrid_qwen3_next_d20.yaml"), (Set{"M*3,T,M*3,T,M*3,T,M*3,T,M*3,T"}));
}

TEST_F(CliTest, ResultsRefusesMissingIdsAndHonoursFormatForCurves) {
  const std::string db = (dir_ / "hylab.db").string();
  int64_t trial_id = 0;
  {
    auto store = store::Store::open(db);
    RunConfig c;
    c.set_depth(2);
    c.set_max_seq_len(32);
    store::NewTrial t;
    t.resolved = resolve_config(c);
    t.params = {{"depth", "2"}};
    store::SweepRow s;
    s.name = "one";
    store::Tx tx(store->db());
    const int64_t sweep_id = store->create_sweep(s, {t});
    trial_id = store->trials_of(sweep_id)[0].trial_id;
    store->start_attempt(trial_id, 1, "w1", false);
    store::put_metrics(store->db(), trial_id, 1,
                       {{0, "train_loss", 5.0, 1}, {1, "train_loss", 4.0, 2}});
    tx.commit();
  }
  const Result missing = hylab("results --db '" + db + "' --sweep 99");
  EXPECT_EQ(missing.status, 1);
  EXPECT_NE(missing.err.find("sweep_id 99 does not exist"), std::string::npos) << missing.err;
  EXPECT_EQ(missing.out.find("(no rows)"), std::string::npos);
  const Result no_trial = hylab("results --db '" + db + "' --curves 424242");
  EXPECT_EQ(no_trial.status, 1);
  EXPECT_NE(no_trial.err.find("trial_id 424242 does not exist"), std::string::npos) << no_trial.err;

  const std::string id = std::to_string(trial_id);
  const Result csv = hylab("results --db '" + db + "' --curves " + id);  // data: CSV by default
  ASSERT_EQ(csv.status, 0) << csv.err;
  EXPECT_EQ(csv.out.rfind("trial_id,step,train_loss\n", 0), 0u) << csv.out;
  const Result table = hylab("results --db '" + db + "' --curves " + id + " --format table");
  ASSERT_EQ(table.status, 0) << table.err;
  EXPECT_EQ(table.out.find("trial_id,step"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("train_loss"), std::string::npos) << table.out;
  const Result js = hylab("results --db '" + db + "' --curves " + id + " --format json");
  ASSERT_EQ(js.status, 0) << js.err;
  EXPECT_EQ(json::parse(js.out).size(), 2u);
  // The sweep that exists still lists.
  EXPECT_EQ(hylab("results --db '" + db + "' --sweep 1").status, 0);
}

// HYLAB_INSECURE=1 stands in for --insecure on every client command.
TEST_F(CliTest, HylabInsecureReplacesTheFlag) {
  const std::string args = "workers --coordinator tcp://127.0.0.1:9 --timeout_ms 300";
  const Result keys = hylab(args, "env -u HYLAB_KEY -u HYLAB_SERVER_KEY -u HYLAB_INSECURE");
  EXPECT_EQ(keys.status, 1);
  EXPECT_NE(keys.err.find("no key pair"), std::string::npos) << keys.err;
  const Result plain = hylab(args, "env -u HYLAB_KEY -u HYLAB_SERVER_KEY HYLAB_INSECURE=1");
  EXPECT_EQ(plain.status, 1);
  EXPECT_NE(plain.err.find("did not answer"), std::string::npos)
      << plain.err;  // it tried, in plain TCP
  const Result off = hylab(args, "env -u HYLAB_KEY -u HYLAB_SERVER_KEY HYLAB_INSECURE=0");
  EXPECT_NE(off.err.find("no key pair"), std::string::npos) << off.err;
}

// An insecure coordinator listens on loopback only unless told otherwise.
TEST_F(CliTest, InsecureCoordinatorRefusesAnyInterfaceBind) {
  const std::string db = (dir_ / "insecure.db").string();
  const Result r = hylab("coordinator --insecure --bind 'tcp://*:0' --db '" + db + "'");
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("--insecure_any_interface"), std::string::npos) << r.err;
  const Result flag = hylab("coordinator --insecure_any_interface --db '" + db + "' --key x.key --allow x");
  EXPECT_NE(flag.err.find("only with --insecure"), std::string::npos) << flag.err;
}

}  // namespace
}  // namespace hylab
