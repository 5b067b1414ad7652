// The load generator (sim/load_bench.h) at worker counts past its process limits: more
// workers than libzmq's default of 1,023 sockets per context (the 2,000-worker row used to
// end in std::terminate on the H200 host), and an open-file limit too small for the count
// (refused by name, before anything starts).
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>

#include "common/check.h"
#include "sim/load_bench.h"

namespace hylab::sim {
namespace {

namespace fs = std::filesystem;

std::string scratch_dir(const std::string& name) {
  return (fs::temp_directory_path() / ("hylab-load-test-" + name + "-" + std::to_string(::getpid())))
      .string();
}

TEST(LoadBench, RunsMoreWorkersThanLibzmqsDefaultSocketLimit) {
  const std::string dir = scratch_dir("many");
  const nlohmann::json row = run_load(1100, 3, dir, 1);
  fs::remove_all(dir);
  EXPECT_EQ(row["workers"].get<int>(), 1100);
  EXPECT_GT(row["assignments"].get<int64_t>(), 0);
  EXPECT_GT(row["heartbeats_sent"].get<int64_t>(), 0);
  // Every worker's first free slot is one registration sample (assigned, or still waiting at
  // the end); the rest were freed by a Finished, one per assignment after the first.
  EXPECT_EQ(row["after_hello"]["count"].get<int64_t>(), 1100);
  EXPECT_EQ(row["after_hello"]["count"].get<int64_t>() + row["after_finished"]["count"].get<int64_t>(),
            row["assignments"].get<int64_t>() + row["waiting_at_end"].get<int64_t>());
  // Each registration that got its Assign, split at the moment the coordinator handled its
  // Hello (the workers row's first_seen): both parts are there for every one of them, and
  // its connection setup before the Hello (every worker but those never connected has one).
  const auto& reg = row["registration"];
  const int64_t registered = row["after_hello"]["count"].get<int64_t>() - row["waiting_at_end"].get<int64_t>();
  EXPECT_GE(reg["hello_to_handled"]["count"].get<int64_t>(), registered);
  EXPECT_EQ(reg["hello_to_handled"]["count"], reg["handled_to_assign"]["count"]);
  EXPECT_EQ(reg["connect_to_assign"]["count"], reg["hello_to_handled"]["count"]);
  EXPECT_EQ(reg["connect"]["count"].get<int64_t>() + row["never_connected"].get<int64_t>(), 1100);
  EXPECT_LE(row["never_connected"].get<int64_t>(), row["waiting_at_end"].get<int64_t>());
  // The join contains the registration: connect() comes before the Hello (the split point is
  // on the system clock, the rest on the steady clock: 1 ms of rounding).
  EXPECT_GE(reg["connect_to_assign"]["max_ms"].get<double>() + 1, reg["handled_to_assign"]["max_ms"].get<double>());
  EXPECT_GE(reg["hello_to_handled"]["p50_ms"].get<double>(), 0.0);
  EXPECT_GE(reg["handled_to_assign"]["p50_ms"].get<double>(), 0.0);
  EXPECT_LE(reg["hello_to_handled"]["max_ms"].get<double>(), row["after_hello"]["max_ms"].get<double>() + 1);
  int64_t slow = 0;
  for (const auto& n : row["over_50ms_by_second_freed"]) slow += n.get<int64_t>();
  EXPECT_LE(slow, row["assignments"].get<int64_t>() + row["waiting_at_end"].get<int64_t>());
}

TEST(LoadBench, RefusesAWorkerCountTheOpenFileLimitCannotHold) {
  const std::string dir = scratch_dir("nofile");
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {  // the child lowers its own limits (soft and hard) and tries
    struct rlimit rl {};
    rl.rlim_cur = rl.rlim_max = 600;
    if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) ::_exit(4);
    try {
      run_load(1100, 3, dir, 1);
      ::_exit(2);  // it ran: not refused
    } catch (const Error& e) {
      ::_exit(std::strstr(e.what(), "open files") != nullptr ? 0 : 3);
    } catch (...) {
      ::_exit(5);
    }
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  fs::remove_all(dir);
  ASSERT_TRUE(WIFEXITED(status)) << "the child died of a signal";
  EXPECT_EQ(WEXITSTATUS(status), 0) << "2: ran anyway, 3: another error, 4: setrlimit, 5: not an Error";
}

}  // namespace
}  // namespace hylab::sim
