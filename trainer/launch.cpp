#include "trainer/launch.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <thread>

#include "common/check.h"
#include "common/spawn.h"
#include "proto/wire.pb.h"

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

// A whole non-negative decimal int into *out; false if `s` is not one.
bool parse_int(const std::string& s, int* out) {
  if (s.empty() || s.size() > 9 || s.find_first_not_of("0123456789") != std::string::npos) return false;
  *out = std::atoi(s.c_str());
  return true;
}

}  // namespace

bool multi_node_from_environment(LaunchOptions* lo) {
  const char* nodes_env = std::getenv("HYLAB_NUM_NODES");
  if (nodes_env == nullptr) return false;
  int nodes = 0;
  if (!parse_int(nodes_env, &nodes) || nodes < 1) {
    throw ConfigError(fmt::format("HYLAB_NUM_NODES=\"{}\": expected an integer >= 1", nodes_env));
  }
  if (nodes == 1) return false;
  const char* rank_env = std::getenv("HYLAB_NODE_RANK");
  int node_rank = -1;
  if (rank_env == nullptr || !parse_int(rank_env, &node_rank) || node_rank >= nodes) {
    throw ConfigError(fmt::format("HYLAB_NODE_RANK=\"{}\" with HYLAB_NUM_NODES={}: expected an "
                                  "integer in 0..{}", rank_env ? rank_env : "(unset)", nodes, nodes - 1));
  }
  const char* rdv_env = std::getenv("HYLAB_RENDEZVOUS");
  const std::string rdv = rdv_env ? rdv_env : "";
  const size_t colon = rdv.rfind(':');
  int port = 0;
  if (colon == std::string::npos || colon == 0 || !parse_int(rdv.substr(colon + 1), &port) || port < 1 ||
      port > 65535) {
    throw ConfigError(fmt::format("HYLAB_RENDEZVOUS=\"{}\" with HYLAB_NUM_NODES={}: expected \"host:port\" "
                                  "(node 0's address, port 1..65535)", rdv_env ? rdv : "(unset)", nodes));
  }
  lo->node_rank = node_rank;
  lo->num_nodes = nodes;
  lo->master_addr = rdv.substr(0, colon);
  lo->master_port = port;
  return true;
}

int run_local_ranks(const LaunchOptions& opt, const std::function<void(const std::string&)>& log) {
  HYLAB_CHECK(opt.nproc >= 1, "nproc = {}: expected >= 1", opt.nproc);
  HYLAB_CHECK(opt.num_nodes >= 1 && opt.node_rank >= 0 && opt.node_rank < opt.num_nodes,
              "node_rank = {}, num_nodes = {}: expected 0 <= node_rank < num_nodes", opt.node_rank,
              opt.num_nodes);
  const bool multi_node = opt.num_nodes > 1;
  g_stop_signal = 0;
  StopSignals signals;
  std::vector<Process> ranks;
  for (int r = 0; r < opt.nproc; ++r) {
    SpawnOptions so;
    so.extra_env = {
        "RANK=" + std::to_string(opt.node_rank * opt.nproc + r),
        "WORLD_SIZE=" + std::to_string(opt.num_nodes * opt.nproc),
        "LOCAL_RANK=" + std::to_string(r),
        "LOCAL_WORLD_SIZE=" + std::to_string(opt.nproc),
    };
    if (multi_node) {
      so.extra_env.push_back("MASTER_ADDR=" + opt.master_addr);
      so.extra_env.push_back("MASTER_PORT=" + std::to_string(opt.master_port));
      so.extra_env.push_back("HYLAB_RENDEZVOUS_FILE=");  // empty: the TCPStore, not a file
    } else {
      so.extra_env.push_back("HYLAB_RENDEZVOUS_FILE=" + opt.rendezvous_file);
    }
    ranks.push_back(Process::spawn(opt.argv, so));
  }
  log(fmt::format("launched {} ranks{} (pids {})", opt.nproc,
                  multi_node ? fmt::format(" {}..{} of {} (node {} of {}, store at {}:{})",
                                           opt.node_rank * opt.nproc, (opt.node_rank + 1) * opt.nproc - 1,
                                           opt.num_nodes * opt.nproc, opt.node_rank, opt.num_nodes,
                                           opt.master_addr, opt.master_port)
                             : std::string(),
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
      const auto done = ranks[r].try_wait();
      if (!done) {
        ++alive;
        continue;
      }
      const int code = done->code();
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
  if (g_stop_signal) {  // as one rank would
    return g_stop_signal == SIGINT ? proto::TRAINER_EXIT_INTERRUPTED : proto::TRAINER_EXIT_TERMINATED;
  }
  return result;
}

}  // namespace hylab::trainer
