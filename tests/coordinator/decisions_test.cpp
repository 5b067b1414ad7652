// The coordinator's pure decisions: scheduling (gang, priorities, fairness, no starvation,
// multi-node), retries, liveness, early stopping. No sockets, no clock: state in, decisions out.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>

#include "common/states.h"
#include "coordinator/early_stop.h"
#include "coordinator/policy.h"
#include "coordinator/scheduler.h"
#include "coordinator/worker_book.h"

namespace hylab::coordinator {
namespace {

SchedWorker worker(const std::string& id, int total, std::vector<int> free) {
  return {id, total, std::move(free), true};
}

SchedTrial trial(int64_t id, int64_t sweep, int slots = 1, int priority = 0, int nodes = 1) {
  return {id, sweep, id, slots, nodes, priority};
}

std::vector<int64_t> ids(const std::vector<Assignment>& as) {
  std::vector<int64_t> out;
  for (const auto& a : as) out.push_back(a.trial_id);
  return out;
}

TEST(Scheduler, GangStartsOnlyWhenAllSlotsAreFreeOnOneWorker) {
  // Two workers with one free GPU each: a 2-GPU trial must not be split across them.
  auto out = schedule({trial(1, 1, 2)}, {worker("a", 2, {1}), worker("b", 2, {0})}, {});
  EXPECT_TRUE(out.empty());
  out = schedule({trial(1, 1, 2)}, {worker("a", 2, {1}), worker("b", 2, {0, 1})}, {});
  ASSERT_EQ(out.size(), 1u);
  ASSERT_EQ(out[0].nodes.size(), 1u);
  EXPECT_EQ(out[0].nodes[0].worker_id, "b");
  EXPECT_EQ(out[0].nodes[0].slots, (std::vector<int>{0, 1}));
}

TEST(Scheduler, FillsFreeSlotsAndNeverDoubleBooks) {
  auto out = schedule({trial(1, 1), trial(2, 1), trial(3, 1), trial(4, 1)},
                      {worker("a", 2, {0, 1}), worker("b", 1, {0})}, {});
  ASSERT_EQ(out.size(), 3u);
  std::set<std::pair<std::string, int>> used;
  for (const auto& a : out) {
    for (int s : a.nodes[0].slots) EXPECT_TRUE(used.insert({a.nodes[0].worker_id, s}).second);
  }
  EXPECT_EQ(ids(out), (std::vector<int64_t>{1, 2, 3}));  // trial_index order within a sweep
}

TEST(Scheduler, HigherPriorityFirst) {
  auto out = schedule({trial(1, 1, 1, 0), trial(2, 2, 1, 5)}, {worker("a", 1, {0})}, {});
  EXPECT_EQ(ids(out), (std::vector<int64_t>{2}));
}

TEST(Scheduler, FairAcrossSweepsOfEqualPriority) {
  // Sweep 1 submitted first with many trials; sweep 2 must still get half of 4 slots.
  PendingSet pending;
  for (int i = 1; i <= 6; ++i) pending.insert(trial(i, 1));
  for (int i = 7; i <= 9; ++i) pending.insert(trial(i, 2));
  auto out = schedule(pending, {worker("a", 4, {0, 1, 2, 3})}, {});
  ASSERT_EQ(out.size(), 4u);
  int s1 = 0, s2 = 0;
  for (const auto& a : out) (a.trial_id <= 6 ? s1 : s2)++;
  EXPECT_EQ(s1, 2);
  EXPECT_EQ(s2, 2);
  // With sweep 1 already holding 3 slots elsewhere, sweep 2 gets both free slots.
  out = schedule(pending, {worker("a", 2, {0, 1})}, {{1, 3}});
  EXPECT_EQ(ids(out), (std::vector<int64_t>{7, 8}));
}

TEST(Scheduler, BestFitKeepsRoomForLargerGangs) {
  // A 1-GPU trial goes to the worker with 1 free slot, leaving the 2-free worker for the gang.
  auto out = schedule({trial(1, 1, 1), trial(2, 1, 2)}, {worker("big", 2, {0, 1}), worker("small", 2, {1})}, {});
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].nodes[0].worker_id, "small");
  EXPECT_EQ(out[1].nodes[0].worker_id, "big");
}

TEST(Scheduler, BlockedGangReservesAWorkerSoSmallTrialsDoNotStarveIt) {
  // High-priority 2-GPU trial, each worker has 1 of 2 free: it cannot start; the worker it
  // will get first is reserved, so the low-priority 1-GPU trial takes only the other one.
  auto out = schedule({trial(1, 1, 2, 9), trial(2, 2, 1, 0), trial(3, 2, 1, 0)},
                      {worker("a", 2, {1}), worker("b", 2, {0})}, {});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].trial_id, 2);
  // A gang that no worker could ever host reserves nothing.
  out = schedule({trial(1, 1, 8, 9), trial(2, 2, 1, 0)}, {worker("a", 2, {0, 1})}, {});
  EXPECT_EQ(ids(out), (std::vector<int64_t>{2}));
}

TEST(Scheduler, MultiNodeTrialsTakeEqualSharesOnDistinctWorkers) {
  auto out = schedule({trial(1, 1, 4, 0, 2)},
                      {worker("a", 2, {0, 1}), worker("b", 2, {0, 1}), worker("c", 2, {0})}, {});
  ASSERT_EQ(out.size(), 1u);
  ASSERT_EQ(out[0].nodes.size(), 2u);
  EXPECT_NE(out[0].nodes[0].worker_id, out[0].nodes[1].worker_id);
  EXPECT_EQ(out[0].nodes[0].node_rank, 0);
  EXPECT_EQ(out[0].nodes[1].node_rank, 1);
  for (const auto& n : out[0].nodes) EXPECT_EQ(n.slots.size(), 2u);
  // Only one worker with 2 free: cannot start.
  EXPECT_TRUE(schedule({trial(1, 1, 4, 0, 2)}, {worker("a", 2, {0, 1}), worker("c", 2, {0})}, {}).empty());
}

TEST(Scheduler, DrainingWorkersGetNothing) {
  SchedWorker w = worker("a", 2, {0, 1});
  w.accepting = false;
  EXPECT_TRUE(schedule({trial(1, 1)}, {w}, {}).empty());
}

// schedule()'s rule written the slow way, as it was before the best-fit order was kept
// incrementally: every placement scans and sorts every worker.
std::vector<Assignment> schedule_by_scan(const std::vector<SchedTrial>& pending, const std::vector<SchedWorker>& workers,
                                         const std::map<int64_t, int>& running_slots) {
  struct View {
    const SchedWorker* w;
    std::vector<int> free;
    bool reserved = false;
  };
  std::vector<View> ws;
  for (const auto& w : workers) {
    View v{&w, w.free_slots};
    std::sort(v.free.begin(), v.free.end());
    ws.push_back(std::move(v));
  }
  // Best fit: fewest free slots that fit, then worker_id (most_free: the reservation's order).
  auto ordered = [&](int per_node, bool by_total, bool most_free) {
    std::vector<size_t> fit;
    for (size_t i = 0; i < ws.size(); ++i) {
      const int have = by_total ? ws[i].w->total_slots : static_cast<int>(ws[i].free.size());
      if (ws[i].w->accepting && !ws[i].reserved && have >= per_node) fit.push_back(i);
    }
    std::stable_sort(fit.begin(), fit.end(), [&](size_t a, size_t b) {
      if (ws[a].free.size() != ws[b].free.size()) return most_free == (ws[a].free.size() > ws[b].free.size());
      return ws[a].w->worker_id < ws[b].w->worker_id;
    });
    return fit;
  };
  std::map<int64_t, int> in_use = running_slots;
  std::vector<const SchedTrial*> sorted;
  for (const auto& t : pending) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(), [](const SchedTrial* a, const SchedTrial* b) {
    return std::make_pair(a->trial_index, a->trial_id) < std::make_pair(b->trial_index, b->trial_id);
  });
  std::map<int, std::map<int64_t, std::vector<const SchedTrial*>>, std::greater<int>> levels;
  for (const SchedTrial* t : sorted) levels[t->priority][t->sweep_id].push_back(t);
  std::vector<Assignment> out;
  bool reserved_once = false;
  for (auto& [priority, queues] : levels) {
    std::map<int64_t, size_t> next;
    while (true) {
      int64_t best = -1;
      for (auto& [sweep_id, q] : queues) {
        if (next[sweep_id] >= q.size()) continue;
        if (best < 0 || in_use[sweep_id] < in_use[best]) best = sweep_id;
      }
      if (best < 0) break;
      const SchedTrial* t = queues[best][next[best]++];
      const int nodes = std::max(1, t->nodes);
      const int per_node = std::max(1, t->slots / nodes);
      std::vector<size_t> chosen = ordered(per_node, false, false);
      if (static_cast<int>(chosen.size()) < nodes) {
        if (!reserved_once) {
          const std::vector<size_t> big = ordered(per_node, true, true);
          if (static_cast<int>(big.size()) >= nodes) {
            for (int k = 0; k < nodes; ++k) ws[big[static_cast<size_t>(k)]].reserved = true;
          }
        }
        reserved_once = true;
        continue;
      }
      Assignment a;
      a.trial_id = t->trial_id;
      for (int rank = 0; rank < nodes; ++rank) {
        View& w = ws[chosen[static_cast<size_t>(rank)]];
        a.nodes.push_back(Placement{w.w->worker_id, std::vector<int>(w.free.begin(), w.free.begin() + per_node), rank});
        w.free.erase(w.free.begin(), w.free.begin() + per_node);
      }
      in_use[t->sweep_id] += per_node * nodes;
      out.push_back(std::move(a));
    }
  }
  return out;
}

// The scheduler against its slow twin on random rounds: gangs, multi-node trials, priorities,
// several sweeps, draining workers, partly busy workers, ties in free slots.
TEST(Scheduler, AgreesWithTheRuleWrittenTheSlowWay) {
  std::mt19937 rng(16);
  int placed = 0, blocked_rounds = 0;
  for (int round = 0; round < 3000; ++round) {
    std::vector<SchedWorker> ws;
    const int n_workers = 1 + static_cast<int>(rng() % 12);
    for (int i = 0; i < n_workers; ++i) {
      const int total = 1 + static_cast<int>(rng() % 8);
      std::vector<int> free;
      for (int s = 0; s < total; ++s) {
        if (rng() % 3) free.push_back(s);
      }
      std::shuffle(free.begin(), free.end(), rng);
      ws.push_back({"w" + std::to_string(rng() % 100), total, free, rng() % 8 != 0});
    }
    std::sort(ws.begin(), ws.end(), [](const SchedWorker& a, const SchedWorker& b) { return a.worker_id < b.worker_id; });
    ws.erase(std::unique(ws.begin(), ws.end(), [](const SchedWorker& a, const SchedWorker& b) {
               return a.worker_id == b.worker_id;
             }), ws.end());
    std::shuffle(ws.begin(), ws.end(), rng);
    std::vector<SchedTrial> pending;
    const int n_trials = static_cast<int>(rng() % 25);
    for (int i = 0; i < n_trials; ++i) {
      const int nodes = rng() % 5 == 0 ? 2 + static_cast<int>(rng() % 2) : 1;
      const int per_node = 1 + static_cast<int>(rng() % (rng() % 3 ? 2 : 6));
      pending.push_back({100 + i, 1 + static_cast<int64_t>(rng() % 3), static_cast<int64_t>(rng() % 10),
                         per_node * nodes, nodes, static_cast<int>(rng() % 2)});
    }
    std::map<int64_t, int> running;
    for (int64_t sweep = 1; sweep <= 3; ++sweep) {
      if (rng() % 2) running[sweep] = static_cast<int>(rng() % 5);
    }
    const auto fast = schedule(PendingSet(pending.begin(), pending.end()), ws, running);
    const auto slow = schedule_by_scan(pending, ws, running);
    ASSERT_EQ(fast.size(), slow.size()) << "round " << round;
    for (size_t i = 0; i < fast.size(); ++i) {
      ASSERT_EQ(fast[i].trial_id, slow[i].trial_id) << "round " << round << ", assignment " << i;
      ASSERT_EQ(fast[i].nodes.size(), slow[i].nodes.size()) << "round " << round;
      for (size_t k = 0; k < fast[i].nodes.size(); ++k) {
        EXPECT_EQ(fast[i].nodes[k].worker_id, slow[i].nodes[k].worker_id) << "round " << round;
        EXPECT_EQ(fast[i].nodes[k].slots, slow[i].nodes[k].slots) << "round " << round;
        EXPECT_EQ(fast[i].nodes[k].node_rank, slow[i].nodes[k].node_rank) << "round " << round;
      }
    }
    placed += static_cast<int>(fast.size());
    blocked_rounds += fast.size() < pending.size();
  }
  EXPECT_GT(placed, 5000);          // the rounds placed plenty
  EXPECT_GT(blocked_rounds, 1000);  // and often could not place everything (reservations)
}

// The fast check schedule() asks of every worker after every batch, against its slow twin
// (the list of free slots): workers of 0 to 70 slots (past the 64 of the bit mask), with
// held slots reported and assigned, overlapping, repeated and out of range.
TEST(Scheduler, HasFreeSlotAgreesWithFreeSlots) {
  std::mt19937 rng(15);
  int with_free = 0, without = 0;
  for (int round = 0; round < 20000; ++round) {
    WorkerInfo w;
    w.slots = static_cast<int>(rng() % 71);
    if (round % 7 == 0) w.slots = 64;
    const int holds = static_cast<int>(rng() % 5);
    for (int h = 0; h < holds; ++h) {
      std::vector<int> taken;
      // Often the whole worker (a busy one), else a few slots, sometimes out of range.
      const bool whole = rng() % 3 == 0;
      const int n = whole ? w.slots : static_cast<int>(rng() % 4);
      for (int i = 0; i < n; ++i) taken.push_back(whole ? i : static_cast<int>(rng() % (w.slots + 3)) - 1);
      if (rng() % 2) w.reported[{h, 1}] = taken;
      else w.assigned[{h, 1}] = Held{taken, 0};
    }
    const bool twin = !w.free_slots().empty();
    ASSERT_EQ(w.has_free_slot(), twin) << "round " << round << ", " << w.slots << " slots";
    (twin ? with_free : without) += 1;
  }
  EXPECT_GT(without, 1000);  // both answers were asked for
  EXPECT_GT(with_free, 1000);
}

TEST(Policy, RetriesFailuresUpToMaxRetriesAndRecordsResults) {
  using proto::TrialOutcome;
  auto d = decide_after_attempt(proto::TRIAL_OUTCOME_FAILED, 0, 2);
  EXPECT_EQ(d.trial_state, proto::TRIAL_STATE_PENDING);
  EXPECT_TRUE(d.retry);
  EXPECT_TRUE(d.count_failure);
  d = decide_after_attempt(proto::TRIAL_OUTCOME_FAILED, 1, 2);
  EXPECT_EQ(d.trial_state, proto::TRIAL_STATE_PENDING);
  d = decide_after_attempt(proto::TRIAL_OUTCOME_FAILED, 2, 2);
  EXPECT_EQ(d.trial_state, proto::TRIAL_STATE_FAILED);
  EXPECT_FALSE(d.retry);
  d = decide_after_attempt(proto::TRIAL_OUTCOME_FAILED, 0, 0);
  EXPECT_EQ(d.trial_state, proto::TRIAL_STATE_FAILED);
  // OOM and divergence are results for the architecture: never retried.
  EXPECT_EQ(decide_after_attempt(proto::TRIAL_OUTCOME_OOM, 0, 5).trial_state, proto::TRIAL_STATE_OOM);
  EXPECT_FALSE(decide_after_attempt(proto::TRIAL_OUTCOME_OOM, 0, 5).retry);
  EXPECT_EQ(decide_after_attempt(proto::TRIAL_OUTCOME_DIVERGED, 0, 5).trial_state, proto::TRIAL_STATE_DIVERGED);
  EXPECT_EQ(decide_after_attempt(proto::TRIAL_OUTCOME_BAD_CONFIG, 0, 5).trial_state, proto::TRIAL_STATE_FAILED);
  EXPECT_EQ(decide_after_attempt(proto::TRIAL_OUTCOME_SUCCEEDED, 0, 5).trial_state, proto::TRIAL_STATE_SUCCEEDED);
  EXPECT_EQ(decide_after_attempt(proto::TRIAL_OUTCOME_CANCELLED, 0, 5).trial_state, proto::TRIAL_STATE_CANCELLED);
  // Preemption runs again without using up a retry, even at the limit.
  d = decide_after_attempt(proto::TRIAL_OUTCOME_PREEMPTED, 2, 2);
  EXPECT_EQ(d.trial_state, proto::TRIAL_STATE_PENDING);
  EXPECT_FALSE(d.count_failure);
}

TEST(Policy, LivenessExpiresAfterThreeMissedBeats) {
  Liveness l{1000, 3};
  EXPECT_FALSE(l.expired(0, 2999));
  EXPECT_FALSE(l.expired(0, 3000));
  EXPECT_TRUE(l.expired(0, 3001));
}

MetricSeries series(int64_t id, bool running, std::vector<std::pair<int64_t, double>> pts) {
  return {id, running, std::move(pts)};
}

TEST(EarlyStop, MedianRuleStopsTrialsWorseThanTheMedianAtTheSameStep) {
  proto::EarlyStop rule;
  rule.set_type("median");
  rule.set_min_steps(100);
  rule.set_min_trials(3);
  std::vector<MetricSeries> s = {
      series(1, false, {{100, 2.0}, {200, 1.8}}),
      series(2, false, {{100, 2.1}, {200, 1.9}}),
      series(3, false, {{100, 2.2}, {200, 2.0}}),
      series(4, true, {{100, 2.5}, {200, 2.4}}),   // worse than median 1.9 at step 200
      series(5, true, {{100, 1.5}, {200, 1.4}}),   // better
  };
  auto d = early_stop(rule, /*minimize=*/true, s);
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].trial_id, 4);
  EXPECT_NE(d[0].reason.find("median"), std::string::npos);
  // Before min_steps: no decision.
  rule.set_min_steps(500);
  EXPECT_TRUE(early_stop(rule, true, s).empty());
  // Too few trials reached the step: no decision.
  rule.set_min_steps(100);
  rule.set_min_trials(5);
  EXPECT_TRUE(early_stop(rule, true, s).empty());
  // Maximize flips the comparison.
  rule.set_min_trials(3);
  d = early_stop(rule, /*minimize=*/false, s);
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].trial_id, 5);
}

TEST(EarlyStop, AshaKeepsTheTopOneOverEtaAtEachRung) {
  proto::EarlyStop rule;
  rule.set_type("asha");
  rule.set_min_steps(10);
  rule.set_eta(2);
  rule.set_rungs(3);  // rungs at 10, 20, 40
  std::vector<MetricSeries> s = {
      series(1, false, {{10, 1.0}, {20, 0.9}}),
      series(2, true, {{10, 2.0}, {15, 1.9}}),  // rung 10: rank 2 of 2 -> stop
      series(3, true, {{5, 3.0}}),              // below the first rung
  };
  auto d = early_stop(rule, true, s);
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].trial_id, 2);
  // Fewer than eta trials at the rung: no decision.
  s.erase(s.begin());
  EXPECT_TRUE(early_stop(rule, true, s).empty());
  // The best at its rung continues.
  std::vector<MetricSeries> s2 = {series(1, true, {{10, 0.5}}), series(2, false, {{10, 1.0}}),
                                  series(3, false, {{10, 1.5}}), series(4, false, {{10, 2.0}})};
  EXPECT_TRUE(early_stop(rule, true, s2).empty());
  s2[0].points = {{10, 1.2}};  // now 2nd of 4; keep = 2 -> continues
  EXPECT_TRUE(early_stop(rule, true, s2).empty());
  s2[0].points = {{10, 1.7}};  // 3rd of 4 -> stop
  EXPECT_EQ(early_stop(rule, true, s2).size(), 1u);
}

TEST(EarlyStop, NoRuleNoDecisions) {
  EXPECT_TRUE(early_stop(proto::EarlyStop(), true, {series(1, true, {{1000, 9.0}})}).empty());
}

}  // namespace
}  // namespace hylab::coordinator

namespace hylab::coordinator {
namespace {

// Lost workers and SIGKILLed trainers have a budget of their own: two worker restarts must
// not fail a healthy trial whose sweep allows no trainer errors (max_retries 0).
TEST(Policy, InfrastructureLossesHaveTheirOwnBudget) {
  for (int losses = 0; losses < kMaxLosses; ++losses) {
    const auto d = decide_after_attempt(proto::TRIAL_OUTCOME_LOST, 0, 0, losses);
    EXPECT_EQ(d.trial_state, proto::TRIAL_STATE_PENDING) << losses;
    EXPECT_TRUE(d.retry);
    EXPECT_TRUE(d.count_loss);
    EXPECT_FALSE(d.count_failure);
  }
  const auto last = decide_after_attempt(proto::TRIAL_OUTCOME_LOST, 0, 0, kMaxLosses);
  EXPECT_EQ(last.trial_state, proto::TRIAL_STATE_FAILED);
  EXPECT_FALSE(last.retry);
  // Trainer errors still use max_retries, whatever the losses.
  EXPECT_EQ(decide_after_attempt(proto::TRIAL_OUTCOME_FAILED, 0, 0, 3).trial_state, proto::TRIAL_STATE_FAILED);
  EXPECT_EQ(attempt_state(proto::TRIAL_OUTCOME_LOST), proto::ATTEMPT_STATE_LOST);
}

}  // namespace
}  // namespace hylab::coordinator
