#include "worker/trial_runner.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>

#include "common/check.h"
#include "worker/metrics_tail.h"

namespace hylab::worker {
namespace {

namespace fs = std::filesystem;

const char* signal_name(int sig) {
  switch (sig) {
    case SIGKILL: return "SIGKILL";
    case SIGTERM: return "SIGTERM";
    case SIGSEGV: return "SIGSEGV";
    case SIGABRT: return "SIGABRT";
    case SIGINT: return "SIGINT";
    case SIGBUS: return "SIGBUS";
    default: return "a signal";
  }
}

}  // namespace

std::vector<std::string> trainer_argv(const LaunchSpec& spec) {
  std::vector<std::string> argv = {spec.hylab_bin, "train",
                                   "--config", spec.run_dir + "/config.json",
                                   "--run_dir", spec.run_dir,
                                   "--metrics_jsonl", spec.run_dir + "/metrics.a" + std::to_string(spec.attempt) + ".jsonl"};
  if (spec.resume) argv.push_back("--resume");
  if (spec.resume && spec.resume_step >= 0) {
    argv.push_back("--resume_step");
    argv.push_back(std::to_string(spec.resume_step));
  }
  if (spec.nproc > 1) {
    argv.push_back("--nproc");
    argv.push_back(std::to_string(spec.nproc));
  }
  return argv;
}

ExitInfo classify_exit(int status, bool cancel_requested, bool shutting_down) {
  ExitInfo e;
  auto terminated = [&](const std::string& how) {
    if (cancel_requested) {
      e.outcome = proto::TRIAL_OUTCOME_CANCELLED;
      e.reason = "cancelled (" + how + ")";
    } else {
      e.outcome = proto::TRIAL_OUTCOME_PREEMPTED;
      e.reason = shutting_down ? "preempted: the worker shut down (" + how + ")"
                               : "preempted: terminated from outside (" + how + ")";
    }
  };
  if (WIFEXITED(status)) {
    e.exit_code = WEXITSTATUS(status);
    switch (e.exit_code) {
      case proto::TRAINER_EXIT_OK: e.outcome = proto::TRIAL_OUTCOME_SUCCEEDED; break;
      case proto::TRAINER_EXIT_BAD_CONFIG: e.outcome = proto::TRIAL_OUTCOME_BAD_CONFIG; e.reason = "the trainer rejected the config (exit 2)"; break;
      case proto::TRAINER_EXIT_DIVERGED: e.outcome = proto::TRIAL_OUTCOME_DIVERGED; e.reason = "diverged: non-finite loss (exit 3)"; break;
      case proto::TRAINER_EXIT_OOM: e.outcome = proto::TRIAL_OUTCOME_OOM; e.reason = "out of memory (exit 4)"; break;
      case proto::TRAINER_EXIT_TERMINATED: terminated("exit 143"); break;
      default:
        e.outcome = cancel_requested ? proto::TRIAL_OUTCOME_CANCELLED : proto::TRIAL_OUTCOME_FAILED;
        e.reason = fmt::format("{}exit {}", cancel_requested ? "cancelled; " : "", e.exit_code);
    }
    return e;
  }
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    e.exit_code = -sig;
    const std::string how = fmt::format("killed by {} ({})", signal_name(sig), sig);
    if (cancel_requested || shutting_down || sig == SIGTERM) {
      terminated(how);
    } else {
      e.outcome = proto::TRIAL_OUTCOME_FAILED;
      e.reason = how + (sig == SIGKILL ? "; the kernel's OOM killer?" : "");
    }
    return e;
  }
  e.reason = "unknown wait status";
  return e;
}

std::string config_error_of(const std::string& log_tail) {
  const std::string marker = "config error: ";
  const size_t at = log_tail.rfind(marker);
  if (at == std::string::npos) return "";
  std::string line = log_tail.substr(at + marker.size());
  line = line.substr(0, line.find('\n'));
  if (line.size() > 1000) line = line.substr(0, 1000) + "...";
  return line;
}

std::string run_dir_escape(const std::string& work_dir, const std::string& run_dir) {
  std::error_code ec;
  const fs::path base = fs::weakly_canonical(fs::absolute(work_dir), ec);
  if (ec) return fmt::format("work_dir {}: {}", work_dir, ec.message());
  // weakly_canonical follows every link in the part of the path that exists.
  const fs::path target = fs::weakly_canonical(base / run_dir, ec);
  if (ec) return fmt::format("run_dir {}: {}", run_dir, ec.message());
  const auto mismatch = std::mismatch(base.begin(), base.end(), target.begin(), target.end());
  if (mismatch.first != base.end()) {
    return fmt::format("run_dir {} leads to {}, outside the work_dir {} (a symbolic link?); "
                       "refusing to write there", run_dir, target.string(), base.string());
  }
  return "";
}

TrialRunner::TrialRunner(LaunchSpec spec) : spec_(std::move(spec)) {}

TrialRunner::~TrialRunner() = default;  // ~Process kills the group of a running trainer

std::string TrialRunner::metrics_path() const {
  return spec_.run_dir + "/metrics.a" + std::to_string(spec_.attempt) + ".jsonl";
}

std::string TrialRunner::log_path() const {
  return spec_.run_dir + "/attempt-" + std::to_string(spec_.attempt) + ".log";
}

void TrialRunner::start() {
  std::error_code ec;
  fs::create_directories(spec_.run_dir, ec);
  if (ec) HYLAB_FAIL("cannot create run directory {}: {}", spec_.run_dir, ec.message());
  {
    std::ofstream cfg(spec_.run_dir + "/config.json");
    cfg << spec_.config_json << "\n";
    if (!cfg) HYLAB_FAIL("cannot write {}/config.json", spec_.run_dir);
  }
  fs::remove(metrics_path(), ec);  // a fresh spool for this attempt
  if (access(spec_.hylab_bin.c_str(), X_OK) != 0) {
    HYLAB_FAIL("trainer executable {} is not executable: {}", spec_.hylab_bin, std::strerror(errno));
  }
  // Its own process group (so cancel reaches every rank it starts), killed if the worker
  // dies, stdout and stderr to the attempt's log, stdin from /dev/null.
  SpawnOptions so;
  if (!spec_.gpu_indices.empty()) {
    std::string list;
    for (int g : spec_.gpu_indices) list += (list.empty() ? "" : ",") + std::to_string(g);
    so.extra_env.push_back("CUDA_VISIBLE_DEVICES=" + list);
  }
  so.extra_env.push_back("HYLAB_TRIAL_ID=" + std::to_string(spec_.trial_id));
  so.extra_env.push_back("HYLAB_ATTEMPT=" + std::to_string(spec_.attempt));
  for (const auto& [k, v] : spec_.env) so.extra_env.push_back(k + "=" + v);
  so.stdout_file = log_path();
  so.stderr_to_stdout = true;
  so.null_stdin = true;
  so.new_process_group = true;
  so.parent_death_signal = SIGKILL;
  proc_ = Process::spawn(trainer_argv(spec_), so);
  spdlog::info("trial {} attempt {}: started pid {} in {}{}", spec_.trial_id, spec_.attempt, proc_.pid(),
               spec_.run_dir, spec_.resume ? " (resume)" : "");
}

bool TrialRunner::poll(int64_t now_ms) {
  if (!started() || exited_) return exited_;
  if (const auto status = proc_.try_wait()) {
    exited_ = true;
    wait_status_ = status->wait_status;
    proc_.signal_group(SIGKILL);  // stragglers: ranks the trainer started, if any are left
    return true;
  }
  if (kill_at_ms_ >= 0 && now_ms >= kill_at_ms_) {
    spdlog::warn("trial {} attempt {}: still running after the grace period; SIGKILL", spec_.trial_id, spec_.attempt);
    proc_.signal_group(SIGKILL);
    kill_at_ms_ = -1;
  }
  return false;
}

void TrialRunner::cancel(int64_t now_ms, int grace_ms, bool shutting_down) {
  if (shutting_down) shutting_down_ = true;
  else cancel_requested_ = true;
  if (!started() || exited_) return;
  if (kill_at_ms_ < 0) {
    proc_.signal_group(SIGTERM);
    kill_at_ms_ = now_ms + grace_ms;
  }
}

ExitInfo TrialRunner::exit_info() const {
  return classify_exit(wait_status_, cancel_requested_, shutting_down_);
}

std::string TrialRunner::log_tail(size_t max_bytes) const {
  std::ifstream in(log_path(), std::ios::binary | std::ios::ate);
  if (!in) return "";
  const std::streamoff size = in.tellg();
  const std::streamoff from = std::max<std::streamoff>(0, size - static_cast<std::streamoff>(max_bytes));
  in.seekg(from);
  std::string out(static_cast<size_t>(size - from), '\0');
  in.read(out.data(), static_cast<std::streamsize>(out.size()));
  if (from > 0) {
    const size_t nl = out.find('\n');
    if (nl != std::string::npos) out = out.substr(nl + 1);
  }
  return out;
}

std::vector<proto::Metric> relayed_metrics(const std::string& run_dir, int64_t attempt,
                                           int64_t resume_step) {
  std::map<std::pair<std::string, int64_t>, proto::Metric> merged;
  for (const auto& [k, path] : earlier_attempt_spools(run_dir, attempt)) {
    const auto records = read_all_records(path);
    for (const auto& r : records) {
      if (r.kind != Record::Kind::kMetric || r.metric.step() > resume_step) continue;
      proto::Metric m = r.metric;
      m.set_attempt(k);
      merged[{m.name(), m.step()}] = m;
    }
  }
  std::vector<proto::Metric> sorted;
  for (auto& [key, m] : merged) sorted.push_back(m);
  std::stable_sort(sorted.begin(), sorted.end(),
                   [](const proto::Metric& x, const proto::Metric& y) { return x.step() < y.step(); });
  return sorted;
}

std::vector<std::pair<int64_t, std::string>> earlier_attempt_spools(const std::string& run_dir, int64_t before) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  if (!fs::is_directory(run_dir, ec)) return out;
  static const std::regex kName(R"(metrics\.a(\d+)\.jsonl)");
  for (const auto& e : fs::directory_iterator(run_dir, ec)) {
    std::smatch m;
    const std::string name = e.path().filename().string();
    if (std::regex_match(name, m, kName)) {
      const int64_t a = std::stoll(m[1]);
      if (a < before) out.push_back({a, e.path().string()});
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace hylab::worker
