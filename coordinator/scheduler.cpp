#include "coordinator/scheduler.h"

#include <algorithm>
#include <deque>
#include <set>

namespace hylab::coordinator {
namespace {

struct WorkerView {
  const SchedWorker* w;
  std::vector<int> free;  // sorted
  bool reserved = false;
};

// Picks `count` workers with >= per_node free slots, best fit first. Empty if impossible.
std::vector<size_t> pick_workers(const std::vector<WorkerView>& ws, int per_node, int count) {
  std::vector<size_t> fit;
  for (size_t i = 0; i < ws.size(); ++i) {
    if (ws[i].w->accepting && !ws[i].reserved && static_cast<int>(ws[i].free.size()) >= per_node) {
      fit.push_back(i);
    }
  }
  if (static_cast<int>(fit.size()) < count) return {};
  std::stable_sort(fit.begin(), fit.end(), [&](size_t a, size_t b) {
    if (ws[a].free.size() != ws[b].free.size()) return ws[a].free.size() < ws[b].free.size();
    return ws[a].w->worker_id < ws[b].w->worker_id;
  });
  fit.resize(static_cast<size_t>(count));
  return fit;
}

// Reserves the workers a blocked trial would most likely get next.
void reserve_for(std::vector<WorkerView>& ws, int per_node, int count) {
  std::vector<size_t> big;
  for (size_t i = 0; i < ws.size(); ++i) {
    if (ws[i].w->accepting && !ws[i].reserved && ws[i].w->total_slots >= per_node) big.push_back(i);
  }
  if (static_cast<int>(big.size()) < count) return;  // can never run on these workers
  std::stable_sort(big.begin(), big.end(), [&](size_t a, size_t b) {
    if (ws[a].free.size() != ws[b].free.size()) return ws[a].free.size() > ws[b].free.size();
    return ws[a].w->worker_id < ws[b].w->worker_id;
  });
  for (int k = 0; k < count; ++k) ws[big[static_cast<size_t>(k)]].reserved = true;
}

}  // namespace

std::vector<Assignment> schedule(const std::vector<SchedTrial>& pending,
                                 const std::vector<SchedWorker>& workers,
                                 const std::map<int64_t, int>& running_slots) {
  std::vector<WorkerView> ws;
  for (const auto& w : workers) {
    WorkerView v{&w, w.free_slots};
    std::sort(v.free.begin(), v.free.end());
    ws.push_back(std::move(v));
  }
  std::map<int64_t, int> in_use = running_slots;

  // Priority levels, highest first; per level, one queue per sweep in trial_index order.
  std::map<int, std::map<int64_t, std::deque<const SchedTrial*>>, std::greater<int>> levels;
  std::vector<const SchedTrial*> sorted;
  for (const auto& t : pending) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(), [](const SchedTrial* a, const SchedTrial* b) {
    if (a->trial_index != b->trial_index) return a->trial_index < b->trial_index;
    return a->trial_id < b->trial_id;
  });
  for (const SchedTrial* t : sorted) levels[t->priority][t->sweep_id].push_back(t);

  std::vector<Assignment> out;
  bool reserved_once = false;  // only the first blocked trial reserves, or gangs would block all
  // Shapes (slots per node, nodes) that found no room. Within one call free slots only shrink
  // and reservations only grow, so a trial needing at least as much per node on at least as
  // many nodes cannot fit either: it is passed over without a scan of the workers (with every
  // slot taken this turns O(pending x workers) into O(pending)).
  std::vector<std::pair<int, int>> failed;
  auto known_to_fail = [&](int per_node, int nodes) {
    for (const auto& [f_per_node, f_nodes] : failed) {
      if (per_node >= f_per_node && nodes >= f_nodes) return true;
    }
    return false;
  };
  for (auto& [priority, queues] : levels) {
    while (true) {
      // The sweep with the fewest slots in use, then the oldest.
      int64_t best = -1;
      for (auto& [sweep_id, q] : queues) {
        if (q.empty()) continue;
        if (best < 0 || in_use[sweep_id] < in_use[best]) best = sweep_id;
      }
      if (best < 0) break;
      const SchedTrial* t = queues[best].front();
      queues[best].pop_front();
      const int nodes = std::max(1, t->nodes);
      const int per_node = std::max(1, t->slots / nodes);
      if (known_to_fail(per_node, nodes)) continue;
      const std::vector<size_t> chosen = pick_workers(ws, per_node, nodes);
      if (chosen.empty()) {
        if (!reserved_once) reserve_for(ws, per_node, nodes);
        reserved_once = true;
        failed.emplace_back(per_node, nodes);
        continue;
      }
      Assignment a;
      a.trial_id = t->trial_id;
      for (size_t rank = 0; rank < chosen.size(); ++rank) {
        WorkerView& w = ws[chosen[rank]];
        Placement p;
        p.worker_id = w.w->worker_id;
        p.node_rank = static_cast<int>(rank);
        p.slots.assign(w.free.begin(), w.free.begin() + per_node);
        w.free.erase(w.free.begin(), w.free.begin() + per_node);
        a.nodes.push_back(std::move(p));
      }
      in_use[t->sweep_id] += per_node * nodes;
      out.push_back(std::move(a));
    }
  }
  return out;
}

}  // namespace hylab::coordinator
