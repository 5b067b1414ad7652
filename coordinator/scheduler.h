// Scheduling: which pending trials start now, on which workers' slots. A pure function.
//
// A slot is one GPU on a GPU worker, or one trainer process on a CPU-only worker.
// Rules, in order:
//  - Gang: a trial starts only when all its slots are free at once: `slots` on one worker,
//    or for a multi-node trial `slots / nodes` on each of `nodes` different workers.
//  - Priority: higher priority first.
//  - Fairness: among equal priorities, the sweep with the fewest slots in use (counting
//    what this round already placed) goes next; ties go to the older sweep, then to the
//    lower trial_index.
//  - Placement: best fit (the worker with the fewest free slots that still fits), lowest
//    slot indices; this keeps large holes for large gangs.
//  - No starvation of gangs: when the first trial (in the order above) cannot be placed, the
//    worker(s) that could host it soonest (most free slots among those big enough) are
//    reserved for it for the rest of the round, so that smaller trials do not keep taking
//    every slot it frees. Only that one trial reserves, so blocked gangs never block all.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace hylab::coordinator {

struct SchedTrial {
  int64_t trial_id = 0;
  int64_t sweep_id = 0;
  int64_t trial_index = 0;
  int slots = 1;      // total over all nodes
  int nodes = 1;
  int priority = 0;
};

struct SchedWorker {
  std::string worker_id;
  int total_slots = 0;
  std::vector<int> free_slots;  // slot indices
  bool accepting = true;        // false when draining
};

struct Placement {
  std::string worker_id;
  std::vector<int> slots;
  int node_rank = 0;
};

struct Assignment {
  int64_t trial_id = 0;
  std::vector<Placement> nodes;  // node_rank order
};

// The order schedule() takes pending trials in: priority (highest first), then per sweep
// (sweep_id) in trial_index order, trial_id breaking ties. Within a priority the sweep to
// take from next is chosen by fairness, so a sweep's trials form one queue.
struct PendingOrder {
  bool operator()(const SchedTrial& a, const SchedTrial& b) const {
    if (a.priority != b.priority) return a.priority > b.priority;
    if (a.sweep_id != b.sweep_id) return a.sweep_id < b.sweep_id;
    if (a.trial_index != b.trial_index) return a.trial_index < b.trial_index;
    return a.trial_id < b.trial_id;
  }
};
using PendingSet = std::set<SchedTrial, PendingOrder>;

// running_slots: slots in use per sweep_id (for fairness). `pending` kept in order by its
// owner (TrialBook keeps it as trials change state), so that a call costs what it places
// plus one lookup per queue, not a sort of every pending trial.
std::vector<Assignment> schedule(const PendingSet& pending,
                                 const std::vector<SchedWorker>& workers,
                                 const std::map<int64_t, int>& running_slots);

}  // namespace hylab::coordinator
