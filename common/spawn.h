// Child processes: the one helper for fork/exec, pipes, process groups, waiting and killing.
//
// Used for trainer ranks (trainer/launch.cpp), the sentencepiece helper (trainer/tokenizer.cpp),
// a worker's trainer (worker/trial_runner.cpp), `hylab local`'s daemons (cli/cmd_local.cpp) and
// the load generator's coordinator (sim/load_bench.cpp).
//
// spawn forks and execs argv[0] (a path, not searched in PATH) with our environment plus
// SpawnOptions::extra_env. Everything the child needs is prepared before fork; between fork and
// exec the child calls only async-signal-safe functions, so spawning from a process that runs
// threads is safe. An exec that fails is reported by spawn itself (an error pipe), not as an
// exit status. A Process that is destroyed while its child still runs kills it with SIGKILL
// (its whole group when it has its own) and reaps it: no child outlives its owner by accident.
// One owner thread; movable, not copyable.
#pragma once

#include <sys/types.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace hylab {

struct SpawnOptions {
  std::vector<std::string> extra_env;  // "KEY=VALUE", added to (and overriding) ours
  std::string cwd;                     // the child's working directory ("" = ours)
  bool pipe_stdin = false;             // the parent writes to stdin_fd()
  bool null_stdin = false;             // the child reads /dev/null
  bool pipe_stdout = false;            // the parent reads stdout_fd()
  std::string stdout_file;             // if set (and no stdout pipe): stdout to this file, truncated
  std::string stderr_file;             // if set: stderr to this file, truncated
  bool stderr_to_stdout = false;       // stderr goes where stdout goes (2>&1)
  // The child leads a process group of its own (setpgid, in the child and in the parent, so
  // signal_group works at once): Ctrl-C at our terminal does not reach it, and signal_group
  // reaches every process it starts.
  bool new_process_group = false;
  // PR_SET_PDEATHSIG: the child gets this signal when we die (0: it does not). A child whose
  // parent died before the setting took hold exits 127 at once.
  int parent_death_signal = 0;
};

// How a child ended: the status waitpid reported.
struct ExitStatus {
  int wait_status = 0;
  bool exited() const;      // by exit(): exit_code() is valid
  int exit_code() const;
  bool signaled() const;    // by a signal: term_signal() is valid
  int term_signal() const;
  // The shell's convention: the exit code, or 128 + the signal.
  int code() const;
};

class Process {
 public:
  // Throws hylab::Error when a file cannot be opened, fork fails or the program cannot be
  // executed (the message names it). With a stdin pipe, SIGPIPE is ignored process-wide (a
  // dead child is an error, not our death).
  static Process spawn(const std::vector<std::string>& argv, const SpawnOptions& opt);
  // Forks and runs `body` in the child (no exec), which then ends with body's return value
  // (std::_Exit: no atexit handlers, no destructors of the parent's objects); an exception
  // out of body ends it with 1. Fork before this process starts threads: only the calling
  // thread exists in the child. extra_env and cwd are not supported here.
  static Process fork_call(const std::function<int()>& body, const SpawnOptions& opt);

  Process() = default;
  Process(Process&& other) noexcept;
  Process& operator=(Process&& other) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process();

  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0 && !reaped_; }  // started and not reaped
  int stdin_fd() const { return stdin_fd_; }
  int stdout_fd() const { return stdout_fd_; }
  void close_stdin();

  // Blocks until the child exits (reaps it). Once reaped, returns the same status again.
  ExitStatus wait();
  // Non-blocking: the status once the child has exited (reaped), else nullopt.
  std::optional<ExitStatus> try_wait();
  // The child only; a no-op once reaped.
  void signal(int sig);
  // The child's process group (new_process_group): it and everything it started. Also after
  // the child was reaped, for stragglers of the group. Without a group of its own: signal().
  void signal_group(int sig);

 private:
  Process(pid_t pid, bool own_group, int stdin_fd, int stdout_fd);
  void reset();
  pid_t pid_ = -1;
  bool own_group_ = false;
  bool reaped_ = false;
  ExitStatus status_;
  int stdin_fd_ = -1, stdout_fd_ = -1;
};

// Path of the running executable (/proc/self/exe).
std::string self_executable_path();

}  // namespace hylab
