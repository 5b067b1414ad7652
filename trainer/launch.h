// `hylab train --nproc N`: one child process per rank, supervised.
//
// Each child is this executable again with the same arguments and, in its environment,
// RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE and HYLAB_RENDEZVOUS_FILE (a fresh
// c10d FileStore path in the run folder; trainer/dist.h). The parent only supervises:
//   - a rank that exits non-zero takes the run down: the others get SIGTERM, then SIGKILL
//     after a grace period, and the parent exits with the failing rank's status (3 diverged,
//     4 OOM, ...);
//   - SIGTERM/SIGINT to the parent are forwarded to every rank; the parent then exits 143;
//   - a rank that hangs at init fails by itself (dist.h's init deadline), which is the case
//     above.
// Torch-free.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace hylab::trainer {

struct LaunchOptions {
  int nproc = 1;
  std::vector<std::string> argv;   // the child's command line; argv[0] = program path
  std::string rendezvous_file;     // must not exist yet
  double grace_s = 15;             // SIGTERM -> SIGKILL delay when taking ranks down
};

// Runs the ranks to completion. Returns 0 if all succeeded, 143 if the parent was asked to
// stop, else the first failing rank's exit status. `log` gets one line per event.
int run_local_ranks(const LaunchOptions& opt, const std::function<void(const std::string&)>& log);

}  // namespace hylab::trainer
