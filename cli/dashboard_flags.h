// --http and friends, shared by `hylab dashboard`, `hylab coordinator` and `hylab local`: where
// the read-only web dashboard (dashboard/server.h, docs/DASHBOARD.md) listens and how it is
// protected. Only in builds with cpp-httplib (HYLAB_HAS_DASHBOARD).
#pragma once

#ifdef HYLAB_HAS_DASHBOARD

#include <memory>
#include <string>

#include "cli/command.h"
#include "dashboard/server.h"

namespace hylab::cli {

struct DashboardFlags {
  std::string http;        // HOST:PORT; "" = no dashboard
  std::string token_file;  // default $HYLAB_HTTP_TOKEN
  std::string web_dir;     // default $HYLAB_WEB_DIR, else <dir of hylab>/web
  std::string work_dir = "runs/work";

  void add_to(CLI::App* cmd, const std::string& http_help) {
    cmd->add_option(flag("http"), http, http_help);
    cmd->add_option(
        flag("http_token_file"), token_file,
        "File whose first line is the dashboard's bearer token (default $HYLAB_HTTP_TOKEN); "
        "required to bind an address other than loopback");
    cmd->add_option(flag("web_dir"), web_dir,
                    "Where scripts/fetch_web.sh put the chart library (default $HYLAB_WEB_DIR, "
                    "else <dir of hylab>/web)");
  }
  void add_work_dir_to(CLI::App* cmd) {
    cmd->add_option(flag("work_dir"), work_dir,
                    "The workers' work_dir, to find sweep trials' run directories")
        ->capture_default_str();
  }

  // Starts the dashboard over db_path when --http was given; nullptr otherwise.
  std::unique_ptr<dashboard::Server> start(const std::string& db_path) const {
    if (http.empty()) return nullptr;
    dashboard::ServerOptions o;
    o.db_path = db_path;
    o.address = dashboard::parse_http_address(http, "--http");
    o.token = dashboard::load_token(token_file);
    o.web_dir = web_dir;
    o.work_dir = work_dir;
    auto server = std::make_unique<dashboard::Server>(o);
    server->start();
    return server;
  }
};

}  // namespace hylab::cli

#endif  // HYLAB_HAS_DASHBOARD
