// The deterministic simulator: the real coordinator logic (Coordinator::Impl, driven through
// step(messages, now)) and the real store (a SQLite file) against simulated workers and
// trainers, a simulated network and a simulated clock. One seed chooses everything: the
// sweeps, the workers, and the faults (message loss, duplication, delay and reordering,
// worker deaths, trainer crashes, kills and OOMs, coordinator crash-and-restart from the
// database, failed commits, clock jumps, drains). Nothing reads the real clock, so a seed
// replays exactly (on the same build): `hylab sim --seeds 1 --start SEED --trace`.
//
// After a run, invariants are checked (docs/RELIABILITY.md): every trial ends in a terminal
// state true to what its trainers did; no metric step lost or duplicated; no slot
// double-booked; gang attempts assigned all-or-nothing; a resume starts from a checkpoint a
// trainer really wrote.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace hylab::sim {

struct SimOptions {
  std::string dir;          // where the seed's SQLite file goes (removed after the run)
  bool faults = true;       // false: a fault-free run (the baseline)
  bool trace = false;       // keep every event, not only the faults
  int64_t fault_ms = 60'000;     // faults are injected during this much simulated time
  int64_t deadline_ms = 900'000; // a run not finished by then is a violation
};

struct SimResult {
  uint64_t seed = 0;
  std::map<std::string, int64_t> faults;  // kind -> how many were injected
  std::vector<std::string> violations;    // empty when every invariant held
  std::vector<std::string> trace;         // faults (and, with trace, every event), in order
  int64_t trials = 0;
  int64_t sim_ms = 0;                     // simulated time until every sweep completed
  int64_t coordinator_steps = 0;
};

SimResult run_seed(uint64_t seed, const SimOptions& opt);

}  // namespace hylab::sim
