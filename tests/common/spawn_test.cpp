// common/spawn.h with real processes (/bin/sh): exit codes, signals, environment, working
// directory, redirection, pipes, process groups, the parent-death signal and fork_call.
#include "common/spawn.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "common/check.h"
#include "common/fd_io.h"

namespace hylab {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

std::vector<std::string> sh(const std::string& script) { return {"/bin/sh", "-c", script}; }

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Running (a zombie whose new parent has not reaped it yet counts as gone).
bool alive(pid_t pid) {
  if (::kill(pid, 0) != 0) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  const size_t paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] != 'Z';
}

// Waits up to 10 s for a file with a pid in it.
pid_t read_pid(const fs::path& p) {
  pid_t pid = 0;
  for (int i = 0; i < 1000 && pid == 0; ++i) {
    std::ifstream f(p);
    f >> pid;
    if (pid == 0) std::this_thread::sleep_for(10ms);
  }
  return pid;
}

// Waits up to 10 s for a process that is not our child to be gone.
bool gone(pid_t pid) {
  for (int i = 0; i < 1000; ++i) {
    if (!alive(pid)) return true;
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

class SpawnTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("hylab_spawn_test_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(SpawnTest, ExitCodesAndSignals) {
  ExitStatus s = Process::spawn(sh("exit 7"), {}).wait();
  EXPECT_TRUE(s.exited());
  EXPECT_EQ(s.exit_code(), 7);
  EXPECT_EQ(s.code(), 7);
  s = Process::spawn(sh("kill -SEGV $$"), {}).wait();
  EXPECT_TRUE(s.signaled());
  EXPECT_EQ(s.term_signal(), SIGSEGV);
  EXPECT_EQ(s.code(), 128 + SIGSEGV);

  Process p = Process::spawn(sh("exec sleep 30"), {});
  EXPECT_TRUE(p.running());
  EXPECT_FALSE(p.try_wait());
  p.signal(SIGTERM);
  s = p.wait();
  EXPECT_EQ(s.term_signal(), SIGTERM);
  EXPECT_FALSE(p.running());
  ASSERT_TRUE(p.try_wait());  // reaped: the same status again
  EXPECT_EQ(p.try_wait()->code(), 128 + SIGTERM);
  p.signal(SIGKILL);  // a no-op once reaped
}

TEST_F(SpawnTest, EnvironmentIsOursWithAdditions) {
  ::setenv("HYLAB_SPAWN_TEST_OURS", "kept", 1);
  ::setenv("HYLAB_SPAWN_TEST_OVERRIDE", "old", 1);
  SpawnOptions o;
  o.extra_env = {"HYLAB_SPAWN_TEST_NEW=a=b", "HYLAB_SPAWN_TEST_OVERRIDE=new"};
  o.stdout_file = (dir_ / "env.out").string();
  Process::spawn(sh("echo \"$HYLAB_SPAWN_TEST_OURS $HYLAB_SPAWN_TEST_NEW $HYLAB_SPAWN_TEST_OVERRIDE\""), o).wait();
  EXPECT_EQ(slurp(dir_ / "env.out"), "kept a=b new\n");
  o.extra_env = {"NO_EQUALS_SIGN"};
  EXPECT_THROW(Process::spawn(sh("true"), o), Error);
}

TEST_F(SpawnTest, WorkingDirectory) {
  SpawnOptions o;
  o.cwd = dir_.string();
  o.stdout_file = (dir_ / "cwd.out").string();
  EXPECT_EQ(Process::spawn(sh("pwd -P"), o).wait().code(), 0);
  EXPECT_EQ(slurp(dir_ / "cwd.out"), fs::canonical(dir_).string() + "\n");
  o.cwd = (dir_ / "missing").string();
  try {
    Process::spawn(sh("true"), o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("chdir to " + o.cwd), std::string::npos) << e.what();
  }
}

TEST_F(SpawnTest, RedirectionToFilesTruncates) {
  std::ofstream(dir_ / "out") << "old content that must go away\n";
  SpawnOptions o;
  o.stdout_file = (dir_ / "out").string();
  o.stderr_file = (dir_ / "err").string();
  o.null_stdin = true;
  EXPECT_EQ(Process::spawn(sh("echo to-out; echo to-err >&2; cat; echo end"), o).wait().code(), 0);
  EXPECT_EQ(slurp(dir_ / "out"), "to-out\nend\n");  // cat read /dev/null: nothing
  EXPECT_EQ(slurp(dir_ / "err"), "to-err\n");

  SpawnOptions both;
  both.stdout_file = (dir_ / "log").string();
  both.stderr_to_stdout = true;
  Process::spawn(sh("echo one; echo two >&2; echo three"), both).wait();
  EXPECT_EQ(slurp(dir_ / "log"), "one\ntwo\nthree\n");

  SpawnOptions bad;
  bad.stdout_file = (dir_ / "no" / "such" / "dir" / "log").string();
  try {
    Process::spawn(sh("true"), bad);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot open " + bad.stdout_file), std::string::npos) << e.what();
  }
}

TEST_F(SpawnTest, PipesBothWays) {
  SpawnOptions o;
  o.pipe_stdin = o.pipe_stdout = true;
  Process p = Process::spawn({"/bin/cat"}, o);
  const std::string msg = "through the pipes\n";
  ASSERT_TRUE(write_all(p.stdin_fd(), msg.data(), msg.size()));
  std::string got(msg.size(), '\0');
  ASSERT_TRUE(read_all(p.stdout_fd(), got.data(), got.size()));
  EXPECT_EQ(got, msg);
  p.close_stdin();  // cat exits at EOF
  EXPECT_EQ(p.wait().code(), 0);
}

TEST_F(SpawnTest, AProgramThatCannotStartIsAnErrorOfSpawn) {
  try {
    Process::spawn({(dir_ / "no-such-program").string()}, {});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot start " + (dir_ / "no-such-program").string() + ": exec"),
              std::string::npos) << e.what();
  }
  std::ofstream(dir_ / "not-executable") << "#!/bin/sh\n";
  EXPECT_THROW(Process::spawn({(dir_ / "not-executable").string()}, {}), Error);
}

TEST_F(SpawnTest, AGroupSignalReachesGrandchildren) {
  const fs::path pidfile = dir_ / "grandchild.pid";
  SpawnOptions o;
  o.new_process_group = true;
  // The shell starts a grandchild and waits for it; SIGTERM to the shell alone would leave
  // the grandchild running.
  Process p = Process::spawn(sh("sleep 300 & echo $! > " + pidfile.string() + "; wait"), o);
  EXPECT_EQ(::getpgid(p.pid()), p.pid());  // its own group, at once
  const pid_t grandchild = read_pid(pidfile);
  ASSERT_GT(grandchild, 0);
  EXPECT_EQ(::getpgid(grandchild), p.pid());
  p.signal_group(SIGKILL);
  EXPECT_EQ(p.wait().term_signal(), SIGKILL);
  EXPECT_TRUE(gone(grandchild)) << "the grandchild survived the group kill";
}

TEST_F(SpawnTest, WithoutAGroupOfItsOwnTheChildSharesOurs) {
  Process p = Process::spawn(sh("exec sleep 30"), {});
  EXPECT_EQ(::getpgid(p.pid()), ::getpgid(0));
  p.signal_group(SIGTERM);  // the child only: we are still here
  EXPECT_EQ(p.wait().term_signal(), SIGTERM);
}

TEST_F(SpawnTest, DestroyingARunningProcessKillsItsGroup) {
  const fs::path pidfile = dir_ / "grandchild.pid";
  pid_t child = 0, grandchild = 0;
  {
    SpawnOptions o;
    o.new_process_group = true;
    Process p = Process::spawn(sh("sleep 300 & echo $! > " + pidfile.string() + "; wait"), o);
    child = p.pid();
    grandchild = read_pid(pidfile);
    ASSERT_GT(grandchild, 0);
    Process moved = std::move(p);  // ownership moves; the moved-from one owns nothing
    EXPECT_EQ(p.pid(), -1);
  }
  EXPECT_FALSE(alive(child));  // reaped by the destructor: not even a zombie
  EXPECT_TRUE(gone(grandchild));
}

TEST_F(SpawnTest, TheParentDeathSignalReachesTheChild) {
  // An intermediate process (fork_call) spawns a child with parent_death_signal, writes its
  // pid and exits; the child must get SIGTERM and go.
  const fs::path pidfile = dir_ / "child.pid";
  SpawnOptions o;
  o.new_process_group = true;  // keeps the orphan's group apart from ours
  Process middle = Process::fork_call([&]() -> int {
    SpawnOptions c;
    c.parent_death_signal = SIGTERM;
    c.new_process_group = true;
    Process child = Process::spawn(sh("exec sleep 300"), c);
    std::ofstream(pidfile) << child.pid() << "\n";
    std::_Exit(0);  // without running ~Process: only the death signal can stop the child
  }, o);
  EXPECT_EQ(middle.wait().code(), 0);
  const pid_t child = read_pid(pidfile);
  ASSERT_GT(child, 0);
  EXPECT_TRUE(gone(child)) << "the child outlived its parent";
}

TEST_F(SpawnTest, ForkCallRunsTheBodyAndEndsWithItsValue) {
  SpawnOptions o;
  o.stdout_file = (dir_ / "body.out").string();
  Process p = Process::fork_call([]() -> int {
    std::fputs("from the body\n", stdout);
    std::fflush(stdout);
    return 5;
  }, o);
  EXPECT_EQ(p.wait().code(), 5);
  EXPECT_EQ(slurp(dir_ / "body.out"), "from the body\n");
  EXPECT_EQ(Process::fork_call([]() -> int { throw std::runtime_error("x"); }, {}).wait().code(), 1);
  SpawnOptions with_env;
  with_env.extra_env = {"A=B"};
  EXPECT_THROW(Process::fork_call([] { return 0; }, with_env), Error);
}

}  // namespace
}  // namespace hylab
