// End to end, with real processes: the built `hylab` (env HYLAB_BIN) as coordinator, workers,
// clients and trainer; real sockets on 127.0.0.1 (free ports); a real SQLite file; real tiny
// training runs on CPU on data this test prepares with `hylab data prepare`.
//
// Workers share one work_dir (as they would share a filesystem on a cluster), so a trial
// retried on another worker resumes from the checkpoint of the failed attempt.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "store/db.h"

namespace hylab::e2e {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace std::chrono_literals;

// HYLAB_E2E_TIME_SCALE (a whole number, default 1) stretches every deadline, heartbeat and
// pause of this suite, for runs under a sanitizer (ThreadSanitizer slows our code 5-15x, and
// the daemons would then miss heartbeats and the tests their deadlines; docs/RELIABILITY.md).
// Above 1 it also scales the trainers' rendezvous deadline (HYLAB_DIST_INIT_TIMEOUT_S, 120 s
// by default) for the two-node test, unless that variable is set already.
//
// HYLAB_E2E_TRAINER_BIN (default: HYLAB_BIN) is the `hylab` the trainers run: the workers
// get it as --hylab_bin, `hylab local` too, and the test's own `hylab train` and `hylab data
// prepare` runs use it. Under ThreadSanitizer, HYLAB_BIN is the TSan build (coordinator,
// workers, clients, `hylab local`) and this a normal build: the daemons are what the run is
// for, and LibTorch trainers under TSan are too slow to finish.
//
// A failing test prints the tail of its daemons' logs and of every trial's trainer log
// (attempt-N.log); HYLAB_E2E_KEEP=1 keeps the whole suite folder (printed at the end).
int time_scale() {
  static const int scale = [] {
    const char* v = std::getenv("HYLAB_E2E_TIME_SCALE");
    const int s = v ? std::atoi(v) : 1;
    return s >= 1 ? s : 1;
  }();
  return scale;
}

constexpr int kHeartbeatMs = 200;
std::string heartbeat_ms() { return std::to_string(kHeartbeatMs * time_scale()); }

std::string hylab_bin() {
  const char* b = std::getenv("HYLAB_BIN");
  return b ? b : "";
}

std::string trainer_bin() {
  const char* b = std::getenv("HYLAB_E2E_TRAINER_BIN");
  return b && *b ? b : hylab_bin();
}

// Small English-like text, deterministic, ASCII.
std::string corpus(int docs) {
  static const char* kWords[] = {"the", "model", "learns", "from", "text", "and", "every", "layer",
                                 "state", "space", "attention", "mamba", "token", "loss", "falls",
                                 "when", "training", "runs", "on", "small", "machines", "we",
                                 "measure", "bits", "per", "byte", "river", "stone", "garden",
                                 "light", "water", "music", "city", "people", "said", "would"};
  uint64_t s = 88172645463325252ull;
  auto next = [&s] { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return s; };
  std::string out;
  for (int d = 0; d < docs; ++d) {
    for (int k = 0, n = 3 + static_cast<int>(next() % 4); k < n; ++k) {
      for (int w = 0, len = 5 + static_cast<int>(next() % 8); w < len; ++w) {
        out += kWords[next() % (sizeof(kWords) / sizeof(kWords[0]))];
        out += w + 1 < len ? " " : ". ";
      }
    }
    out += "\n\n";
  }
  return out;
}

struct Proc {
  std::string name;
  pid_t pid = -1;
  std::string log;
};

// A daemon: its own process group, killed if the test dies, output to a log file.
Proc spawn(const std::string& name, const std::vector<std::string>& args, const std::string& log) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(fd);
  return {name, pid, log};
}

bool process_alive(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string a, b, state;
  if (!(stat >> a >> b >> state)) return false;
  return state != "Z" && state != "X";
}

// Runs a command, returns (exit status, stdout).
std::pair<int, std::string> run(const std::vector<std::string>& args) {
  std::string cmd;
  for (const auto& a : args) cmd += "'" + a + "' ";
  FILE* p = ::popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

// Trainer processes whose command line mentions `needle` (a run directory: give the test's own
// work_dir in it, or trainers of anything else running on the machine match too).
std::vector<pid_t> trainers_in(const std::string& needle) {
  std::vector<pid_t> out;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream f(e.path() / "cmdline");
    std::string cmdline((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    for (char& c : cmdline) c = c == '\0' ? ' ' : c;
    if (cmdline.find(" train ") != std::string::npos && cmdline.find(needle) != std::string::npos &&
        process_alive(std::stoi(name))) {
      out.push_back(std::stoi(name));
    }
  }
  return out;
}

bool wait_until(const std::function<bool()>& f, int timeout_s) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s * time_scale());
  while (std::chrono::steady_clock::now() < deadline) {
    if (f()) return true;
    std::this_thread::sleep_for(250ms);
  }
  return f();
}

class DaemonsE2E : public ::testing::Test {
 protected:
  static fs::path suite_dir_;
  static std::string data_dir_;
  static std::string skip_reason_;

  static void SetUpTestSuite() {
    if (hylab_bin().empty() || !fs::exists(hylab_bin())) {
      skip_reason_ = "HYLAB_BIN is not set to the built hylab";
      return;
    }
    if (!fs::exists(trainer_bin())) {
      ADD_FAILURE() << "HYLAB_E2E_TRAINER_BIN=" << trainer_bin() << " does not exist";  // fail, not skip
      skip_reason_ = "no trainer executable";
      return;
    }
    if (time_scale() > 1) {
      ::setenv("HYLAB_DIST_INIT_TIMEOUT_S", std::to_string(120 * time_scale()).c_str(), /*overwrite=*/0);
    }
    const auto train_help = run({trainer_bin(), "train", "--help"});
    if (train_help.first != 0 || train_help.second.find("--metrics_jsonl") == std::string::npos) {
      skip_reason_ = "this hylab has no `train` command (the trainer is not built)";
      return;
    }
    suite_dir_ = fs::temp_directory_path() / ("hylab_e2e_" + std::to_string(getpid()));
    fs::remove_all(suite_dir_);
    fs::create_directories(suite_dir_ / "text");
    std::ofstream(suite_dir_ / "text" / "corpus.txt") << corpus(1500);
    data_dir_ = (suite_dir_ / "data").string();
    auto [status, out] = run({trainer_bin(), "data", "prepare", "--input", (suite_dir_ / "text").string(),
                              "--out", data_dir_, "--vocab_size", "320", "--threads", "1"});
    if (status != 0) skip_reason_ = "hylab data prepare failed: " + out;
  }
  static void TearDownTestSuite() {
    if (suite_dir_.empty()) return;
    if (std::getenv("HYLAB_E2E_KEEP")) {
      std::printf("HYLAB_E2E_KEEP: the suite's folders and logs are in %s\n", suite_dir_.c_str());
    } else {
      fs::remove_all(suite_dir_);
    }
  }

  void SetUp() override {
    if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_;
    dir_ = suite_dir_ / ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::create_directories(dir_);
    db_ = (dir_ / "hylab.db").string();
    work_ = (dir_ / "work").string();
  }
  void TearDown() override {
    for (auto& p : procs_) {
      if (p.pid > 0) {
        ::kill(-p.pid, SIGKILL);
        ::kill(p.pid, SIGKILL);
        int st;
        ::waitpid(p.pid, &st, 0);
      }
    }
    if (HasFailure()) {
      auto print_tail = [](const std::string& what, const fs::path& log) {
        std::ifstream f(log);
        std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
        std::printf("---- %s log (last 3000 bytes) ----\n%s\n", what.c_str(),
                    s.substr(s.size() > 3000 ? s.size() - 3000 : 0).c_str());
      };
      for (const auto& p : procs_) print_tail(p.name, p.log);
      // The trainers' own logs (one per attempt, in each worker's work_dir under this test's
      // folder): a trial that failed says why only there.
      std::error_code ec;
      for (auto it = fs::recursive_directory_iterator(dir_, ec); !ec && it != fs::recursive_directory_iterator();
           it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (name.rfind("attempt-", 0) == 0 && it->path().extension() == ".log") {
          print_tail("trainer " + it->path().string(), it->path());
        }
      }
    }
  }

  // A sweep file over a tiny CPU model; one trial per block pattern.
  std::string sweep_file(const std::vector<std::string>& patterns, int iterations, int max_retries = 2) {
    const fs::path base = dir_ / "base.yaml";
    std::ofstream(base) << "depth: 2\nn_embd: 64\nn_head: 1\nn_kv_head: 1\nmax_seq_len: 32\n"
                        << "device_batch_size: 4\ntotal_batch_size: -1\ndevice: cpu\n"
                        << "eval_every: " << iterations / 2 << "\neval_tokens: 2048\nsample_every: 0\n"
                        << "checkpoint_every: 10\nlog_every: 1\ndata: " << data_dir_ << "\n";
    std::string values;
    for (const auto& p : patterns) values += (values.empty() ? "\"" : ", \"") + p + "\"";
    const fs::path sweep = dir_ / "sweep.yaml";
    std::ofstream(sweep) << "name: e2e\nbase: " << base.string() << "\nmax_retries: " << max_retries
                         << "\noverrides: {num_iterations: " << iterations << "}\n"
                         << "parameters:\n  block_pattern: {values: [" << values << "]}\n";
    return sweep.string();
  }

  Proc& start_coordinator(const std::string& bind = "tcp://127.0.0.1:*") {
    const std::string ep_file = (dir_ / "endpoint").string();
    fs::remove(ep_file);
    procs_.push_back(spawn("coordinator",
                           {hylab_bin(), "coordinator", "--db", db_, "--bind", bind, "--endpoint_file",
                            ep_file, "--insecure", "--heartbeat_ms", heartbeat_ms()},
                           (dir_ / "coordinator.log").string()));
    EXPECT_TRUE(wait_until([&] { return fs::exists(ep_file); }, 30)) << "the coordinator did not start";
    std::ifstream(ep_file) >> endpoint_;
    return procs_.back();
  }

  Proc& start_worker(const std::string& name, const std::string& work_dir = "") {
    procs_.push_back(spawn(name,
                           {hylab_bin(), "worker", "--coordinator", endpoint_, "--insecure", "--work_dir",
                            work_dir.empty() ? work_ : work_dir, "--gpus", "none", "--slots", "1", "--heartbeat_ms",
                            heartbeat_ms(), "--kill_grace_ms", "3000", "--worker_id", name, "--hylab_bin",
                            trainer_bin()},
                           (dir_ / (name + ".log")).string()));
    return procs_.back();
  }

  json cli_json(std::vector<std::string> args) {
    args.insert(args.begin(), hylab_bin());
    for (const char* a : {"--coordinator", endpoint_.c_str(), "--insecure", "--format", "json"}) args.push_back(a);
    auto [status, out] = run(args);
    EXPECT_EQ(status, 0) << out;
    return json::parse(out, nullptr, false);
  }

  int64_t submit(const std::string& sweep) {
    const json r = cli_json({"sweep", "submit", sweep});
    return r.at("sweep_id").get<int64_t>();
  }

  // Polled from the database: each `hylab` client process loads LibTorch at start, too
  // heavy to run several times a second next to the trainers on a 2-core machine.
  std::string sweep_state(int64_t id) {
    return query("SELECT state FROM sweeps WHERE sweep_id=" + std::to_string(id));
  }

  std::string query(const std::string& sql) {
    auto db = store::Db::open(db_, true);
    auto st = db->prepare(sql);
    return st.step() ? st.text(0) : "";
  }

  // The train_loss steps of a trial: no gap, no duplicate, exactly `n` of them.
  void expect_complete_series(int64_t trial_id, int n) {
    const std::string id = std::to_string(trial_id);
    EXPECT_EQ(query("SELECT COUNT(*) FROM metrics WHERE name='train_loss' AND trial_id=" + id), std::to_string(n));
    EXPECT_EQ(query("SELECT COUNT(DISTINCT step) FROM metrics WHERE name='train_loss' AND trial_id=" + id),
              std::to_string(n));
    EXPECT_EQ(query("SELECT MAX(step) - MIN(step) + 1 FROM metrics WHERE name='train_loss' AND trial_id=" + id),
              std::to_string(n));
  }

  void kill9(Proc& p) {
    ::kill(p.pid, SIGKILL);
    int st;
    ::waitpid(p.pid, &st, 0);
    p.pid = -1;
  }

  fs::path dir_;
  std::string db_, work_, endpoint_;
  // A deque: start_coordinator/start_worker return references that tests keep while starting
  // more processes, and a vector's growth freed them (kill9 then read a freed pid; found by
  // ThreadSanitizer in KilledWorkerTrialResumesElsewhereWithoutGapsOrDuplicates).
  std::deque<Proc> procs_;
};

fs::path DaemonsE2E::suite_dir_;
std::string DaemonsE2E::data_dir_;
std::string DaemonsE2E::skip_reason_;

TEST_F(DaemonsE2E, FourTrialSweepOnTwoWorkersCompletesWithTheRightResults) {
  constexpr int kSteps = 20;
  start_coordinator();
  start_worker("wa");
  start_worker("wb");
  const std::vector<std::string> patterns = {"T*2", "M*2", "T,M", "M,T"};
  const int64_t id = submit(sweep_file(patterns, kSteps));
  ASSERT_TRUE(wait_until([&] { return sweep_state(id) == "completed"; }, 240));
  const json workers = cli_json({"workers"});
  ASSERT_EQ(workers.size(), 2u);
  const json shown = cli_json({"sweep", "show", std::to_string(id)});
  EXPECT_EQ(shown["state"], "completed");
  EXPECT_EQ(shown["counts"]["succeeded"], 4);
  auto [status, out] = run({hylab_bin(), "results", "--db", db_, "--sweep", std::to_string(id), "--format", "json"});
  ASSERT_EQ(status, 0);
  const json rows = json::parse(out);
  ASSERT_EQ(rows.size(), 4u);
  std::set<std::string> seen;
  for (const auto& r : rows) {
    EXPECT_EQ(r["state"], "succeeded") << r.dump();
    EXPECT_EQ(r["sweep_id"], id);
    EXPECT_TRUE(r["val_bpb"].is_number()) << r.dump();
    EXPECT_GT(r["val_bpb"].get<double>(), 0);
    EXPECT_TRUE(r["params"].is_number()) << r.dump();
    EXPECT_EQ(r["steps"], kSteps);
    EXPECT_EQ(r["n_layer"], 2);
    seen.insert(r["block_pattern"].get<std::string>());
    expect_complete_series(r["trial_id"].get<int64_t>(), kSteps);
  }
  EXPECT_EQ(seen, (std::set<std::string>{"T*2", "M*2", "T,M", "M,T"}));
  // Each trial's folder on its worker, its disk use and provenance; `hylab logs` prints the
  // log its worker wrote.
  for (const auto& r : rows) {
    const std::string dir = r["run_dir"].get<std::string>();
    EXPECT_TRUE(fs::path(dir).is_absolute()) << dir;
    EXPECT_GT(r["disk_bytes"].get<int64_t>(), 0) << r.dump();
    EXPECT_FALSE(r["hylab_commit"].get<std::string>().empty()) << r.dump();
    EXPECT_EQ(r["gpu_name"], "cpu") << r.dump();
    auto [log_status, log] = run({hylab_bin(), "logs", std::to_string(r["trial_id"].get<int64_t>()), "--db", db_});
    EXPECT_EQ(log_status, 0);
    std::ifstream f(dir + "/attempt-1.log");
    EXPECT_EQ(log, std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>()));
    EXPECT_NE(log.find("summary: "), std::string::npos) << log;
  }
  // Both workers ran trials; the all-Mamba trial has no attention layer.
  EXPECT_EQ(query("SELECT COUNT(DISTINCT worker_id) FROM trial_attempts"), "2");
  EXPECT_EQ(query("SELECT n_attn_layers FROM trials WHERE block_pattern='M*2'"), "0");
  // The table and the curves render.
  auto [s2, table] = run({hylab_bin(), "results", "--db", db_, "--sort", "val_bpb"});
  EXPECT_EQ(s2, 0);
  EXPECT_NE(table.find("M*2"), std::string::npos) << table;
  auto [s3, curves] = run({hylab_bin(), "results", "--db", db_, "--curves", "1"});
  EXPECT_EQ(s3, 0);
  EXPECT_EQ(curves.substr(0, curves.find('\n')).find("trial_id,step,train_loss"), 0u) << curves;
}

TEST_F(DaemonsE2E, AFlopBudgetSweepGivesEveryPatternTheSameFlopsWithinOneStep) {
  start_coordinator();
  start_worker("wa");
  const std::string sweep = sweep_file({"T*2", "M*2", "T,M"}, 10);
  std::ofstream(sweep, std::ios::app) << "budget: {flops: 2e9}\n";  // replaces num_iterations: 10
  const int64_t id = submit(sweep);
  ASSERT_TRUE(wait_until([&] { return sweep_state(id) == "completed"; }, 240));
  auto [status, out] = run({hylab_bin(), "results", "--db", db_, "--sweep", std::to_string(id), "--format", "json"});
  ASSERT_EQ(status, 0);
  const json rows = json::parse(out);
  ASSERT_EQ(rows.size(), 3u);
  std::set<int64_t> steps;
  for (const auto& r : rows) {
    EXPECT_EQ(r["state"], "succeeded") << r.dump();
    EXPECT_EQ(r["budget"], "flops 2e+09") << r.dump();
    const double flops = r["train_flops"].get<double>();
    const double per_step = flops / r["steps"].get<double>();
    EXPECT_LE(std::abs(flops - 2e9), 0.5 * per_step) << r.dump();
    steps.insert(r["steps"].get<int64_t>());
  }
  EXPECT_EQ(steps.size(), 3u) << "each pattern's steps follow from its own FLOPs per token";
}

TEST_F(DaemonsE2E, KilledWorkerTrialResumesElsewhereWithoutGapsOrDuplicates) {
  constexpr int kSteps = 60;
  start_coordinator();
  Proc& a = start_worker("wa");
  const int64_t id = submit(sweep_file({"T,M"}, kSteps));
  // Let the first attempt get past a checkpoint (steps 10, 20, ...) before killing its worker.
  ASSERT_TRUE(wait_until([&] { return std::atoi(query("SELECT checkpoint_step FROM trials").c_str()) >= 10; }, 180));
  const auto pids = trainers_in(work_ + "/sweep-" + std::to_string(id));
  ASSERT_FALSE(pids.empty());
  start_worker("wb");
  kill9(a);
  // The orphaned trainer dies with its worker (PR_SET_PDEATHSIG): no second writer in the run dir.
  EXPECT_TRUE(wait_until([&] { return !process_alive(pids[0]); }, 10));
  ASSERT_TRUE(wait_until([&] { return sweep_state(id) == "completed"; }, 240));
  EXPECT_EQ(query("SELECT state FROM trials"), "succeeded");
  EXPECT_EQ(query("SELECT attempt FROM trials"), "2");
  EXPECT_EQ(query("SELECT worker_id FROM trial_attempts WHERE attempt=2"), "wb");
  EXPECT_EQ(query("SELECT resumed FROM trial_attempts WHERE attempt=2"), "1");
  EXPECT_EQ(query("SELECT state FROM workers WHERE worker_id='wa'"), "lost");
  expect_complete_series(1, kSteps);
  // Steps up to the checkpoint come from attempt 1; attempt 2 resumed after it (not from 0).
  EXPECT_EQ(query("SELECT COUNT(DISTINCT attempt) FROM metrics WHERE name='train_loss'"), "2");
  EXPECT_GT(std::atoi(query("SELECT MIN(step) FROM metrics WHERE name='train_loss' AND attempt=2").c_str()), 5);
  EXPECT_TRUE(fs::exists(fs::path(work_) / ("sweep-" + std::to_string(id)) / "trial-1" / "attempt-2.log"));
}

TEST_F(DaemonsE2E, KilledCoordinatorRestartsOnTheSameDatabaseAndLosesNothing) {
  constexpr int kSteps = 40;
  start_coordinator();
  const std::string endpoint = endpoint_;  // restart on the same port, so workers find it
  start_worker("wa");
  const int64_t id = submit(sweep_file({"T*2", "M*2"}, kSteps, /*max_retries=*/0));
  ASSERT_TRUE(wait_until([&] { return std::atoi(query("SELECT MAX(last_step) FROM trials").c_str()) >= 5; }, 180));
  kill9(procs_[0]);
  std::this_thread::sleep_for(1500ms * time_scale());  // the worker trains on and spools its metrics
  start_coordinator(endpoint);
  ASSERT_EQ(endpoint_, endpoint);
  ASSERT_TRUE(wait_until([&] { return sweep_state(id) == "completed"; }, 240));
  // max_retries 0: had the restart lost the running attempt, the trial would have failed.
  EXPECT_EQ(query("SELECT COUNT(*) FROM trials WHERE state='succeeded'"), "2");
  EXPECT_EQ(query("SELECT MAX(attempt) FROM trials"), "1");
  expect_complete_series(1, kSteps);
  expect_complete_series(2, kSteps);
  EXPECT_EQ(query("SELECT COUNT(*) FROM events WHERE kind='trial_recovered'"), "1");
}

// The hardest case for "nothing lost": the coordinator is down while a worker trains (its
// metrics wait in the worker's spool), then that worker dies too. The retry on another worker
// resumes from the newest checkpoint and relays the dead attempt's spooled records up to it.
TEST_F(DaemonsE2E, SpooledMetricsOfADeadWorkerAreRelayedByTheRetry) {
  constexpr int kSteps = 100;
  start_coordinator();
  const std::string endpoint = endpoint_;
  Proc& a = start_worker("wa");
  const int64_t id = submit(sweep_file({"M,T"}, kSteps));
  ASSERT_TRUE(wait_until([&] { return std::atoi(query("SELECT checkpoint_step FROM trials").c_str()) >= 10; }, 180));
  kill9(procs_[0]);  // the coordinator
  // The trainer goes on past the next checkpoint with nobody to deliver to.
  const fs::path spool = fs::path(work_) / ("sweep-" + std::to_string(id)) / "trial-1" / "metrics.a1.jsonl";
  ASSERT_TRUE(wait_until([&] {
    std::ifstream f(spool);
    std::string line;
    int64_t ck = -1;
    while (std::getline(f, line)) {
      const json j = json::parse(line, nullptr, false);
      if (j.is_object() && j.value("type", "") == "checkpoint") ck = std::max<int64_t>(ck, j.value("step", -1));
    }
    return ck >= 30;
  }, 120));
  const int64_t delivered = std::atoi(query("SELECT last_step FROM trials").c_str());
  kill9(a);
  start_coordinator(endpoint);
  start_worker("wb");
  ASSERT_TRUE(wait_until([&] { return sweep_state(id) == "completed"; }, 240));
  EXPECT_EQ(query("SELECT state FROM trials"), "succeeded");
  EXPECT_EQ(query("SELECT attempt FROM trials"), "2");
  EXPECT_LT(delivered, 30);  // steps up to the checkpoint had not reached the database...
  expect_complete_series(1, kSteps);  // ...and yet the series is complete
  EXPECT_GE(std::atoi(query("SELECT MAX(step) FROM metrics WHERE name='train_loss' AND attempt=1").c_str()), 29);
}

// A trial of 2 slots on 2 nodes: the scheduler places one slot on each 1-slot CPU worker,
// node 0's worker picks the rendezvous address, and the two trainers (one rank each, global
// ranks 0 and 1) train together over gloo through node 0's TCPStore. The workers do not share
// a work_dir (as on nodes without a shared filesystem). The loss curve must be the one of the
// same config trained on one node with --nproc 2 (same ranks, same global batch).
TEST_F(DaemonsE2E, TwoNodeTrialTrainsAsOneWorldAndMatchesOneNodeWithTwoRanks) {
  constexpr int kSteps = 8;
  start_coordinator();
  start_worker("wa", work_ + "-a");
  start_worker("wb", work_ + "-b");
  // Both workers registered before the submit, so the gang is placed at once.
  ASSERT_TRUE(wait_until([&] { return query("SELECT COUNT(*) FROM workers") == "2"; }, 60));
  const fs::path base = dir_ / "base.yaml";
  std::ofstream(base) << "depth: 2\nn_embd: 64\nn_head: 1\nn_kv_head: 1\nmax_seq_len: 32\n"
                      << "device_batch_size: 4\ntotal_batch_size: -1\ndevice: cpu\nblock_pattern: \"T,M\"\n"
                      << "eval_every: " << kSteps << "\neval_tokens: 1024\nsample_every: 0\n"
                      << "checkpoint_every: 0\nlog_every: 1\ndata: " << data_dir_ << "\n";
  const fs::path sweep = dir_ / "sweep.yaml";
  std::ofstream(sweep) << "name: e2e-2node\nbase: " << base.string() << "\nmax_retries: 0\n"
                       << "resources: {gpus_per_trial: 2, nodes_per_trial: 2}\n"
                       << "overrides: {num_iterations: " << kSteps << "}\n"
                       << "parameters:\n  seed: {values: [7]}\n";
  const int64_t id = submit(sweep.string());
  ASSERT_TRUE(wait_until([&] {
    const std::string s = sweep_state(id);
    return s == "completed" || s == "failed" || s == "cancelled";
  }, 180));
  ASSERT_EQ(sweep_state(id), "completed");
  ASSERT_EQ(query("SELECT state FROM trials"), "succeeded");
  EXPECT_EQ(query("SELECT attempt FROM trials"), "1");
  expect_complete_series(1, kSteps);
  // Each node ran its trainer in its own run folder; only global rank 0 (node 0) wrote metrics.
  const fs::path run_a = fs::path(work_ + "-a") / ("sweep-" + std::to_string(id)) / "trial-1";
  const fs::path run_b = fs::path(work_ + "-b") / ("sweep-" + std::to_string(id)) / "trial-1";
  const std::string node0 = query("SELECT worker_id FROM trials") == "wa" ? run_a.string() : run_b.string();
  ASSERT_TRUE(fs::exists(fs::path(node0) / "config.json")) << node0;
  // The same config on one node, two local ranks.
  const std::string one = (dir_ / "one-node").string();
  auto [status, out] = run({trainer_bin(), "train", "--config", node0 + "/config.json", "--run_dir", one,
                            "--metrics_jsonl", one + ".jsonl", "--nproc", "2", "--probe_steps", "0"});
  ASSERT_EQ(status, 0) << out;
  std::map<int64_t, double> want;
  {
    std::ifstream in(one + ".jsonl");
    for (std::string line; std::getline(in, line);) {
      const json j = json::parse(line, nullptr, false);
      if (j.is_object() && j.value("type", "") == "metric" && j.value("name", "") == "train_loss") {
        want[j["step"].get<int64_t>()] = j["value"].get<double>();
      }
    }
  }
  ASSERT_EQ(want.size(), static_cast<size_t>(kSteps));
  auto db = store::Db::open(db_, true);
  auto st = db->prepare("SELECT step, value FROM metrics WHERE name='train_loss' AND trial_id=1 ORDER BY step");
  size_t n = 0;
  while (st.step()) {
    const int64_t step = st.int64(0);
    const double got = st.real(1);
    ASSERT_EQ(want.count(step), 1u) << "step " << step;
    EXPECT_NEAR(got, want[step], 1e-5 * std::abs(want[step])) << "step " << step;
    ++n;
  }
  EXPECT_EQ(n, static_cast<size_t>(kSteps));
}

// Malformed multi-node variables are config errors (exit 2) that name the variable.
TEST_F(DaemonsE2E, TrainRefusesMalformedMultiNodeVariables) {
  const std::string cfg = (dir_ / "tiny.yaml").string();
  std::ofstream(cfg) << "depth: 2\nn_embd: 64\nn_head: 1\nn_kv_head: 1\nmax_seq_len: 32\n"
                     << "device: cpu\nnum_iterations: 1\ndata: " << data_dir_ << "\n";
  auto train_with = [&](const std::string& env) {
    return run({"sh", "-c", env + " '" + trainer_bin() + "' train --config '" + cfg + "' --run_dir '" +
                                (dir_ / "run").string() + "' 2>&1"});
  };
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"HYLAB_NUM_NODES=2 HYLAB_NODE_RANK=2 HYLAB_RENDEZVOUS=127.0.0.1:29500", "HYLAB_NODE_RANK"},
      {"HYLAB_NUM_NODES=2 HYLAB_RENDEZVOUS=127.0.0.1:29500", "HYLAB_NODE_RANK"},
      {"HYLAB_NUM_NODES=2 HYLAB_NODE_RANK=1 HYLAB_RENDEZVOUS=127.0.0.1", "HYLAB_RENDEZVOUS"},
      {"HYLAB_NUM_NODES=2 HYLAB_NODE_RANK=1 HYLAB_RENDEZVOUS=h:70000", "HYLAB_RENDEZVOUS"},
      {"HYLAB_NUM_NODES=two HYLAB_NODE_RANK=0 HYLAB_RENDEZVOUS=h:1", "HYLAB_NUM_NODES"},
  };
  for (const auto& [env, name] : cases) {
    auto [status, out] = train_with(env);
    EXPECT_EQ(status, 2) << env << "\n" << out;
    EXPECT_NE(out.find(name + "="), std::string::npos) << env << "\n" << out;
  }
  EXPECT_FALSE(fs::exists(dir_ / "run" / "checkpoints"));
}

TEST_F(DaemonsE2E, CurveKeysAdmitWorkersAndClientsAndRefuseStrangers) {
  const std::string keys = (dir_ / "keys").string();
  for (const char* name : {"coordinator", "worker", "alice", "mallory"}) {
    ASSERT_EQ(run({hylab_bin(), "keygen", "--out", keys + "/" + name}).first, 0);
  }
  const std::string allow = (dir_ / "allowed").string();
  {
    std::ofstream out(allow);
    for (const char* name : {"worker", "alice"}) {
      std::ifstream in(keys + "/" + name + ".pub");
      out << in.rdbuf();
    }
  }
  const std::string ep_file = (dir_ / "endpoint").string();
  procs_.push_back(spawn("coordinator",
                         {hylab_bin(), "coordinator", "--db", db_, "--bind", "tcp://127.0.0.1:*",
                          "--endpoint_file", ep_file, "--key", keys + "/coordinator.key", "--allow", allow,
                          "--heartbeat_ms", heartbeat_ms()},
                         (dir_ / "coordinator.log").string()));
  ASSERT_TRUE(wait_until([&] { return fs::exists(ep_file); }, 30));
  std::ifstream(ep_file) >> endpoint_;
  procs_.push_back(spawn("wa",
                         {hylab_bin(), "worker", "--coordinator", endpoint_, "--key", keys + "/worker.key",
                          "--server_key", keys + "/coordinator.pub", "--work_dir", work_, "--gpus", "none",
                          "--worker_id", "wa", "--heartbeat_ms", heartbeat_ms(), "--hylab_bin", trainer_bin()},
                         (dir_ / "wa.log").string()));
  auto as = [&](const std::string& who, const std::vector<std::string>& extra) {
    std::vector<std::string> args = {hylab_bin(), "workers", "--coordinator", endpoint_, "--format", "json",
                                     "--timeout_ms", std::to_string(3000 * time_scale())};
    if (!who.empty()) {
      args.insert(args.end(), {"--key", keys + "/" + who + ".key", "--server_key", keys + "/coordinator.pub"});
    }
    args.insert(args.end(), extra.begin(), extra.end());
    return run(args);
  };
  ASSERT_TRUE(wait_until([&] {
    auto [status, out] = as("alice", {});
    const json w = json::parse(out, nullptr, false);
    return status == 0 && w.is_array() && w.size() == 1 && w[0]["state"] == "alive";
  }, 60));
  EXPECT_NE(as("mallory", {}).first, 0);               // an unknown key is refused
  EXPECT_NE(as("", {"--insecure"}).first, 0);          // plain TCP is refused
  EXPECT_NE(as("", {}).first, 0);                      // no key: a clear error, no connection
  std::ifstream log(dir_ / "coordinator.log");
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("refused"), std::string::npos) << text;
  EXPECT_NE(text.find("not in the allow-list"), std::string::npos) << text;
}

TEST_F(DaemonsE2E, CancelStopsTheTrainerProcesses) {
  start_coordinator();
  start_worker("wa");
  const int64_t id = submit(sweep_file({"T*2", "M*2"}, 100000));
  const std::string run_dirs = work_ + "/sweep-" + std::to_string(id);  // this test's own trainers only
  ASSERT_TRUE(wait_until([&] {
    return !trainers_in(run_dirs).empty() && std::atoi(query("SELECT MAX(last_step) FROM trials").c_str()) >= 1;
  }, 120));
  const auto pids = trainers_in(run_dirs);
  const json r = cli_json({"sweep", "cancel", std::to_string(id)});
  EXPECT_EQ(r["trials_cancelled"], 2);
  // A trainer's cmdline empties while it exits, before it is a zombie: wait for both.
  EXPECT_TRUE(wait_until([&] {
    return trainers_in(run_dirs).empty() && std::none_of(pids.begin(), pids.end(), process_alive);
  }, 20)) << "trainer still running";
  for (pid_t p : pids) EXPECT_FALSE(process_alive(p));
  EXPECT_EQ(query("SELECT COUNT(*) FROM trials WHERE state='cancelled'"), "2");
  EXPECT_EQ(query("SELECT state FROM sweeps"), "cancelled");
  EXPECT_TRUE(wait_until([&] { return query("SELECT state FROM trial_attempts") == "cancelled"; }, 10));
}

TEST_F(DaemonsE2E, LocalRunsASweepAndPrintsTheTable) {
  const std::string sweep = sweep_file({"T*2", "M*2"}, 10);
  auto [status, out] = run({hylab_bin(), "local", sweep, "--db", db_, "--work_dir", work_, "--workers", "2",
                            "--heartbeat_ms", heartbeat_ms(), "--gpus", "none", "--hylab_bin", trainer_bin()});
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("succeeded"), std::string::npos) << out;
  EXPECT_NE(out.find("val_bpb"), std::string::npos) << out;
  EXPECT_NE(out.find("sweep 1 completed"), std::string::npos) << out;
  EXPECT_EQ(query("SELECT COUNT(*) FROM trials WHERE state='succeeded'"), "2");
  EXPECT_TRUE(trainers_in(work_).empty());
}

// Issue 18: every trial of a sweep over T, M and M2 patterns records the evals beside val_bpb
// (trainer/trial_evals.h) through worker -> coordinator -> SQLite: recall_acc in [0, 1] and
// val_bpb at 2x and 4x max_seq_len (the rotary tables extend), as metrics and as summary
// columns of `hylab results`, and recall_acc works as the sweep's metric (goal maximize).
TEST_F(DaemonsE2E, LocalSweepRecordsRecallAndLengthEvalsForEveryTrial) {
  const std::string sweep = sweep_file({"T*2", "M*2", "T,M", "M2*2", "T,M2"}, 6);
  std::ofstream(sweep, std::ios::app) << "metric: {name: recall_acc}\n";
  std::ofstream(dir_ / "base.yaml", std::ios::app) << "recall_probes: 8\nrecall_key_len: 1\nrecall_value_len: 1\n";
  auto [status, out] = run({hylab_bin(), "local", sweep, "--db", db_, "--work_dir", work_, "--workers", "2",
                            "--heartbeat_ms", heartbeat_ms(), "--gpus", "none", "--hylab_bin", trainer_bin()});
  ASSERT_EQ(status, 0) << out;
  EXPECT_NE(out.find(" recall_acc "), std::string::npos) << out;  // the per-trial line names the metric
  EXPECT_EQ(query("SELECT metric_goal FROM sweeps"), "maximize");
  auto [s2, text] = run({hylab_bin(), "results", "--db", db_, "--format", "json"});
  ASSERT_EQ(s2, 0) << text;
  const json rows = json::parse(text);
  ASSERT_EQ(rows.size(), 5u) << text;
  for (const auto& r : rows) {
    EXPECT_EQ(r["state"], "succeeded") << r.dump();
    ASSERT_TRUE(r["recall_acc"].is_number()) << r.dump();
    EXPECT_GE(r["recall_acc"].get<double>(), 0.0);
    EXPECT_LE(r["recall_acc"].get<double>(), 1.0);
    for (const char* k : {"val_bpb", "val_bpb_2x", "val_bpb_4x"}) {
      ASSERT_TRUE(r[k].is_number()) << k << ": " << r.dump();
      EXPECT_GT(r[k].get<double>(), 0.0) << k;
      EXPECT_LT(r[k].get<double>(), 20.0) << k;
    }
    // Decode speed and cache bytes, the other per-trial figures beside val_bpb.
    EXPECT_TRUE(r["decode_tok_per_s_b1"].is_number()) << r.dump();
    EXPECT_TRUE(r["cache_bytes"].is_number()) << r.dump();
    const std::string id = std::to_string(r["trial_id"].get<int64_t>());
    // As metrics at the final eval step too (what a sweep's metric reads).
    for (const char* k : {"recall_acc", "val_bpb_2x", "val_bpb_4x"}) {
      EXPECT_EQ(query("SELECT COUNT(*) FROM metrics WHERE name='" + std::string(k) + "' AND step=6 AND trial_id=" + id),
                "1") << k;
    }
  }
  // The sweep's metric for each trial is its recall_acc.
  auto [s3, groups] = run({hylab_bin(), "results", "--db", db_, "--group_by", "block_pattern", "--metric",
                           "recall_acc", "--format", "json"});
  ASSERT_EQ(s3, 0) << groups;
  EXPECT_EQ(json::parse(groups)["goal"], "maximize") << groups;
}

// Issue 19/14: a sweep with seeds runs every pattern once per seed, and `hylab local` closes
// with one row per pattern (mean ± std, n, the Welch mark); `hylab results --group_by` agrees.
TEST_F(DaemonsE2E, LocalWithSeedsPrintsMeanAndStdPerPattern) {
  const std::string sweep = sweep_file({"T*2", "M*2"}, 6);
  std::ofstream(sweep, std::ios::app) << "seeds: [0, 1]\n";
  auto [status, out] = run({hylab_bin(), "local", sweep, "--db", db_, "--work_dir", work_, "--workers", "2",
                            "--heartbeat_ms", heartbeat_ms(), "--gpus", "none", "--hylab_bin", trainer_bin()});
  EXPECT_EQ(status, 0) << out;
  EXPECT_EQ(query("SELECT COUNT(*) FROM trials WHERE state='succeeded'"), "4");
  EXPECT_EQ(query("SELECT GROUP_CONCAT(seed) FROM (SELECT seed FROM trials ORDER BY trial_id)"), "0,0,1,1");
  EXPECT_NE(out.find("val_bpb (mean ± std)"), std::string::npos) << out;
  EXPECT_NE(out.find(" ± "), std::string::npos) << out;
  EXPECT_NE(out.find("Welch"), std::string::npos) << out;
  EXPECT_EQ(out.find("NO ERROR BARS"), std::string::npos) << out;
  auto [s2, groups] = run({hylab_bin(), "results", "--db", db_, "--group_by", "block_pattern", "--format", "json"});
  ASSERT_EQ(s2, 0) << groups;
  const json g = json::parse(groups);
  ASSERT_EQ(g["groups"].size(), 2u) << groups;
  for (const auto& group : g["groups"]) {
    EXPECT_EQ(group["n"], 2) << groups;
    EXPECT_TRUE(group["std"].is_number()) << groups;
  }
  EXPECT_EQ(g["groups"][0]["mark"], "best");
}

// ---- adaptive search (sweep/search.h, docs/SEARCH.md) ----

// A tpe sweep over d4 block patterns and mamba_d_state; the coordinator proposes every trial.
std::string tpe_sweep_file(const fs::path& dir, const std::string& data_dir, int count, int iterations) {
  const fs::path base = dir / "base_d4.yaml";
  std::ofstream(base) << "depth: 4\nn_embd: 32\nn_head: 1\nn_kv_head: 1\nmax_seq_len: 32\n"
                      << "device_batch_size: 4\ntotal_batch_size: -1\ndevice: cpu\n"
                      << "eval_every: " << iterations << "\neval_tokens: 1024\nsample_every: 0\n"
                      << "checkpoint_every: 0\nlog_every: 1\ndata: " << data_dir << "\n";
  const fs::path sweep = dir / "tpe.yaml";
  std::ofstream(sweep) << "name: e2e-tpe\nbase: " << base.string() << "\nmethod: tpe\ncount: " << count
                       << "\nseed: 3\ntpe: {startup_trials: 2}\nmax_retries: 0\n"
                       << "metric: {name: val_bpb, goal: minimize}\n"
                       << "overrides: {num_iterations: " << iterations << "}\n"
                       << "parameters:\n"
                       << "  block_pattern: {distribution: pattern, attention_fraction: [0.25, 0.75], first: M}\n"
                       << "  mamba_d_state: {distribution: categorical, values: [8, 16]}\n";
  return sweep.string();
}

TEST_F(DaemonsE2E, TpeSweepProposesValidTrialsAndGrowsWithExtend) {
  start_coordinator();
  start_worker("wa");
  start_worker("wb");
  const int64_t id = submit(tpe_sweep_file(dir_, data_dir_, 4, 8));
  ASSERT_TRUE(wait_until([&] { return sweep_state(id) == "completed"; }, 300));
  EXPECT_EQ(query("SELECT COUNT(*) FROM trials WHERE state='succeeded'"), "4");
  EXPECT_EQ(query("SELECT COUNT(DISTINCT config_hash) FROM trials"), "4");
  EXPECT_EQ(query("SELECT COUNT(DISTINCT trial_index) || ',' || MAX(trial_index) FROM trials"), "4,3");
  EXPECT_EQ(query("SELECT COUNT(*) FROM events WHERE kind='trial_proposed'"), "4");
  // Every proposal meets the constraints: 4 layers, the first Mamba, 1..3 attention layers.
  EXPECT_EQ(query("SELECT COUNT(*) FROM trials WHERE n_layer=4 AND block_pattern LIKE 'M%' "
                  "AND n_attn_layers BETWEEN 1 AND 3 AND mamba_d_state IN (8, 16)"), "4");
  // suggest: proposals not in the sweep, nothing added.
  const json s = cli_json({"sweep", "suggest", std::to_string(id), "--count", "2"});
  ASSERT_EQ(s["proposals"].size(), 2u);
  for (const auto& p : s["proposals"]) {
    EXPECT_EQ(query("SELECT COUNT(*) FROM trials WHERE config_hash='" + p["config_hash"].get<std::string>() + "'"), "0");
  }
  EXPECT_EQ(query("SELECT COUNT(*) FROM trials"), "4");
  // extend: the completed sweep runs again until its larger budget is spent.
  const json e = cli_json({"sweep", "extend", std::to_string(id), "--count", "1"});
  EXPECT_EQ(e["count"], 5);
  ASSERT_TRUE(wait_until([&] { return query("SELECT COUNT(*) FROM trials WHERE state='succeeded'") == "5"; }, 200));
  ASSERT_TRUE(wait_until([&] { return sweep_state(id) == "completed"; }, 30));
  EXPECT_EQ(query("SELECT COUNT(DISTINCT config_hash) FROM trials"), "5");
  // Nothing changed between suggest and extend, so the new trial is the first suggestion.
  EXPECT_EQ(query("SELECT config_hash FROM trials WHERE trial_index=4"), s["proposals"][0]["config_hash"].get<std::string>());
}

TEST_F(DaemonsE2E, KilledCoordinatorMidTpeSweepContinuesWithoutReproposing) {
  start_coordinator();
  const std::string endpoint = endpoint_;
  start_worker("wa");
  const int64_t id = submit(tpe_sweep_file(dir_, data_dir_, 4, 8));
  // Kill it once a second trial was proposed (the first finished, the second under way).
  ASSERT_TRUE(wait_until([&] { return std::atoi(query("SELECT COUNT(*) FROM trials").c_str()) >= 2; }, 200));
  const std::string before = query("SELECT group_concat(config_hash) FROM (SELECT config_hash FROM trials ORDER BY trial_index)");
  kill9(procs_[0]);
  start_coordinator(endpoint);
  ASSERT_EQ(endpoint_, endpoint);
  ASSERT_TRUE(wait_until([&] { return sweep_state(id) == "completed"; }, 300));
  // The budget of 4, each trial_index once, no config twice, the stored trials unchanged.
  EXPECT_EQ(query("SELECT COUNT(*) FROM trials"), "4");
  EXPECT_EQ(query("SELECT COUNT(*) FROM trials WHERE state='succeeded'"), "4");
  EXPECT_EQ(query("SELECT COUNT(DISTINCT trial_index) || ',' || MAX(trial_index) FROM trials"), "4,3");
  EXPECT_EQ(query("SELECT COUNT(DISTINCT config_hash) FROM trials"), "4");
  const std::string after = query("SELECT group_concat(config_hash) FROM (SELECT config_hash FROM trials ORDER BY trial_index)");
  EXPECT_EQ(after.substr(0, before.size()), before);
  EXPECT_EQ(query("SELECT COUNT(*) FROM events WHERE kind='trial_proposed'"), "4");
}

// `sweep submit --wait` follows the sweep with a progress line and exits with its outcome:
// 0 all succeeded, 3 some failed, 4 cancelled. A sweep can vary probe_steps (a config key).
TEST_F(DaemonsE2E, SubmitWaitExitsWithTheSweepsOutcome) {
  start_coordinator();
  start_worker("wa");
  const fs::path base = dir_ / "wait_base.yaml";
  std::ofstream(base) << "depth: 2\nn_embd: 64\nn_head: 1\nn_kv_head: 1\nmax_seq_len: 32\n"
                      << "device_batch_size: 4\ntotal_batch_size: -1\ndevice: cpu\neval_every: 0\n"
                      << "eval_tokens: 2048\nsample_every: 0\nlog_every: 1\ndata: " << data_dir_ << "\n";
  auto sweep_yaml = [&](const std::string& name, const std::string& params, int iterations) {
    const fs::path p = dir_ / (name + ".yaml");
    std::ofstream(p) << "name: " << name << "\nbase: " << base.string() << "\nmax_retries: 0\n"
                     << "overrides: {num_iterations: " << iterations << "}\nparameters:\n" << params;
    return p.string();
  };
  // HYLAB_INSECURE=1 instead of --insecure; stderr (the progress lines) kept apart.
  auto wait_cmd = [&](const std::string& file, const std::string& err) {
    return "HYLAB_INSECURE=1 '" + hylab_bin() + "' sweep submit '" + file + "' --wait --poll_s 0.5 --coordinator " +
           endpoint_ + " 2>'" + (dir_ / err).string() + "'";
  };
  auto status_of = [](int st) { return WIFEXITED(st) ? WEXITSTATUS(st) : -1; };
  auto slurp = [](const fs::path& p) {
    std::ifstream in(p);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };

  const std::string ok = sweep_yaml("probes", "  probe_steps: {values: [0, 2]}\n", 4);
  EXPECT_EQ(status_of(std::system((wait_cmd(ok, "ok.err") + " >/dev/null").c_str())), 0);
  const std::string progress = slurp(dir_ / "ok.err");
  EXPECT_NE(progress.find("2/2 trials done (100%), 0 running, 0 failed, completed"), std::string::npos) << progress;
  EXPECT_EQ(sweep_state(1), "completed");
  // probe_steps reached each trial: 0 skips the decode probe, 2 measures it.
  EXPECT_EQ(query("SELECT s.decode_tok_per_s_b1 > 0 FROM trial_summary s JOIN trials t USING(trial_id) "
                  "WHERE t.sweep_id = 1 ORDER BY t.trial_index LIMIT 1"), "0");
  EXPECT_EQ(query("SELECT s.decode_tok_per_s_b1 > 0 FROM trial_summary s JOIN trials t USING(trial_id) "
                  "WHERE t.sweep_id = 1 ORDER BY t.trial_index DESC LIMIT 1"), "1");

  // A trial that cannot run (no CUDA here) fails: exit 3.
  const std::string bad = sweep_yaml("nocuda", "  device: {values: [cuda]}\n", 2);
  EXPECT_EQ(status_of(std::system((wait_cmd(bad, "bad.err") + " >/dev/null").c_str())), 3) << slurp(dir_ / "bad.err");
  EXPECT_NE(slurp(dir_ / "bad.err").find("1 failed"), std::string::npos);

  // Cancelled while waiting: exit 4. `sweep show` gives percent done and ETA meanwhile.
  const std::string slow = sweep_yaml("slow", "  seed: {values: [1, 2]}\n", 100000);
  Proc& waiter = procs_.emplace_back(spawn("waiter", {"/bin/sh", "-c", wait_cmd(slow, "slow.err")},
                                           (dir_ / "waiter.log").string()));
  ASSERT_TRUE(wait_until([&] { return query("SELECT COUNT(*) FROM trials WHERE sweep_id=3 AND state='running'") == "1"; }, 60));
  auto [show_status, show] = run({hylab_bin(), "sweep", "show", "3", "--coordinator", endpoint_, "--insecure"});
  EXPECT_EQ(show_status, 0);
  EXPECT_NE(show.find("0/2 trials done (0%), 1 running, 0 failed, ETA unknown"), std::string::npos) << show;
  EXPECT_EQ(run({hylab_bin(), "sweep", "cancel", "3", "--coordinator", endpoint_, "--insecure"}).first, 0);
  int st = 0;
  ASSERT_TRUE(wait_until([&] { return ::waitpid(waiter.pid, &st, WNOHANG) == waiter.pid; }, 60));
  waiter.pid = -1;
  EXPECT_EQ(status_of(st), 4) << slurp(dir_ / "slow.err");
  EXPECT_NE(slurp(dir_ / "slow.err").find("cancelled"), std::string::npos);
  // `results` says so when a sweep does not exist, and exits non-zero.
  auto [missing, out] = run({hylab_bin(), "results", "--db", db_, "--sweep", "99"});
  EXPECT_EQ(missing, 1) << out;
}

// Ctrl-C on `hylab train` stops like SIGTERM: exit 130, the run marked cancelled (not left
// "running" in the results forever).
TEST_F(DaemonsE2E, CtrlCOnTrainExits130AndMarksTheRunCancelled) {
  const fs::path cfg = dir_ / "long.yaml";
  std::ofstream(cfg) << "depth: 2\nn_embd: 64\nn_head: 1\nmax_seq_len: 32\ndevice_batch_size: 4\n"
                     << "total_batch_size: -1\ndevice: cpu\neval_every: 0\neval_tokens: 2048\nsample_every: 0\n"
                     << "num_iterations: 100000\nprobe_steps: 0\ndata: " << data_dir_ << "\n";
  Proc& train = procs_.emplace_back(spawn("train", {trainer_bin(), "train", "--config", cfg.string(), "--db", db_,
                                                    "--run_dir", (dir_ / "run").string()},
                                          (dir_ / "train.log").string()));
  ASSERT_TRUE(wait_until([&] {
    try {
      return fs::exists(db_) && query("SELECT COUNT(*) FROM metrics") != "0";
    } catch (const std::exception&) {
      return false;  // the trainer is still creating the tables
    }
  }, 120));
  EXPECT_EQ(query("SELECT state FROM trials"), "running");
  ::kill(train.pid, SIGINT);
  int st = 0;
  ASSERT_TRUE(wait_until([&] { return ::waitpid(train.pid, &st, WNOHANG) == train.pid; }, 60));
  train.pid = -1;
  ASSERT_TRUE(WIFEXITED(st)) << "killed by signal " << (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
  EXPECT_EQ(WEXITSTATUS(st), 130);
  EXPECT_EQ(query("SELECT state FROM trials"), "cancelled");
  EXPECT_EQ(query("SELECT reason FROM trials"), "SIGINT");
}

}  // namespace
}  // namespace hylab::e2e
