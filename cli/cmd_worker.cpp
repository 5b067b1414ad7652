// `hylab worker`: runs trials for a coordinator (see worker/worker.h and docs/DAEMONS.md).
#include "cli/daemon_flags.h"
#include "common/check.h"
#include "worker/worker.h"

namespace hylab::cli {
namespace {

void setup(CLI::App& root) {
  auto* cmd = root.add_subcommand("worker", "Run a worker daemon: runs trials (hylab train) for a coordinator");
  auto opt = std::make_shared<worker::WorkerOptions>();
  auto client = std::make_shared<ClientFlags>();
  client->add_to(cmd);
  cmd->add_option(flag("gpus"), opt->gpus, "GPUs to use: auto, none (CPU trials) or a list such as 0,1")->capture_default_str();
  cmd->add_option(flag("slots"), opt->slots, "Concurrent CPU trial processes when there is no GPU")->capture_default_str();
  cmd->add_option(flag("work_dir"), opt->work_dir,
                  "Run directories go here; share it between workers so a retry can resume elsewhere")
      ->capture_default_str();
  cmd->add_option(flag("heartbeat_ms"), opt->heartbeat_ms, "Heartbeat interval until the coordinator sets it")
      ->capture_default_str();
  cmd->add_option(flag("liveness"), opt->liveness, "Missed heartbeats before reconnecting")->capture_default_str();
  cmd->add_option(flag("kill_grace_ms"), opt->kill_grace_ms, "SIGTERM to SIGKILL delay when cancelling")->capture_default_str();
  cmd->add_option(flag("hylab_bin"), opt->hylab_bin, "The hylab executable trials run (default: this one)");
  cmd->add_option(flag("worker_id"), opt->worker_id, "Worker id (default host:pid:random)");
  cmd->callback([opt, client] {
    use_stderr_log("worker");
    opt->coordinator = client->coordinator;
    opt->security = client->security();
    install_stop_signals();
    worker::Worker w(*opt);
    exit_status() = w.run(stop_requested());
  });
}

HYLAB_REGISTER_COMMAND("worker", 51, setup);

}  // namespace
}  // namespace hylab::cli
