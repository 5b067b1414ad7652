// `hylab local FILE`: a coordinator and N workers as child processes on loopback (a free
// port, plain TCP), the sweep submitted, progress shown, the results table at the end.
// Exits 0 if every trial succeeded.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "cli/daemon_flags.h"
#include "cli/dashboard_flags.h"
#include "cli/sweep_progress.h"
#include "common/check.h"
#include "common/spawn.h"
#include "common/states.h"
#include "sweep/submission.h"
#include "store/compare.h"
#include "store/results.h"

namespace hylab::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

struct Flags {
  std::string file;
  int workers = 1;
  int slots = 1;
  std::string gpus = "auto";
  std::string db = default_db_path();
  std::string work_dir = "runs/work";
  int heartbeat_ms = 1000;
  int summary_every_s = 30;
  std::string hylab_bin;  // the trainer executable the workers run; empty: this one
#ifdef HYLAB_HAS_DASHBOARD
  DashboardFlags web;  // --http: the coordinator serves the dashboard
#endif
};

struct Child {
  std::string name;
  Process proc;
  std::string log;
};

// A daemon child: own process group (Ctrl-C reaches only us; we stop it in order), sent
// SIGTERM if we die, output to its log file.
Child spawn(const std::string& name, const std::vector<std::string>& args, const std::string& log) {
  SpawnOptions so;
  so.stdout_file = log;
  so.stderr_to_stdout = true;
  so.new_process_group = true;
  so.parent_death_signal = SIGTERM;
  return {name, Process::spawn(args, so), log};
}

bool alive(Child& c) { return c.proc.running() && !c.proc.try_wait(); }

// SIGTERM to the daemon; after timeout_ms, SIGKILL to its group.
void stop(Child& c, int timeout_ms) {
  if (!alive(c)) return;
  c.proc.signal(SIGTERM);
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (Clock::now() < deadline) {
    if (!alive(c)) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  c.proc.signal_group(SIGKILL);
  c.proc.wait();
}

std::string tail_of(const std::string& path, size_t n = 2000) {
  std::ifstream in(path);
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return s.size() > n ? s.substr(s.size() - n) : s;
}

std::string params_text(const json& params) {
  std::string out;
  for (auto it = params.begin(); it != params.end(); ++it) {
    if (it.key() == "attention_fraction" || it.key() == "placement" || it.key() == "first_layer" ||
        it.key() == "last_layer") {
      continue;
    }
    out += (out.empty() ? "" : " ") + it.key() + "=" +
           (it.value().is_string() ? it.value().get<std::string>() : it.value().dump());
  }
  return out;
}

// The closing table: with `seeds`, one row per configuration (the swept parameters other
// than seed): mean ± std and n per group with the significance marking; without, one row per
// trial and a warning that a single-seed ranking has no error bars.
std::string closing_table(const proto::SweepSpec& spec, const store::Table& trials) {
  store::GroupQuery g;
  g.metric = spec.metric().name();
  g.goal = store::parse_goal(spec.metric().goal(), "metric.goal");
  if (spec.seeds_size() > 0) {
    for (const auto& p : spec.parameters()) {
      if (p.has_generate()) {
        g.group_by.push_back("block_pattern");
      } else if (p.name() != "seed") {
        g.group_by.push_back(p.name());
      }
    }
    return store::render_groups(trials, g, store::Format::kTable);
  }
  std::string out = store::render(trials, store::Format::kTable);
  for (const auto& p : spec.parameters()) g.group_by.push_back(p.has_generate() ? "block_pattern" : p.name());
  out += store::groups_footer(store::group_trials(trials, g), g);
  return out;
}

int run_local(const Flags& f) {
  const std::string self = fs::read_symlink("/proc/self/exe").string();
  // Expand first: a bad sweep fails here, before any daemon starts.
  coordinator::Submission sub = coordinator::prepare_submission(f.file);
  if (f.workers < 1) HYLAB_FAIL("--workers {}: expected >= 1", f.workers);
  fs::create_directories(f.work_dir);
  const fs::path logs = fs::path(f.work_dir) / "local-logs";
  fs::create_directories(logs);
  const std::string endpoint_file = (logs / ("endpoint." + std::to_string(getpid()))).string();
  fs::remove(endpoint_file);
  const auto t0 = Clock::now();
  auto stamp = [&] {
    const auto s = std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - t0).count();
    return fmt::format("[{:02d}:{:02d}]", s / 60, s % 60);
  };

  std::vector<Child> children;
  std::vector<std::string> coordinator_args = {self, "coordinator", "--db", f.db, "--bind", "tcp://127.0.0.1:*",
                                               "--endpoint_file", endpoint_file, "--insecure", "--heartbeat_ms",
                                               std::to_string(f.heartbeat_ms)};
#ifdef HYLAB_HAS_DASHBOARD
  if (!f.web.http.empty()) {
    for (const std::string& a : {std::string("--http"), f.web.http, std::string("--work_dir"), f.work_dir}) {
      coordinator_args.push_back(a);
    }
    if (!f.web.token_file.empty()) coordinator_args.insert(coordinator_args.end(), {"--http_token_file", f.web.token_file});
    if (!f.web.web_dir.empty()) coordinator_args.insert(coordinator_args.end(), {"--web_dir", f.web.web_dir});
  }
#endif
  children.push_back(spawn("coordinator", coordinator_args, (logs / "coordinator.log").string()));
  auto cleanup = [&] {
    for (size_t i = children.size(); i-- > 1;) stop(children[i], 20000);  // workers first
    stop(children[0], 5000);
    fs::remove(endpoint_file);
  };
  try {
    std::string endpoint;
    for (int i = 0; i < 600 && endpoint.empty(); ++i) {
      if (!alive(children[0])) {
        HYLAB_FAIL("the coordinator exited at start; its log ({}):\n{}", children[0].log, tail_of(children[0].log));
      }
      std::ifstream in(endpoint_file);
      std::getline(in, endpoint);
      if (endpoint.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (endpoint.empty()) HYLAB_FAIL("the coordinator did not start within 30 s; see {}", children[0].log);
    // The daemons always run this executable; their trials run --hylab_bin (e.g. a normal build
    // while the daemons run under ThreadSanitizer).
    const std::string trainer_bin = f.hylab_bin.empty() ? self : f.hylab_bin;
    for (int i = 0; i < f.workers; ++i) {
      children.push_back(spawn("worker " + std::to_string(i),
                               {self, "worker", "--coordinator", endpoint, "--insecure", "--work_dir",
                                f.work_dir, "--gpus", f.gpus, "--slots", std::to_string(f.slots),
                                "--heartbeat_ms", std::to_string(f.heartbeat_ms), "--hylab_bin", trainer_bin},
                               (logs / ("worker-" + std::to_string(i) + ".log")).string()));
    }
    wire::Security insecure;
    insecure.insecure = true;
    wire::Client client(endpoint, insecure, 30000);
    proto::ClientRequest req;
    *req.mutable_submit_sweep() = sub.request;
    const int64_t sweep_id = client.call_json(req).at("sweep_id").get<int64_t>();
    std::printf("%s sweep %lld (%s): %zu trials on %d local worker(s); coordinator %s; logs in %s\n",
                stamp().c_str(), static_cast<long long>(sweep_id), sub.spec.name().c_str(),
                sub.expansion.trials.size(), f.workers, endpoint.c_str(), logs.string().c_str());
#ifdef HYLAB_HAS_DASHBOARD
    if (!f.web.http.empty()) {
      const auto a = dashboard::parse_http_address(f.web.http, "--http");
      std::printf("%s dashboard: http://%s:%d/sweep/%lld\n", stamp().c_str(),
                  a.host.find(':') == std::string::npos ? a.host.c_str() : ("[" + a.host + "]").c_str(), a.port,
                  static_cast<long long>(sweep_id));
    }
#endif
    std::fflush(stdout);

    std::map<int64_t, std::string> last_state;
    auto next_summary = Clock::now() + std::chrono::seconds(f.summary_every_s);
    bool cancelled = false;
    json sweep;
    while (true) {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      for (size_t i = 0; i < children.size(); ++i) {
        if (!alive(children[i])) {
          HYLAB_FAIL("{} exited unexpectedly; its log ({}):\n{}", children[i].name, children[i].log,
                     tail_of(children[i].log));
        }
      }
      if (stop_requested().load() && !cancelled) {
        cancelled = true;
        std::printf("%s interrupted: cancelling sweep %lld\n", stamp().c_str(), static_cast<long long>(sweep_id));
        proto::ClientRequest c;
        c.set_cancel_sweep(sweep_id);
        try {
          client.call(c);
        } catch (const Error& e) {
          std::printf("%s %s\n", stamp().c_str(), e.what());
        }
      }
      proto::ClientRequest show;
      show.set_show_sweep(sweep_id);
      sweep = client.call_all_pages(show, "trials");
      for (const auto& t : sweep["trials"]) {
        const int64_t id = t["trial_id"].get<int64_t>();
        const std::string state = t["state"].get<std::string>();
        if (last_state[id] == state) continue;
        last_state[id] = state;
        std::string extra;
        if (parse_trial_state(state) == proto::TRIAL_STATE_RUNNING) {
          extra = fmt::format(" (attempt {} on {})", t["attempt"].get<int64_t>(), t["worker_id"].get<std::string>());
        }
        if (!t["final_val_bpb"].is_null()) extra += fmt::format(" val_bpb {:.4f}", t["final_val_bpb"].get<double>());
        const std::string metric = sweep["metric"]["name"].get<std::string>();
        if (metric != "val_bpb" && !t["metric"].is_null()) {
          extra += fmt::format(" {} {:.4f}", metric, t["metric"].get<double>());
        }
        if (!t["reason"].get<std::string>().empty()) extra += ": " + t["reason"].get<std::string>();
        std::printf("%s trial %lld [%s] %s%s\n", stamp().c_str(), static_cast<long long>(id),
                    params_text(t["params"]).c_str(), state.c_str(), extra.c_str());
      }
      const proto::SweepState sweep_state = parse_sweep_state(sweep["state"].get<std::string>());
      if (Clock::now() >= next_summary && sweep_state == proto::SWEEP_STATE_RUNNING) {
        next_summary = Clock::now() + std::chrono::seconds(f.summary_every_s);
        std::string counts, steps;
        for (auto it = sweep["counts"].begin(); it != sweep["counts"].end(); ++it) {
          counts += fmt::format("{}{} {}", counts.empty() ? "" : ", ", it.value().get<int64_t>(), it.key());
        }
        for (const auto& t : sweep["trials"]) {
          if (parse_trial_state(t["state"].get<std::string>()) != proto::TRIAL_STATE_RUNNING) continue;
          steps += fmt::format(" #{}@{}", t["trial_id"].get<int64_t>(), t["last_step"].get<int64_t>());
        }
        std::printf("%s sweep %lld: %s;%s\n", stamp().c_str(), static_cast<long long>(sweep_id), counts.c_str(),
                    steps.empty() ? "" : (" running at step" + steps).c_str());
      }
      std::fflush(stdout);
      if (sweep_state != proto::SWEEP_STATE_RUNNING) break;
    }
    cleanup();
    auto db = store::Db::open(f.db, /*read_only=*/true);
    store::ResultsQuery q;
    q.sweep_id = sweep_id;
    proto::SweepSpec spec = sub.spec;
    if (store::results(*db, q).column(spec.metric().name()) < 0) {
      spec.mutable_metric()->set_name("val_bpb");  // a metric that is not a results column
      spec.mutable_metric()->set_goal("minimize");
    }
    q.sort = (spec.metric().goal() == "maximize" ? "-" : "") + spec.metric().name();
    const store::Table trials = store::results(*db, q);
    std::printf("\nsweep %lld %s in %s\n", static_cast<long long>(sweep_id),
                sweep["state"].get<std::string>().c_str(), stamp().c_str());
    std::fputs(closing_table(spec, trials).c_str(), stdout);
    std::printf("results: hylab results --db %s --sweep %lld  (curves: --curves TRIAL_ID...)\n",
                f.db.c_str(), static_cast<long long>(sweep_id));
    return local_exit_status(sweep);  // early-stopped trials are a normal outcome
  } catch (...) {
    cleanup();
    throw;
  }
}

void setup(CLI::App& root) {
  auto* cmd = root.add_subcommand("local", "Run a sweep on this machine: a coordinator and N workers, then the results table");
  auto f = std::make_shared<Flags>();
  cmd->add_option("file", f->file, "Sweep spec (YAML), e.g. sweeps/quickstart.yaml")->required();
  cmd->add_option(flag("workers"), f->workers, "Worker processes")->capture_default_str();
  cmd->add_option(flag("slots"), f->slots, "CPU trial slots per worker (without GPUs)")->capture_default_str();
  cmd->add_option(flag("gpus"), f->gpus, "GPUs for the workers: auto, none or a list")->capture_default_str();
  cmd->add_option(flag("db"), f->db, "SQLite results database (default $HYLAB_DB, else runs/hylab.db)");
  cmd->add_option(flag("work_dir"), f->work_dir, "Run directories and daemon logs")->capture_default_str();
  cmd->add_option(flag("heartbeat_ms"), f->heartbeat_ms, "Daemon heartbeat interval")->capture_default_str();
  cmd->add_option(flag("summary_every_s"), f->summary_every_s, "Seconds between progress summaries")->capture_default_str();
  cmd->add_option(flag("hylab_bin"), f->hylab_bin,
                  "The hylab executable trials run (default: this one; the coordinator and workers always run this one)");
#ifdef HYLAB_HAS_DASHBOARD
  f->web.add_to(cmd, "The coordinator also serves the read-only web dashboard on HOST:PORT, e.g. 127.0.0.1:8080");
#endif
  cmd->callback([f] {
    install_stop_signals();
    exit_status() = run_local(*f);
  });
}

HYLAB_REGISTER_COMMAND("local", 10, setup);

}  // namespace
}  // namespace hylab::cli
