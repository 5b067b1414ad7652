// Child processes: the sentencepiece helper (tokenizer.cpp) and trainer ranks (launch.cpp).
//
// posix_spawn (safe in a process that already runs threads), optional pipes to the child's
// stdin/stdout, extra environment variables. A Subprocess that is destroyed while the child
// still runs kills it (SIGKILL) and reaps it, so no child outlives its owner by accident.
// Torch-free; one owner thread.
#pragma once

#include "common/fd_io.h"  // read_all / write_all on the pipes

#include <sys/types.h>

#include <string>
#include <vector>

namespace hylab::trainer {

class Subprocess {
 public:
  struct Options {
    bool pipe_stdin = false;   // parent writes to stdin_fd()
    bool pipe_stdout = false;  // parent reads from stdout_fd()
    std::vector<std::string> extra_env;  // "KEY=VALUE", added to (and overriding) ours
    std::string stdout_file;  // if set (and no stdout pipe), the child's stdout goes here
    std::string stderr_file;  // if set, the child's stderr goes to this file (truncated)
  };

  // argv[0] is the program path. Throws hylab::Error if the program cannot be started.
  // With a stdin pipe, SIGPIPE is ignored process-wide (a dead child is an error, not death).
  static Subprocess spawn(const std::vector<std::string>& argv, const Options& opt);

  Subprocess() = default;
  Subprocess(Subprocess&& other) noexcept;
  Subprocess& operator=(Subprocess&& other) noexcept;
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;
  ~Subprocess();

  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0 && !reaped_; }
  int stdin_fd() const { return stdin_fd_; }
  int stdout_fd() const { return stdout_fd_; }
  void close_stdin();

  // Blocks until the child exits; returns its exit code, or 128 + signal if a signal ended it.
  int wait();
  // Non-blocking: true (and *code set as for wait) if the child has exited.
  bool poll(int* code);
  void signal(int sig);  // no-op once reaped

 private:
  void reset();
  pid_t pid_ = -1;
  bool reaped_ = false;
  int exit_code_ = -1;
  int stdin_fd_ = -1, stdout_fd_ = -1;
};

// Path of the running executable (/proc/self/exe).
std::string self_executable_path();


}  // namespace hylab::trainer
