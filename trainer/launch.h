// `hylab train --nproc N`: one child process per rank, supervised.
//
// Each child is this executable again with the same arguments and, in its environment,
// RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE and HYLAB_RENDEZVOUS_FILE (a fresh
// c10d FileStore path in the run folder; trainer/dist.h), or, multi-node, MASTER_ADDR and
// MASTER_PORT with global ranks (see LaunchOptions). The parent only supervises:
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
  // Multi-node (num_nodes > 1): this node's ranks are node_rank*nproc + 0..nproc-1 of
  // WORLD_SIZE = num_nodes*nproc (every node runs the same nproc), and they meet at a c10d
  // TCPStore hosted by global rank 0 at master_addr:master_port (MASTER_ADDR/MASTER_PORT)
  // instead of rendezvous_file.
  int node_rank = 0;
  int num_nodes = 1;
  std::string master_addr;
  int master_port = 0;
};

// HYLAB_NODE_RANK, HYLAB_NUM_NODES, HYLAB_RENDEZVOUS ("host:port"), as a worker sets them for
// a multi-node trial. Fills lo's node_rank/num_nodes/master_addr/master_port and returns true
// when HYLAB_NUM_NODES > 1; false (lo untouched) when unset or 1. Throws ConfigError naming
// the variable when one is malformed or missing.
bool multi_node_from_environment(LaunchOptions* lo);

// Runs the ranks to completion. Returns 0 if all succeeded, 143 if the parent was asked to
// stop, else the first failing rank's exit status. `log` gets one line per event.
int run_local_ranks(const LaunchOptions& opt, const std::function<void(const std::string&)>& log);

}  // namespace hylab::trainer
