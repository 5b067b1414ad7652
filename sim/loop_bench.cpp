// The coordinator's loop per message, without sockets (loop_bench.h).
#include "sim/loop_bench.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <utility>
#include <vector>

#include "common/check.h"
#include "coordinator/coordinator_impl.h"
#include "sim/load_bench.h"
#include "wire/wire.h"

namespace hylab::sim {
namespace {

namespace fs = std::filesystem;
using coordinator::Inbound;
using Clock = std::chrono::steady_clock;

constexpr size_t kBatch = 256;         // the loop's bulk batch (coordinator.cpp)
constexpr int64_t kRoundMs = 100;      // metrics at 10 Hz
constexpr int kBeatEveryRounds = 10;   // heartbeats at 1 Hz

Inbound from(const std::string& worker, const proto::Envelope& env) {
  return Inbound{worker, false, "", wire::encode(env, worker)};
}

struct Timings {
  double step_ms = 0, checkpoint_ms = 0;
};

// The timed part (named for callgrind's --toggle-collect). `now` advances so that the
// batches come at the rate their messages were sent: one round's messages per kRoundMs.
__attribute__((noinline)) Timings measured_steps(coordinator::Coordinator::Impl& core,
                                                 const std::vector<std::vector<Inbound>>& batches,
                                                 int64_t ms_per_batch, int64_t* now) {
  Timings t;
  for (const auto& b : batches) {
    *now += ms_per_batch;
    const auto a = Clock::now();
    core.step(b, *now);
    const auto m = Clock::now();
    core.checkpoint_if_due(false, *now);
    t.step_ms += std::chrono::duration<double, std::milli>(m - a).count();
    t.checkpoint_ms += std::chrono::duration<double, std::milli>(Clock::now() - m).count();
  }
  return t;
}

}  // namespace

nlohmann::json run_loop_bench(int workers, int rounds, const std::string& dir) {
  if (workers < 1 || rounds < 1) HYLAB_FAIL("loop bench: workers and rounds must be at least 1");
  fs::remove_all(dir);
  fs::create_directories(dir);
  coordinator::CoordinatorOptions opt;
  opt.db_path = (fs::path(dir) / "hylab.db").string();
  opt.security.insecure = true;
  int64_t now = 1'000'000;
  coordinator::Coordinator::Impl core(opt, now);

  // A sweep with a trial for every worker (and some to spare), as the load bench submits it.
  const int trials = workers + 100;
  int64_t request_id = 0;
  for (const auto& req : bench_sweep_requests("loop", trials)) {
    proto::Envelope env;
    *env.mutable_request() = req;
    env.mutable_request()->set_request_id(++request_id);
    core.step({Inbound{"client", true, "", wire::encode(env, "client")}}, ++now);
  }

  // Registration and Started, outside the timed part; each worker's Assign read back.
  std::map<std::string, std::pair<int64_t, int64_t>> held;  // worker -> (trial, attempt)
  std::vector<Inbound> batch;
  auto flush = [&](size_t at_least) {
    if (batch.size() < at_least) return;
    for (const auto& o : core.step(batch, ++now)) {
      std::string error;
      auto env = wire::decode(o.payload.data(), o.payload.size(), &error);
      if (env && env->has_assign()) held[o.routing_id] = {env->assign().trial_id(), env->assign().attempt()};
    }
    batch.clear();
  };
  for (int i = 0; i < workers; ++i) {
    const std::string id = "loop-" + std::to_string(i);
    proto::Envelope e;
    e.mutable_hello()->set_worker_id(id);
    e.mutable_hello()->set_host("loopback");
    e.mutable_hello()->set_slots(1);
    batch.push_back(from(id, e));
    flush(kBatch);
  }
  flush(1);
  if (static_cast<int>(held.size()) != workers) {
    HYLAB_FAIL("loop bench: {} of {} workers were assigned a trial", held.size(), workers);
  }
  for (const auto& [id, t] : held) {
    proto::Envelope e;
    auto* s = e.mutable_started();
    s->set_trial_id(t.first);
    s->set_attempt(t.second);
    s->set_pid(1);
    s->set_run_dir("/loop");
    batch.push_back(from(id, e));
    flush(kBatch);
  }
  flush(1);

  // The rounds, encoded beforehand.
  std::vector<std::vector<Inbound>> batches(1);
  size_t messages = 0;
  for (int r = 0; r < rounds; ++r) {
    for (const auto& [id, t] : held) {
      proto::Envelope e;
      auto* b = e.mutable_metrics();
      b->set_trial_id(t.first);
      b->set_attempt(t.second);
      b->set_seq(r + 1);
      auto* m = b->add_metrics();
      m->set_step(r + 1);
      m->set_name("train_loss");
      m->set_value(1.0 / (r + 1));
      m->set_wall_time(static_cast<double>(r) * 0.1);
      batches.back().push_back(from(id, e));
      if (r % kBeatEveryRounds == 0) {
        proto::Envelope hb;
        auto* h = hb.mutable_heartbeat()->add_held();
        h->set_trial_id(t.first);
        h->set_attempt(t.second);
        h->add_slots(0);
        batches.back().push_back(from(id, hb));
      }
      if (batches.back().size() >= kBatch) batches.emplace_back();
    }
  }
  if (batches.back().empty()) batches.pop_back();
  for (const auto& b : batches) messages += b.size();
  const int64_t ms_per_batch =
      std::max<int64_t>(1, kRoundMs * rounds / static_cast<int64_t>(std::max<size_t>(1, batches.size())));

  const auto t0 = Clock::now();
  const Timings t = measured_steps(core, batches, ms_per_batch, &now);
  const double wall_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  int64_t rows = 0;
  {
    auto q = core.store->db().prepare("SELECT COUNT(*) FROM metrics");
    if (q.step()) rows = q.int64(0);
  }
  return {{"workers", workers},
          {"rounds", rounds},
          {"messages", messages},
          {"steps", batches.size()},
          {"wall_ms", wall_ms},
          {"us_per_message", 1000.0 * wall_ms / static_cast<double>(messages)},
          {"step_ms", t.step_ms},
          {"checkpoint_ms", t.checkpoint_ms},
          {"metric_rows", rows}};
}

}  // namespace hylab::sim
