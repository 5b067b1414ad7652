#include "coordinator/scheduler.h"

#include <algorithm>
#include <iterator>
#include <limits>
#include <set>

namespace hylab::coordinator {
namespace {

struct WorkerView {
  const SchedWorker* w;
  std::vector<int> free;  // sorted
  bool reserved = false;
};

// The workers a trial can be placed on (accepting, not reserved, some slot free), in best-fit
// order: fewest free slots first, then worker_id. The first `count` with at least `per_node`
// free are the pick. Kept up to date as slots are taken, so that a round placing n trials on
// w workers costs O(n log w), not a scan and sort of every worker per trial (1,000 workers
// registering at once: 20 ms per round of ~500 placements before, on the 2-core machine).
class FitOrder {
 public:
  explicit FitOrder(const std::vector<WorkerView>& ws) : ws_(ws), order_(Less{&ws}) {
    for (size_t i = 0; i < ws.size(); ++i) {
      if (ws[i].w->accepting && !ws[i].free.empty()) order_.insert(i);
    }
  }

  // Empty if fewer than `count` workers have `per_node` slots free.
  std::vector<size_t> pick(int per_node, int count) const {
    std::vector<size_t> out;
    auto it = order_.lower_bound(AtLeast{static_cast<size_t>(per_node)});
    for (; it != order_.end() && static_cast<int>(out.size()) < count; ++it) out.push_back(*it);
    if (static_cast<int>(out.size()) < count) out.clear();
    return out;
  }

  // No worker can take anything more in this round.
  bool empty() const { return order_.empty(); }

  // Call before ws[i].free or ws[i].reserved changes; then `refile` puts it back if it can
  // still take something.
  void take_out(size_t i) { order_.erase(i); }
  void refile(size_t i) {
    if (ws_[i].w->accepting && !ws_[i].reserved && !ws_[i].free.empty()) order_.insert(i);
  }

 private:
  // A probe that sorts just before every worker with at least `free` slots free.
  struct AtLeast {
    size_t free;
  };
  struct Less {
    using is_transparent = void;
    const std::vector<WorkerView>* ws;
    bool operator()(size_t a, size_t b) const {
      const WorkerView& x = (*ws)[a];
      const WorkerView& y = (*ws)[b];
      if (x.free.size() != y.free.size()) return x.free.size() < y.free.size();
      return x.w->worker_id < y.w->worker_id;
    }
    bool operator()(size_t a, AtLeast k) const { return (*ws)[a].free.size() < k.free; }
    bool operator()(AtLeast k, size_t a) const { return k.free <= (*ws)[a].free.size(); }
  };
  const std::vector<WorkerView>& ws_;
  std::set<size_t, Less> order_;
};

// Reserves the workers a blocked trial would most likely get next.
void reserve_for(std::vector<WorkerView>& ws, FitOrder& fit, int per_node, int count) {
  std::vector<size_t> big;
  for (size_t i = 0; i < ws.size(); ++i) {
    if (ws[i].w->accepting && !ws[i].reserved && ws[i].w->total_slots >= per_node) big.push_back(i);
  }
  if (static_cast<int>(big.size()) < count) return;  // can never run on these workers
  std::stable_sort(big.begin(), big.end(), [&](size_t a, size_t b) {
    if (ws[a].free.size() != ws[b].free.size()) return ws[a].free.size() > ws[b].free.size();
    return ws[a].w->worker_id < ws[b].w->worker_id;
  });
  for (int k = 0; k < count; ++k) {
    fit.take_out(big[static_cast<size_t>(k)]);
    ws[big[static_cast<size_t>(k)]].reserved = true;
  }
}

}  // namespace

std::vector<Assignment> schedule(const PendingSet& pending,
                                 const std::vector<SchedWorker>& workers,
                                 const std::map<int64_t, int>& running_slots) {
  std::vector<WorkerView> ws;
  for (const auto& w : workers) {
    WorkerView v{&w, w.free_slots};
    std::sort(v.free.begin(), v.free.end());
    ws.push_back(std::move(v));
  }
  FitOrder fit(ws);
  std::map<int64_t, int> in_use = running_slots;

  // Priority levels, highest first; per level, one queue per sweep: [next, end) of `pending`.
  using Queue = std::pair<PendingSet::const_iterator, PendingSet::const_iterator>;
  std::vector<std::map<int64_t, Queue>> levels;
  for (auto it = pending.begin(); it != pending.end();) {
    if (it == pending.begin() || std::prev(it)->priority != it->priority) levels.emplace_back();
    SchedTrial next_sweep{};  // sorts before every trial of the next sweep at this priority
    next_sweep.priority = it->priority;
    next_sweep.sweep_id = it->sweep_id + 1;
    next_sweep.trial_index = std::numeric_limits<int64_t>::min();
    next_sweep.trial_id = std::numeric_limits<int64_t>::min();
    const auto end = pending.lower_bound(next_sweep);
    levels.back()[it->sweep_id] = {it, end};
    it = end;
  }

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
  for (auto& queues : levels) {
    while (true) {
      // Every slot taken (the common case under load: most calls free a slot or two): what is
      // left cannot be placed, and reservations only matter to placements.
      if (fit.empty()) return out;
      // The sweep with the fewest slots in use, then the oldest.
      int64_t best = -1;
      for (auto& [sweep_id, q] : queues) {
        if (q.first == q.second) continue;
        if (best < 0 || in_use[sweep_id] < in_use[best]) best = sweep_id;
      }
      if (best < 0) break;
      const SchedTrial* t = &*queues[best].first++;
      const int nodes = std::max(1, t->nodes);
      const int per_node = std::max(1, t->slots / nodes);
      if (known_to_fail(per_node, nodes)) continue;
      const std::vector<size_t> chosen = fit.pick(per_node, nodes);
      if (chosen.empty()) {
        if (!reserved_once) reserve_for(ws, fit, per_node, nodes);
        reserved_once = true;
        failed.emplace_back(per_node, nodes);
        continue;
      }
      Assignment a;
      a.trial_id = t->trial_id;
      for (size_t rank = 0; rank < chosen.size(); ++rank) {
        WorkerView& w = ws[chosen[rank]];
        fit.take_out(chosen[rank]);
        Placement p;
        p.worker_id = w.w->worker_id;
        p.node_rank = static_cast<int>(rank);
        p.slots.assign(w.free.begin(), w.free.begin() + per_node);
        w.free.erase(w.free.begin(), w.free.begin() + per_node);
        fit.refile(chosen[rank]);
        a.nodes.push_back(std::move(p));
      }
      in_use[t->sweep_id] += per_node * nodes;
      out.push_back(std::move(a));
    }
  }
  return out;
}

}  // namespace hylab::coordinator
