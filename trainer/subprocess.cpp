#include "trainer/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <map>

#include "common/check.h"

extern char** environ;

namespace hylab::trainer {
namespace {

int code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace

Subprocess Subprocess::spawn(const std::vector<std::string>& argv, const Options& opt) {
  HYLAB_CHECK(!argv.empty(), "Subprocess::spawn: empty argv");
  int in_pipe[2] = {-1, -1}, out_pipe[2] = {-1, -1};
  if (opt.pipe_stdin && ::pipe2(in_pipe, O_CLOEXEC) != 0) HYLAB_FAIL("pipe: {}", std::strerror(errno));
  if (opt.pipe_stdout && ::pipe2(out_pipe, O_CLOEXEC) != 0) {
    HYLAB_FAIL("pipe: {}", std::strerror(errno));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (opt.pipe_stdin) posix_spawn_file_actions_adddup2(&actions, in_pipe[0], 0);
  if (opt.pipe_stdout) posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
  if (!opt.stdout_file.empty() && !opt.pipe_stdout) {
    posix_spawn_file_actions_addopen(&actions, 1, opt.stdout_file.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
  }
  if (!opt.stderr_file.empty()) {
    posix_spawn_file_actions_addopen(&actions, 2, opt.stderr_file.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
  }
  if (opt.pipe_stdin) ::signal(SIGPIPE, SIG_IGN);

  // Environment: ours, with extra_env overriding by key.
  std::map<std::string, std::string> env;
  for (char** e = environ; e && *e; ++e) {
    const std::string kv(*e);
    const size_t eq = kv.find('=');
    if (eq != std::string::npos) env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  for (const std::string& kv : opt.extra_env) {
    const size_t eq = kv.find('=');
    HYLAB_CHECK(eq != std::string::npos, "extra_env entry \"{}\" is not KEY=VALUE", kv);
    env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  std::vector<std::string> env_strings;
  for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp, args;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_copy = argv;
  for (auto& s : argv_copy) args.push_back(s.data());
  args.push_back(nullptr);

  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, argv[0].c_str(), &actions, nullptr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  if (opt.pipe_stdin) ::close(in_pipe[0]);
  if (opt.pipe_stdout) ::close(out_pipe[1]);
  if (rc != 0) {
    if (opt.pipe_stdin) ::close(in_pipe[1]);
    if (opt.pipe_stdout) ::close(out_pipe[0]);
    HYLAB_FAIL("cannot start {}: {}", argv[0], std::strerror(rc));
  }
  Subprocess p;
  p.pid_ = pid;
  p.stdin_fd_ = opt.pipe_stdin ? in_pipe[1] : -1;
  p.stdout_fd_ = opt.pipe_stdout ? out_pipe[0] : -1;
  return p;
}

Subprocess::Subprocess(Subprocess&& o) noexcept { *this = std::move(o); }

Subprocess& Subprocess::operator=(Subprocess&& o) noexcept {
  if (this != &o) {
    reset();
    pid_ = o.pid_;
    reaped_ = o.reaped_;
    exit_code_ = o.exit_code_;
    stdin_fd_ = o.stdin_fd_;
    stdout_fd_ = o.stdout_fd_;
    o.pid_ = -1;
    o.stdin_fd_ = o.stdout_fd_ = -1;
  }
  return *this;
}

Subprocess::~Subprocess() { reset(); }

void Subprocess::reset() {
  close_stdin();
  if (stdout_fd_ >= 0) ::close(stdout_fd_);
  stdout_fd_ = -1;
  if (running()) {
    ::kill(pid_, SIGKILL);
    wait();
  }
  pid_ = -1;
  reaped_ = false;
}

void Subprocess::close_stdin() {
  if (stdin_fd_ >= 0) ::close(stdin_fd_);
  stdin_fd_ = -1;
}

int Subprocess::wait() {
  if (pid_ <= 0) return exit_code_;
  if (reaped_) return exit_code_;
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0) {
    if (errno != EINTR) return exit_code_ = 1;
  }
  reaped_ = true;
  return exit_code_ = code_of(status);
}

bool Subprocess::poll(int* code) {
  if (pid_ <= 0) return false;
  if (!reaped_) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == 0) return false;
    reaped_ = true;
    exit_code_ = r < 0 ? 1 : code_of(status);
  }
  if (code) *code = exit_code_;
  return true;
}

void Subprocess::signal(int sig) {
  if (running()) ::kill(pid_, sig);
}

std::string self_executable_path() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  HYLAB_CHECK(n > 0, "readlink(/proc/self/exe): {}", std::strerror(errno));
  return std::string(buf, static_cast<size_t>(n));
}

}  // namespace hylab::trainer
