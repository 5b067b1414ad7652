// Flags and process plumbing shared by the daemon and client subcommands
// (cmd_coordinator, cmd_worker, cmd_sweep, cmd_workers, cmd_local, cmd_results).
#pragma once

#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cctype>
#include <cstdlib>
#include <memory>
#include <string>

#include "cli/command.h"
#include "wire/client.h"

namespace hylab::cli {

// True if environment variable `name` is set to 1/true/yes/on (any case).
inline bool env_flag(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr) return false;
  std::string s(v);
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s == "1" || s == "true" || s == "yes" || s == "on";
}

// --coordinator, --insecure, --key, --server_key for commands that talk to the coordinator.
struct ClientFlags {
  std::string coordinator = wire::default_coordinator_endpoint();
  bool insecure = env_flag("HYLAB_INSECURE");  // so a loopback setup need not type it each time
  std::string key;         // default $HYLAB_KEY
  std::string server_key;  // default $HYLAB_SERVER_KEY
  int timeout_ms = 10000;

  void add_to(CLI::App* cmd) {
    cmd->add_option(flag("coordinator"), coordinator,
                    "Coordinator endpoint (default $HYLAB_COORDINATOR, else tcp://127.0.0.1:5555)");
    cmd->add_flag(flag("insecure"), insecure,
                  "Plain TCP without CurveZMQ (the coordinator must use it too); or set HYLAB_INSECURE=1");
    cmd->add_option(flag("key"), key, "This side's key pair, NAME.key (default $HYLAB_KEY)");
    cmd->add_option(flag("server_key"), server_key, "The coordinator's public key, NAME.pub (default $HYLAB_SERVER_KEY)");
    cmd->add_option(flag("timeout_ms"), timeout_ms, "How long to wait for the coordinator's answer");
  }
  wire::Security security() const { return wire::peer_security(insecure, key, server_key); }
  std::unique_ptr<wire::Client> client() const {
    return std::make_unique<wire::Client>(coordinator, security(), timeout_ms);
  }
};

// --db: default $HYLAB_DB, else runs/hylab.db.
inline std::string default_db_path() {
  const char* env = std::getenv("HYLAB_DB");
  return env && *env ? env : "runs/hylab.db";
}

// SIGINT/SIGTERM set this flag; daemons poll it.
inline std::atomic<bool>& stop_requested() {
  static std::atomic<bool> flag{false};
  return flag;
}

inline void install_stop_signals() {
  struct sigaction sa {};
  sa.sa_handler = [](int) { stop_requested().store(true); };
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

// Daemon logs go to stderr with timestamps.
inline void use_stderr_log(const std::string& name) {
  auto logger = spdlog::stderr_color_mt(name);
  logger->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [" + name + "] [%^%l%$] %v");
  spdlog::set_default_logger(logger);
}

}  // namespace hylab::cli
