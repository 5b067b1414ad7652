// `hylab logs TRIAL`: print a trial's log. A sweep trial's log is the file its worker wrote,
// <run_dir>/attempt-<A>.log (the trainer's stdout and stderr; worker/trial_runner.h), found
// through the attempt's absolute run_dir on the worker (SQLite trial_attempts.run_dir, or
// --work_dir + trials.run_dir). A local `hylab train` run's log is <run_dir>/train.log. When
// the file is not on this machine, the end of the output that the coordinator stored
// (trial_attempts.log_tail) is printed instead, with a note on stderr saying so.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "cli/daemon_flags.h"
#include "common/check.h"
#include "store/db.h"

namespace hylab::cli {
namespace {

namespace fs = std::filesystem;

struct Flags {
  std::string db = default_db_path();
  int64_t trial_id = 0;
  int64_t attempt = 0;  // 0 = the newest
  std::string work_dir;
};

struct Attempt {
  int64_t attempt = 0;
  std::string worker_id, run_dir, log_tail;
};

void print_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) HYLAB_FAIL("cannot read {}", path.string());
  std::cout << in.rdbuf();
  std::cout.flush();
}

void run(const Flags& f) {
  auto db = store::Db::open(f.db, /*read_only=*/true);
  auto trial = db->prepare(
      "SELECT t.state, t.run_dir, t.attempt, s.name FROM trials t JOIN sweeps s USING(sweep_id) "
      "WHERE t.trial_id = ?");
  trial.bind(1, f.trial_id);
  if (!trial.step()) {
    HYLAB_FAIL("no trial with trial_id {} in {} (`hylab results --db {}` lists the trials)",
               f.trial_id, f.db, f.db);
  }
  const std::string state = trial.text(0), trial_run_dir = trial.text(1), sweep = trial.text(3);
  const bool local = sweep == "local";
  auto at = db->prepare(
      "SELECT attempt, worker_id, run_dir, log_tail FROM trial_attempts WHERE trial_id = ? "
      "AND (?2 = 0 OR attempt = ?2) ORDER BY attempt DESC LIMIT 1");
  at.bind(1, f.trial_id).bind(2, f.attempt);
  Attempt a;
  if (at.step()) {
    a = {at.int64(0), at.text(1), at.text(2), at.text(3)};
  } else if (f.attempt > 0) {
    HYLAB_FAIL("trial {} has no attempt {} (it has made {})", f.trial_id, f.attempt,
               trial.int64(2));
  } else {
    HYLAB_FAIL("trial {} has not started yet (state {}): no log", f.trial_id, state);
  }

  // Candidate folders, most specific first.
  std::vector<fs::path> dirs;
  if (!a.run_dir.empty()) dirs.emplace_back(a.run_dir);
  if (fs::path(trial_run_dir).is_absolute()) dirs.emplace_back(trial_run_dir);
  if (!f.work_dir.empty() && !trial_run_dir.empty())
    dirs.push_back(fs::path(f.work_dir) / trial_run_dir);
  // A worker's attempt log holds everything the trainer printed (also errors); train.log is
  // rank 0's own log, the only one of a local run.
  std::vector<std::string> names = {"train.log"};
  if (!local) names.insert(names.begin(), "attempt-" + std::to_string(a.attempt) + ".log");
  std::string looked;
  for (const auto& d : dirs) {
    for (const auto& name : names) {
      const fs::path p = d / name;
      looked += (looked.empty() ? "" : ", ") + p.string();
      std::error_code ec;
      if (fs::is_regular_file(p, ec)) return print_file(p);
    }
  }
  if (looked.empty()) looked = "no run folder recorded";
  if (!a.log_tail.empty()) {
    std::fprintf(
        stderr,
        "hylab logs: trial %lld attempt %lld ran on %s; its log file is not on this machine "
        "(looked at %s); the end of its output stored in %s follows (--work_dir DIR finds "
        "the file on a shared filesystem)\n",
        static_cast<long long>(f.trial_id), static_cast<long long>(a.attempt), a.worker_id.c_str(),
        looked.c_str(), f.db.c_str());
    std::fputs(a.log_tail.c_str(), stdout);
    if (a.log_tail.back() != '\n') std::fputc('\n', stdout);
    return;
  }
  HYLAB_FAIL(
      "trial {} attempt {} (worker {}): no log file found (looked at {}) and no stored "
      "output yet; for a sweep trial pass --work_dir, the workers' --work_dir on a shared "
      "filesystem",
      f.trial_id, a.attempt, a.worker_id, looked);
}

void setup(CLI::App& root) {
  auto* cmd =
      root.add_subcommand("logs", "Print a trial's log (the trainer's output for that trial)");
  auto f = std::make_shared<Flags>();
  cmd->add_option("trial_id", f->trial_id, "The trial (trial_id, as `hylab results` shows)")
      ->required();
  cmd->add_option(flag("db"), f->db,
                  "SQLite results database (default $HYLAB_DB, else runs/hylab.db)");
  cmd->add_option(flag("attempt"), f->attempt, "This attempt's log (default: the newest)");
  cmd->add_option(flag("work_dir"), f->work_dir,
                  "The workers' --work_dir, where a sweep trial's run_dir is (when the database "
                  "does not hold the absolute folder)");
  cmd->callback([f] { run(*f); });
}

HYLAB_REGISTER_COMMAND("logs", 56, setup);

}  // namespace
}  // namespace hylab::cli
