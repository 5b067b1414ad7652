#include "trainer/launch.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "common/check.h"
#include "trainer/subprocess.h"

namespace hylab::trainer {
namespace {

std::atomic<int> g_stop_signal{0};

void on_stop_signal(int sig) { g_stop_signal = sig; }

// Installs SIGTERM/SIGINT handlers for the launcher's lifetime, restoring the old ones.
class StopSignals {
 public:
  StopSignals() {
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGTERM, &sa, &old_term_);
    ::sigaction(SIGINT, &sa, &old_int_);
  }
  ~StopSignals() {
    ::sigaction(SIGTERM, &old_term_, nullptr);
    ::sigaction(SIGINT, &old_int_, nullptr);
  }

 private:
  struct sigaction old_term_ {}, old_int_ {};
};

}  // namespace

int run_local_ranks(const LaunchOptions& opt, const std::function<void(const std::string&)>& log) {
  HYLAB_CHECK(opt.nproc >= 1, "nproc = {}: expected >= 1", opt.nproc);
  g_stop_signal = 0;
  StopSignals signals;
  std::vector<Subprocess> ranks;
  for (int r = 0; r < opt.nproc; ++r) {
    Subprocess::Options so;
    so.extra_env = {
        "RANK=" + std::to_string(r),
        "WORLD_SIZE=" + std::to_string(opt.nproc),
        "LOCAL_RANK=" + std::to_string(r),
        "LOCAL_WORLD_SIZE=" + std::to_string(opt.nproc),
        "HYLAB_RENDEZVOUS_FILE=" + opt.rendezvous_file,
    };
    ranks.push_back(Subprocess::spawn(opt.argv, so));
  }
  log(fmt::format("launched {} ranks (pids {})", opt.nproc,
                  fmt::join([&] {
                    std::vector<int> p;
                    for (auto& s : ranks) p.push_back(s.pid());
                    return p;
                  }(), " ")));

  using Clock = std::chrono::steady_clock;
  int result = 0;
  bool taking_down = false;
  Clock::time_point kill_at{};
  auto take_down = [&](const std::string& why) {
    if (taking_down) return;
    taking_down = true;
    log(why);
    for (auto& s : ranks) s.signal(SIGTERM);
    kill_at = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(opt.grace_s * 1000));
  };
  for (;;) {
    int alive = 0;
    for (int r = 0; r < opt.nproc; ++r) {
      int code = 0;
      if (!ranks[r].poll(&code)) {
        ++alive;
        continue;
      }
      if (code != 0 && result == 0 && !g_stop_signal) {
        result = code;
        take_down(fmt::format("rank {} exited with status {}; stopping the other ranks", r, code));
      }
    }
    if (alive == 0) break;
    if (g_stop_signal && !taking_down) {
      take_down(fmt::format("signal {} received; stopping all ranks", g_stop_signal.load()));
    }
    if (taking_down && Clock::now() > kill_at) {
      for (auto& s : ranks) s.signal(SIGKILL);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (g_stop_signal) return 143;
  return result;
}

}  // namespace hylab::trainer
