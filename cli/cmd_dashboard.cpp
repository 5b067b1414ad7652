// `hylab dashboard --db FILE [--http ADDR]`: the read-only web dashboard over a results
// database, without a coordinator (docs/DASHBOARD.md). Serves until SIGINT/SIGTERM.
#ifdef HYLAB_HAS_DASHBOARD

#include <chrono>
#include <cstdio>
#include <thread>

#include "cli/daemon_flags.h"
#include "cli/dashboard_flags.h"

namespace hylab::cli {
namespace {

struct Flags {
  std::string db = default_db_path();
  DashboardFlags web;
};

void setup(CLI::App& root) {
  auto* cmd =
      root.add_subcommand("dashboard", "Serve the read-only web dashboard of a results database");
  auto f = std::make_shared<Flags>();
  f->web.http = "127.0.0.1:8080";
  cmd->add_option(flag("db"), f->db,
                  "SQLite results database (default $HYLAB_DB, else runs/hylab.db)");
  f->web.add_to(cmd, "Address to serve on, HOST:PORT (port 0 picks a free one)");
  cmd->get_option("--http")->capture_default_str();
  f->web.add_work_dir_to(cmd);
  cmd->callback([f] {
    use_stderr_log("dashboard");
    install_stop_signals();
    auto server = f->web.start(f->db);
    std::printf("dashboard: %s  (Ctrl-C stops it)\n", server->url().c_str());
    std::fflush(stdout);
    while (!stop_requested().load()) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    server->stop();
  });
}

HYLAB_REGISTER_COMMAND("dashboard", 55, setup);

}  // namespace
}  // namespace hylab::cli

#endif  // HYLAB_HAS_DASHBOARD
