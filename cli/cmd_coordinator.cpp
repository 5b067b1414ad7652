// `hylab coordinator`: the sweep coordinator daemon (see coordinator/coordinator.h and
// docs/DAEMONS.md).
#include "cli/daemon_flags.h"
#include "cli/dashboard_flags.h"
#include "common/check.h"
#include "coordinator/coordinator.h"

namespace hylab::cli {
namespace {

struct Flags {
  coordinator::CoordinatorOptions opt;
  std::string key, allow;
  bool insecure = false;
#ifdef HYLAB_HAS_DASHBOARD
  DashboardFlags web;  // --http: off unless asked
#endif
};

void setup(CLI::App& root) {
  auto* cmd = root.add_subcommand("coordinator", "Run the coordinator daemon (sweeps, scheduling, results database)");
  auto f = std::make_shared<Flags>();
  f->opt.db_path = default_db_path();
  cmd->add_option(flag("db"), f->opt.db_path, "SQLite results database (default $HYLAB_DB, else runs/hylab.db)");
  auto* bind = cmd->add_option(flag("bind"), f->opt.bind,
                               "ZeroMQ endpoint to listen on; tcp://127.0.0.1:* picks a free port "
                               "(default tcp://*:5555, with --insecure tcp://127.0.0.1:5555)");
  cmd->add_option(flag("endpoint_file"), f->opt.endpoint_file, "Write the bound endpoint to this file");
  cmd->add_option(flag("key"), f->key, "The coordinator's key pair, NAME.key (default $HYLAB_KEY)");
  cmd->add_option(flag("allow"), f->allow,
                  "Allowed public keys of workers and clients: a file (one key per line) or a folder of *.pub");
  cmd->add_flag(flag("insecure"), f->insecure,
                "Plain TCP, no CurveZMQ: binds loopback only (tcp://127.0.0.1:5555 unless --bind)");
  cmd->add_flag(flag("insecure_any_interface"), f->opt.security.insecure_any_interface,
                "With --insecure: allow a --bind beyond loopback (anyone who reaches it can submit)");
  cmd->add_option(flag("heartbeat_ms"), f->opt.heartbeat_ms, "Heartbeat interval")->capture_default_str();
  cmd->add_option(flag("liveness"), f->opt.liveness, "Missed heartbeats before a worker is lost")->capture_default_str();
  cmd->add_option(flag("recovery_grace_ms"), f->opt.recovery_grace_ms,
                  "After a restart, how long running trials wait for their worker (0 = 4 x liveness x heartbeat)");
  cmd->add_option(flag("io_threads"), f->opt.io_threads,
                  "ZeroMQ I/O threads: they accept workers' connections and run the handshakes")
      ->capture_default_str();
#ifdef HYLAB_HAS_DASHBOARD
  f->web.add_to(cmd, "Also serve the read-only web dashboard on HOST:PORT, e.g. 127.0.0.1:8080 (off unless given)");
  f->web.add_work_dir_to(cmd);
#endif
  cmd->callback([f, bind] {
    use_stderr_log("coordinator");
    Flags& x = *f;
    if (x.opt.heartbeat_ms < 10) throw hylab::Error("--heartbeat_ms: expected >= 10");
    if (x.opt.liveness < 1) throw hylab::Error("--liveness: expected >= 1");
    if (x.opt.io_threads < 1 || x.opt.io_threads > 64) throw hylab::Error("--io_threads: expected 1..64");
    x.opt.security.insecure = x.insecure;
    if (x.insecure && bind->count() == 0) x.opt.bind = "tcp://127.0.0.1:5555";
    if (x.opt.security.insecure_any_interface && !x.insecure) {
      throw hylab::Error("--insecure_any_interface: only with --insecure");
    }
    wire::check_bind(x.opt.bind, x.opt.security);
    if (!x.insecure) {
      std::string key = x.key;
      if (key.empty() && std::getenv("HYLAB_KEY")) key = std::getenv("HYLAB_KEY");
      if (key.empty()) {
        throw hylab::Error("the coordinator needs --key coordinator.key and --allow FILE (make keys with "
                           "`hylab keygen --out NAME`), or --insecure for plain TCP");
      }
      if (x.allow.empty()) throw hylab::Error("--allow FILE: the public keys allowed to connect (or --insecure)");
      x.opt.security.own = wire::read_key_file(key);
      if (x.opt.security.own.secret_z85.empty()) throw hylab::Error("--key " + key + ": no secret-key (pass NAME.key)");
      x.opt.security.allow = wire::AllowList::load(x.allow);
      if (x.opt.security.allow.size() == 0) throw hylab::Error("--allow " + x.allow + ": no public keys in it");
    }
    install_stop_signals();
    coordinator::Coordinator c(x.opt);  // creates the database
#ifdef HYLAB_HAS_DASHBOARD
    // Its own thread and read-only connections: the poll loop never waits on it.
    auto web = x.web.start(x.opt.db_path);
#endif
    c.run(stop_requested());
  });
}

HYLAB_REGISTER_COMMAND("coordinator", 50, setup);

}  // namespace
}  // namespace hylab::cli
