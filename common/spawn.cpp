#include "common/spawn.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <map>
#include <utility>
#include <vector>

#include "common/check.h"

extern char** environ;

namespace hylab {
namespace {

// File descriptors the child takes as 0, 1, 2 (-1: keep ours), opened by the parent before
// fork (so that a bad path is an error of spawn, with its name), all O_CLOEXEC.
struct ChildFds {
  int in = -1, out = -1, err = -1;
  bool err_to_out = false;
  std::vector<int> child_ends;         // closed in the parent once the child has them
  int parent_in = -1, parent_out = -1;  // the parent's ends of the pipes, until released

  ~ChildFds() {
    for (int fd : child_ends) ::close(fd);
    if (parent_in >= 0) ::close(parent_in);
    if (parent_out >= 0) ::close(parent_out);
  }
  // Hands the parent's ends to a Process.
  std::pair<int, int> release() {
    const std::pair<int, int> ends{parent_in, parent_out};
    parent_in = parent_out = -1;
    return ends;
  }
};

int open_cloexec(const std::string& path, int flags, std::vector<int>* owned) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC, 0644);
  if (fd < 0) HYLAB_FAIL("cannot open {}: {}", path, std::strerror(errno));
  owned->push_back(fd);
  return fd;
}

void make_pipe(int fds[2]) {
  if (::pipe2(fds, O_CLOEXEC) != 0) HYLAB_FAIL("pipe: {}", std::strerror(errno));
}

// Opens what the options ask for. On an exception, ~ChildFds closes what was opened.
void open_child_fds(const SpawnOptions& opt, ChildFds* c) {
  int p[2];
  if (opt.pipe_stdin) {
    make_pipe(p);
    c->child_ends.push_back(c->in = p[0]);
    c->parent_in = p[1];
  } else if (opt.null_stdin) {
    c->in = open_cloexec("/dev/null", O_RDONLY, &c->child_ends);
  }
  if (opt.pipe_stdout) {
    make_pipe(p);
    c->child_ends.push_back(c->out = p[1]);
    c->parent_out = p[0];
  } else if (!opt.stdout_file.empty()) {
    c->out = open_cloexec(opt.stdout_file, O_WRONLY | O_CREAT | O_TRUNC, &c->child_ends);
  }
  if (!opt.stderr_file.empty()) {
    c->err = open_cloexec(opt.stderr_file, O_WRONLY | O_CREAT | O_TRUNC, &c->child_ends);
  }
  c->err_to_out = opt.stderr_to_stdout;
}

// In the child, between fork and exec: async-signal-safe calls only. Returns false (errno
// set) when a step failed.
bool setup_child(const SpawnOptions& opt, const ChildFds& c, pid_t parent) {
  if (opt.new_process_group) ::setpgid(0, 0);
  if (opt.parent_death_signal != 0) {
    ::prctl(PR_SET_PDEATHSIG, opt.parent_death_signal);
    if (::getppid() != parent) ::_exit(127);  // the parent died before prctl
  }
  if (c.in >= 0 && ::dup2(c.in, STDIN_FILENO) < 0) return false;
  if (c.out >= 0 && ::dup2(c.out, STDOUT_FILENO) < 0) return false;
  if (c.err >= 0 && ::dup2(c.err, STDERR_FILENO) < 0) return false;
  if (c.err_to_out && ::dup2(STDOUT_FILENO, STDERR_FILENO) < 0) return false;
  return true;
}

// What the child reports through the error pipe when it cannot exec.
struct ChildError {
  int stage = 0;  // 1: redirecting, 2: chdir, 3: exec
  int err = 0;
};

void report_and_exit(int fd, int stage) {
  const ChildError e{stage, errno};
  (void)!::write(fd, &e, sizeof(e));
  ::_exit(127);
}

// Also from the parent, so that signal_group works at once (EACCES once the child has
// exec'd: it did it itself then).
void join_group(pid_t pid, const SpawnOptions& opt) {
  if (opt.new_process_group) ::setpgid(pid, pid);
}

}  // namespace

bool ExitStatus::exited() const { return WIFEXITED(wait_status); }
int ExitStatus::exit_code() const { return WEXITSTATUS(wait_status); }
bool ExitStatus::signaled() const { return WIFSIGNALED(wait_status); }
int ExitStatus::term_signal() const { return WTERMSIG(wait_status); }
int ExitStatus::code() const {
  if (exited()) return exit_code();
  if (signaled()) return 128 + term_signal();
  return 1;
}

Process Process::spawn(const std::vector<std::string>& argv, const SpawnOptions& opt) {
  HYLAB_CHECK(!argv.empty(), "Process::spawn: empty argv");
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

  ChildFds c;
  open_child_fds(opt, &c);
  int err_pipe[2];
  make_pipe(err_pipe);
  c.child_ends.push_back(err_pipe[0]);  // closed with the child's ends, at return
  if (opt.pipe_stdin) ::signal(SIGPIPE, SIG_IGN);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int e = errno;
    ::close(err_pipe[1]);
    HYLAB_FAIL("cannot start {}: fork: {}", argv[0], std::strerror(e));
  }
  if (pid == 0) {
    if (!setup_child(opt, c, parent)) report_and_exit(err_pipe[1], 1);
    if (!opt.cwd.empty() && ::chdir(opt.cwd.c_str()) != 0) report_and_exit(err_pipe[1], 2);
    ::execve(args[0], args.data(), envp.data());
    report_and_exit(err_pipe[1], 3);
  }
  // The parent: close the write end, then read until exec closes it (O_CLOEXEC) or the
  // child reports why it could not get there.
  ::close(err_pipe[1]);
  ChildError e;
  ssize_t n;
  while ((n = ::read(err_pipe[0], &e, sizeof(e))) < 0 && errno == EINTR) {
  }
  join_group(pid, opt);
  const auto [in_fd, out_fd] = c.release();
  Process p(pid, opt.new_process_group, in_fd, out_fd);
  if (n == static_cast<ssize_t>(sizeof(e))) {
    p.wait();
    const char* what = e.stage == 1 ? "redirecting its output" : e.stage == 2 ? "chdir" : "exec";
    HYLAB_FAIL("cannot start {}: {}{}: {}", argv[0], what,
               e.stage == 2 ? " to " + opt.cwd : std::string(), std::strerror(e.err));
  }
  return p;
}

Process Process::fork_call(const std::function<int()>& body, const SpawnOptions& opt) {
  HYLAB_CHECK(opt.extra_env.empty() && opt.cwd.empty(),
              "Process::fork_call: extra_env and cwd are for spawn only");
  ChildFds c;
  open_child_fds(opt, &c);
  if (opt.pipe_stdin) ::signal(SIGPIPE, SIG_IGN);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) HYLAB_FAIL("fork failed: {}", std::strerror(errno));
  if (pid == 0) {
    if (!setup_child(opt, c, parent)) std::_Exit(127);
    if (c.parent_in >= 0) ::close(c.parent_in);
    if (c.parent_out >= 0) ::close(c.parent_out);
    int rc = 1;
    try {
      rc = body();
    } catch (...) {
      rc = 1;
    }
    std::_Exit(rc);
  }
  join_group(pid, opt);
  const auto [in_fd, out_fd] = c.release();
  return Process(pid, opt.new_process_group, in_fd, out_fd);
}

Process::Process(pid_t pid, bool own_group, int stdin_fd, int stdout_fd)
    : pid_(pid), own_group_(own_group), stdin_fd_(stdin_fd), stdout_fd_(stdout_fd) {}

Process::Process(Process&& o) noexcept { *this = std::move(o); }

Process& Process::operator=(Process&& o) noexcept {
  if (this != &o) {
    reset();
    pid_ = o.pid_;
    own_group_ = o.own_group_;
    reaped_ = o.reaped_;
    status_ = o.status_;
    stdin_fd_ = o.stdin_fd_;
    stdout_fd_ = o.stdout_fd_;
    o.pid_ = -1;
    o.reaped_ = false;
    o.stdin_fd_ = o.stdout_fd_ = -1;
  }
  return *this;
}

Process::~Process() { reset(); }

void Process::reset() {
  close_stdin();
  if (stdout_fd_ >= 0) ::close(stdout_fd_);
  stdout_fd_ = -1;
  if (running()) {
    signal_group(SIGKILL);
    wait();
  }
  pid_ = -1;
  reaped_ = false;
}

void Process::close_stdin() {
  if (stdin_fd_ >= 0) ::close(stdin_fd_);
  stdin_fd_ = -1;
}

ExitStatus Process::wait() {
  if (pid_ <= 0 || reaped_) return status_;
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0) {
    if (errno != EINTR) {
      status = W_EXITCODE(1, 0);  // not our child any more (cannot happen with one owner)
      break;
    }
  }
  reaped_ = true;
  status_.wait_status = status;
  return status_;
}

std::optional<ExitStatus> Process::try_wait() {
  if (pid_ <= 0) return std::nullopt;
  if (!reaped_) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == 0) return std::nullopt;
    if (r < 0 && errno == EINTR) return std::nullopt;
    reaped_ = true;
    status_.wait_status = r < 0 ? W_EXITCODE(1, 0) : status;
  }
  return status_;
}

void Process::signal(int sig) {
  if (running()) ::kill(pid_, sig);
}

void Process::signal_group(int sig) {
  if (pid_ <= 0) return;
  if (own_group_) {
    ::kill(-pid_, sig);
  } else {
    signal(sig);
  }
}

std::string self_executable_path() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  HYLAB_CHECK(n > 0, "readlink(/proc/self/exe): {}", std::strerror(errno));
  return std::string(buf, static_cast<size_t>(n));
}

}  // namespace hylab
