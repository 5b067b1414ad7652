// The dashboard in a real browser. A real tiny sweep (`hylab local`: coordinator, worker and
// six d2 trainer runs on CPU, three patterns x two seeds) fills a real database; a coordinator
// started with --http serves it; Debian's chromium, headless, driven by playwright-core
// (browser_check.js), opens every page. Checked: no console errors on any page, each chart
// holds as many points as the database has (against steps and FLOPs), the groups show
// mean ± std over the seeds, the trials table sorts and filters, an open page draws a point
// added to the database while it is open, the layer map has one row per trial in val_bpb
// order, and `hylab dashboard` serves the same database on its own.
//
// Skipped (exit 77) only when node or chromium is absent (scripts/setup.sh installs both).
// HYLAB_SCREENSHOT_DIR=DIR keeps a PNG of each page there (docs/dashboard/ holds them).
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "store/results.h"
#include "store/schema.h"

namespace hylab::dashboard {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

// The sweep's patterns and the layer letters each must show.
const std::map<std::string, std::string> kPatterns = {{"T*2", "TT"}, {"M*2", "MM"}, {"T,M", "TM"}};
constexpr size_t kSeeds = 2;  // each pattern trained with seeds 0 and 1: groups of n = 2

std::string env(const char* name, const std::string& fallback = "") {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

bool on_path(const std::string& tool) {
  return std::system(("command -v " + tool + " >/dev/null 2>&1").c_str()) == 0;
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::pair<int, std::string> run(const std::string& cmd) {
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

// A daemon child in its own process group, killed with the test; output to a log file.
pid_t spawn(const std::vector<std::string>& args, const std::string& log) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
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
  return pid;
}

void stop(pid_t pid) {
  if (pid <= 0) return;
  ::kill(pid, SIGTERM);
  for (int i = 0; i < 100; ++i) {
    int st;
    if (::waitpid(pid, &st, WNOHANG) == pid) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ::kill(-pid, SIGKILL);
  int st;
  ::waitpid(pid, &st, 0);
}

int free_port() {
  const int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(s);
  return ntohs(a.sin_port);
}

bool answers(int port) {
  httplib::Client cli("127.0.0.1", port);
  cli.set_connection_timeout(0, 200000);
  auto r = cli.Get("/api/sweeps");
  return r && r->status == 200;
}

// Small English-like text, deterministic.
std::string corpus(int docs) {
  static const char* kWords[] = {
      "the",    "model",     "learns", "from",    "text",  "and",    "every",    "layer", "state",
      "space",  "attention", "token",  "loss",    "falls", "when",   "training", "runs",  "on",
      "small",  "machines",  "we",     "measure", "bits",  "per",    "byte",     "river", "stone",
      "garden", "light",     "water",  "music",   "city",  "people", "said"};
  uint64_t s = 88172645463325252ull;
  std::string out;
  for (int d = 0; d < docs; ++d) {
    for (int w = 0; w < 40; ++w) {
      s ^= s << 13, s ^= s >> 7, s ^= s << 17;
      out += kWords[s % (sizeof(kWords) / sizeof(kWords[0]))];
      out += w % 10 == 9 ? ". " : " ";
    }
    out += "\n\n";
  }
  return out;
}

int64_t count(store::Db& db, const std::string& sql) {
  auto st = db.prepare(sql);
  return st.step() ? st.int64(0) : -1;
}

class DashboardBrowser : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string chromium = env("HYLAB_CHROMIUM", "/usr/bin/chromium");
    if (!on_path("node") || !fs::exists(chromium)) {
      std::printf("SKIPPED: the browser test needs node and %s (scripts/setup.sh installs them)\n",
                  chromium.c_str());
      std::exit(77);
    }
  }
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("hylab_browser_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "text");
  }
  void TearDown() override {
    for (pid_t p : pids_) stop(p);
    if (HasFailure()) {
      for (const char* log : {"local.log", "coordinator.log", "dashboard.log",
                              "work/local-logs/coordinator.log", "work/local-logs/worker-0.log"}) {
        std::ifstream f(dir_ / log);
        const std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
        std::printf("---- %s (last 3000 bytes) ----\n%s\n", log,
                    s.substr(s.size() > 3000 ? s.size() - 3000 : 0).c_str());
      }
    }
    if (!env("HYLAB_E2E_KEEP").empty()) return;
    fs::remove_all(dir_);
  }

  fs::path dir_;
  std::vector<pid_t> pids_;
};

TEST_F(DashboardBrowser, EveryPageLoadsWithItsChartsAndALayerMapRowPerTrial) {
  const std::string hylab = env("HYLAB_BIN");
  const std::string web_dir = env("HYLAB_WEB_DIR");
  const std::string source = env("HYLAB_SOURCE_DIR", ".");
  ASSERT_TRUE(fs::exists(hylab)) << "HYLAB_BIN is not the built hylab";
  ASSERT_TRUE(fs::exists(fs::path(web_dir) / "node_modules" / "playwright-core"))
      << "no playwright-core under " << web_dir << ": run scripts/fetch_web.sh";
  const std::string db_path = (dir_ / "hylab.db").string();
  const std::string work = (dir_ / "work").string();

  // 1. A finished tiny sweep in a real database.
  const auto t0 = Clock::now();
  std::ofstream(dir_ / "text" / "corpus.txt") << corpus(600);
  auto [prep_rc, prep_out] =
      run("'" + hylab + "' data prepare --input " + (dir_ / "text").string() + " --out " +
          (dir_ / "data").string() + " --vocab_size 320 --threads 1");
  ASSERT_EQ(prep_rc, 0) << prep_out;
  std::ofstream(dir_ / "base.yaml")
      << "depth: 2\nn_embd: 64\nn_head: 1\nn_kv_head: 1\nmax_seq_len: 32\n"
      << "device_batch_size: 4\ntotal_batch_size: -1\ndevice: cpu\n"
      << "num_iterations: 8\neval_every: 4\neval_tokens: 1024\nsample_every: 8\n"
      << "checkpoint_every: 8\nlog_every: 1\ndata: " << (dir_ / "data").string() << "\n";
  std::string values;
  for (const auto& [p, letters] : kPatterns) values += (values.empty() ? "\"" : ", \"") + p + "\"";
  std::ofstream(dir_ / "sweep.yaml")
      << "name: browser\nbase: " << (dir_ / "base.yaml").string()
      << "\nmax_retries: 0\nseeds: [0, 1]\nparameters:\n  block_pattern: {values: [" << values
      << "]}\n";
  auto [local_rc, local_out] = run(
      "'" + hylab + "' local " + (dir_ / "sweep.yaml").string() + " --db " + db_path +
      " --work_dir " + work + " --gpus none --heartbeat_ms 200 > " + (dir_ / "local.log").string());
  ASSERT_EQ(local_rc, 0) << "hylab local failed";
  const double sweep_s = seconds_since(t0);

  // 2. What the pages must show, from the database.
  auto db = store::Db::open(db_path, true);
  const int64_t sweep_id = count(*db, "SELECT sweep_id FROM sweeps WHERE name = 'browser'");
  const std::string in_sweep =
      " trial_id IN (SELECT trial_id FROM trials WHERE sweep_id = " + std::to_string(sweep_id) +
      ")";
  const int64_t loss_points =
      count(*db, "SELECT COUNT(*) FROM metrics WHERE name = 'train_loss' AND" + in_sweep);
  const int64_t bpb_points =
      count(*db, "SELECT COUNT(*) FROM metrics WHERE name = 'val_bpb' AND" + in_sweep);
  store::ResultsQuery q;
  q.sweep_id = sweep_id;
  const store::Table table = store::results(*db, q);
  ASSERT_EQ(table.rows.size(), kPatterns.size() * kSeeds);
  const int id_col = table.column("trial_id"), bpb_col = table.column("val_bpb");
  const int tps_col = table.column("tok_per_s");
  std::vector<std::pair<double, int64_t>> by_bpb;
  std::map<int64_t, std::string> letters;
  int64_t pareto_points = 0;
  for (const auto& r : table.rows) {
    ASSERT_TRUE(r[bpb_col].is_number()) << "every trial of the tiny sweep is evaluated";
    by_bpb.emplace_back(r[bpb_col].get<double>(), r[id_col].get<int64_t>());
    pareto_points += r[tps_col].is_number() ? 1 : 0;
    auto st = db->prepare(
        "SELECT value FROM trial_params WHERE name = 'block_pattern' AND trial_id = ?1");
    st.bind(1, r[id_col].get<int64_t>());
    ASSERT_TRUE(st.step());
    letters[r[id_col].get<int64_t>()] = kPatterns.at(st.text(0));  // as written in the sweep
  }
  std::sort(by_bpb.begin(), by_bpb.end());
  std::vector<int64_t> best_first;
  for (const auto& [v, id] : by_bpb) best_first.push_back(id);
  const int64_t trial_id = best_first.front();
  const int64_t trial_loss =
      count(*db, "SELECT COUNT(*) FROM metrics WHERE name = 'train_loss' AND trial_id = " +
                     std::to_string(trial_id));
  const int64_t trial_bpb =
      count(*db, "SELECT COUNT(*) FROM metrics WHERE name = 'val_bpb' AND trial_id = " +
                     std::to_string(trial_id));
  // FLOPs at a trial's last train_loss step: step x 128 tokens (device_batch_size 4 x
  // max_seq_len 32, one process, total_batch_size -1) x its summary's flops_per_token.
  std::map<std::string, double> last_flops;
  for (const auto& [bpb, id] : by_bpb) {
    auto st = db->prepare(
        "SELECT (SELECT MAX(step) FROM metrics WHERE name = 'train_loss' AND trial_id = ?1), "
        "flops_per_token FROM trial_summary WHERE trial_id = ?1");
    st.bind(1, id);
    ASSERT_TRUE(st.step());
    last_flops[std::to_string(id)] = static_cast<double>(st.int64(0)) * 128 * st.real(1);
  }
  ASSERT_GT(loss_points, 0);
  ASSERT_GT(bpb_points, 0);
  db.reset();

  // 3. A coordinator serving the finished sweep over HTTP.
  const int port = free_port();
  pids_.push_back(
      spawn({hylab, "coordinator", "--db", db_path, "--bind", "tcp://127.0.0.1:*", "--insecure",
             "--http", "127.0.0.1:" + std::to_string(port), "--work_dir", work},
            (dir_ / "coordinator.log").string()));
  for (int i = 0; i < 150 && !answers(port); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_TRUE(answers(port)) << "the coordinator's dashboard did not answer on port " << port;

  // 4. The browser.
  const auto t1 = Clock::now();
  const std::string go = (dir_ / "go").string();
  const std::string cmd =
      "NODE_PATH='" + (fs::path(web_dir) / "node_modules").string() + "' node '" +
      (fs::path(source) / "tests/dashboard/browser_check.js").string() +
      "' http://127.0.0.1:" + std::to_string(port) + " " + std::to_string(sweep_id) + " " +
      std::to_string(trial_id) + " '" + go + "' '" + env("HYLAB_SCREENSHOT_DIR") + "' 2>&1";
  FILE* node = ::popen(cmd.c_str(), "r");
  ASSERT_NE(node, nullptr);
  std::map<std::string, json> seen;
  std::string other;
  char line[1 << 16];
  while (std::fgets(line, sizeof(line), node)) {
    const json j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      other += line;
    } else if (j.contains("waiting")) {
      // While the sweep page is open: one more train_loss point for the best trial.
      auto w = store::Db::open(db_path);
      auto last = w->prepare(
          "SELECT step, value FROM metrics WHERE name = 'train_loss' AND trial_id = ?1 "
          "ORDER BY step DESC LIMIT 1");
      last.bind(1, trial_id);
      if (last.step()) {
        store::put_metrics(*w, trial_id, 1,
                           {{last.int64(0) + 1, "train_loss", last.real(1) * 0.99, 1}});
      } else {
        ADD_FAILURE() << "trial " << trial_id << " has no train_loss";
      }
      std::ofstream(go) << "go\n";
    } else if (j.contains("page")) {
      seen[j["page"].get<std::string>()] = j;
    } else if (j.contains("fatal")) {
      other += j["fatal"].get<std::string>();
    }
  }
  const int node_status = ::pclose(node);
  const double browser_s = seconds_since(t1);
  ASSERT_EQ(WIFEXITED(node_status) ? WEXITSTATUS(node_status) : -1, 0) << other;
  for (const char* page :
       {"sweeps", "sweep", "sweep-sorting", "sweep-flops", "sweep-live", "layers", "trial"}) {
    ASSERT_TRUE(seen.count(page)) << "no report for page " << page << "\n" << other;
    EXPECT_EQ(seen[page]["errors"], json::array()) << page;
  }

  EXPECT_EQ(seen["sweeps"]["rows"], 1);
  EXPECT_EQ(seen["sweeps"]["progress"], "100.0 %");

  const json& sweep = seen["sweep"];
  EXPECT_EQ(sweep["rows"], kPatterns.size() * kSeeds);
  // One group per pattern, averaged over its seeds: n = 2, "mean ± std".
  ASSERT_EQ(sweep["groups"].size(), kPatterns.size());
  for (const auto& g : sweep["groups"]) {
    EXPECT_EQ(g[1], "2") << g.dump();
    EXPECT_NE(g[3].get<std::string>().find(" ± "), std::string::npos) << g.dump();
  }
  EXPECT_EQ(sweep["charts"]["loss"], loss_points);
  EXPECT_EQ(sweep["charts"]["bpb"], bpb_points);
  EXPECT_EQ(sweep["charts"]["pareto"], pareto_points);
  EXPECT_EQ(seen["sweep-sorting"]["asc"], json(best_first));
  std::vector<int64_t> worst_first(best_first.rbegin(), best_first.rend());
  EXPECT_EQ(seen["sweep-sorting"]["desc"], json(worst_first));
  EXPECT_EQ(seen["sweep-flops"]["points"], loss_points);
  ASSERT_EQ(seen["sweep-flops"]["flops"].size(), last_flops.size());
  for (const auto& d : seen["sweep-flops"]["flops"]) {
    const std::string label = d["label"].get<std::string>();  // "#ID PATTERN"
    const std::string id = label.substr(1, label.find(' ') - 1);
    ASSERT_TRUE(last_flops.count(id)) << label;
    EXPECT_NEAR(d["last"]["x"].get<double>(), last_flops[id], 1e-6 * last_flops[id]) << label;
    EXPECT_GT(last_flops[id], 0) << label;
  }
  EXPECT_EQ(seen["sweep-live"]["after"], seen["sweep-live"]["before"].get<int64_t>() + 1);

  EXPECT_EQ(seen["layers"]["order"], json(best_first));  // one row per trial, best val_bpb first
  std::vector<std::string> cells;
  for (int64_t id : best_first) cells.push_back(letters[id]);
  EXPECT_EQ(seen["layers"]["cells"], json(cells));

  const json& trial = seen["trial"];
  EXPECT_EQ(trial["charts"]["trial-train_loss"], trial_loss + 1);  // + the point added above
  EXPECT_EQ(trial["charts"]["trial-val_bpb"], trial_bpb);
  EXPECT_GT(trial["samples"].get<int>(), 0) << "sample_every: 8 writes samples to train.log";
  EXPECT_GT(trial["config_rows"].get<int>(), 10);
  EXPECT_NE(trial["run_dir"].get<std::string>().find("trial-" + std::to_string(trial_id)),
            std::string::npos);

  // 5. `hylab dashboard`: the same database without a coordinator.
  const int port2 = free_port();
  pids_.push_back(
      spawn({hylab, "dashboard", "--db", db_path, "--http", "127.0.0.1:" + std::to_string(port2)},
            (dir_ / "dashboard.log").string()));
  for (int i = 0; i < 150 && !answers(port2); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  httplib::Client cli("127.0.0.1", port2);
  auto layers = cli.Get(("/api/sweeps/" + std::to_string(sweep_id) + "/layers").c_str());
  ASSERT_TRUE(layers);
  EXPECT_EQ(json::parse(layers->body).size(), kPatterns.size() * kSeeds);

  std::printf("browser test: tiny sweep (data + 6 trials) %.1f s, browser checks %.1f s\n", sweep_s,
              browser_s);
}

}  // namespace
}  // namespace hylab::dashboard
