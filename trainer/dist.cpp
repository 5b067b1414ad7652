#include "trainer/dist.h"

#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#if HYLAB_HAS_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif

#include <cstdlib>
#include <thread>

#include "common/check.h"
#include "trainer/dist_store.h"

namespace hylab::trainer {
namespace {

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : fallback;
}

int env_int(const char* name, int fallback) {
  const std::string v = env_or(name, "");
  if (v.empty()) return fallback;
  try {
    size_t used = 0;
    const int n = std::stoi(v, &used);
    if (used == v.size()) return n;
  } catch (const std::exception&) {
  }
  HYLAB_FAIL("environment variable {}=\"{}\" is not an integer", name, v);
}

constexpr auto kCollectiveTimeout = std::chrono::minutes(30);

struct DoneWork : CommWork {
  void wait() override {}
};

// One process: nothing to communicate.
class SingleDist : public Dist {
 public:
  explicit SingleDist(DistEnv env) : Dist(std::move(env)) {}
  std::string backend() const override { return "none"; }
  void average_gradients(const std::vector<torch::Tensor>&) override {}
  void all_reduce_sum(torch::Tensor&) override {}
  std::unique_ptr<CommWork> all_reduce_sum_async(torch::Tensor&) override {
    return std::make_unique<DoneWork>();
  }
  void all_gather(const torch::Tensor& in, torch::Tensor& out) override {
    out.view({-1}).copy_(in.reshape({-1}));
  }
  void broadcast(torch::Tensor&, int) override {}
  void barrier() override {}
};

#if HYLAB_HAS_GLOO
struct GlooWork : CommWork {
  explicit GlooWork(c10::intrusive_ptr<c10d::Work> w) : work(std::move(w)) {}
  void wait() override { work->wait(); }
  c10::intrusive_ptr<c10d::Work> work;
};

class GlooDist : public Dist {
 public:
  GlooDist(DistEnv env, c10::intrusive_ptr<c10d::Store> store) : Dist(std::move(env)), store_(store) {
    auto opts = c10d::ProcessGroupGloo::Options::create(
        std::chrono::duration_cast<std::chrono::milliseconds>(kCollectiveTimeout));
    const std::string iface = env_or("GLOO_SOCKET_IFNAME", "");
    if (!iface.empty()) {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(iface));
    } else if (env_.master_addr.empty() || env_.master_addr == "localhost" ||
               env_.master_addr == "127.0.0.1") {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    } else {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    pg_ = c10::make_intrusive<c10d::ProcessGroupGloo>(store_, env_.rank, env_.world, opts);
  }
  std::string backend() const override { return "gloo"; }

  void average_gradients(const std::vector<torch::Tensor>& params) override {
    const double world = env_.world;
    for_each_gradient_bucket(params, 64ll << 20, [&](torch::Tensor& flat) {
      std::vector<at::Tensor> v{flat};
      pg_->allreduce(v)->wait();
      flat.div_(world);
    });
  }
  void all_reduce_sum(torch::Tensor& t) override {
    std::vector<at::Tensor> v{t};
    pg_->allreduce(v)->wait();
  }
  std::unique_ptr<CommWork> all_reduce_sum_async(torch::Tensor& t) override {
    HYLAB_CHECK(t.is_contiguous(), "all_reduce_sum_async needs a contiguous tensor");
    std::vector<at::Tensor> v{t};
    return std::make_unique<GlooWork>(pg_->allreduce(v));
  }
  void all_gather(const torch::Tensor& in, torch::Tensor& out) override {
    const int64_t n = in.numel();
    HYLAB_CHECK(out.is_contiguous() && out.numel() == n * env_.world,
                "all_gather: out has {} elements, expected world {} x {}", out.numel(), env_.world, n);
    // Gloo in LibTorch 1.13 has no flat all-gather (_allgather_base): one output view per rank.
    std::vector<at::Tensor> inputs{in.reshape({-1}).contiguous()};
    std::vector<std::vector<at::Tensor>> outputs(1);
    const torch::Tensor flat = out.view({-1});
    for (int r = 0; r < env_.world; ++r) outputs[0].push_back(flat.slice(0, r * n, (r + 1) * n));
    pg_->allgather(outputs, inputs)->wait();
  }
  void broadcast(torch::Tensor& t, int root) override {
    std::vector<at::Tensor> v{t};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    pg_->broadcast(v, o)->wait();
  }
  void barrier() override { pg_->barrier()->wait(); }

 private:
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg_;
};
#endif

}  // namespace

DistEnv dist_env_from_environment() {
  DistEnv e;
  e.world = env_int("WORLD_SIZE", 1);
  e.rank = env_int("RANK", 0);
  e.local_rank = env_int("LOCAL_RANK", e.rank);
  e.rendezvous_file = env_or("HYLAB_RENDEZVOUS_FILE", "");
  e.master_addr = env_or("MASTER_ADDR", "");
  e.master_port = env_int("MASTER_PORT", 0);
  e.init_timeout = std::chrono::seconds(env_int("HYLAB_DIST_INIT_TIMEOUT_S", 120));
  if (e.world < 1 || e.rank < 0 || e.rank >= e.world) {
    HYLAB_FAIL("RANK={} WORLD_SIZE={}: expected 0 <= RANK < WORLD_SIZE", e.rank, e.world);
  }
  if (e.world > 1 && e.rendezvous_file.empty() && (e.master_addr.empty() || e.master_port <= 0)) {
    HYLAB_FAIL("WORLD_SIZE={} but no rendezvous: set MASTER_ADDR and MASTER_PORT (as torchrun "
               "does) or use `hylab train --nproc N`", e.world);
  }
  return e;
}

c10::intrusive_ptr<c10d::Store> make_store(const DistEnv& env) {
  const auto timeout = std::chrono::duration_cast<std::chrono::milliseconds>(env.init_timeout);
  c10::intrusive_ptr<c10d::Store> store;
  try {
    if (!env.rendezvous_file.empty()) {
      store = c10::make_intrusive<c10d::FileStore>(env.rendezvous_file, env.world);
    } else {
      c10d::TCPStoreOptions o;
      o.port = static_cast<std::uint16_t>(env.master_port);
      o.isServer = env.rank == 0;
      o.numWorkers = env.world;
      o.waitWorkers = false;  // wait_for_all_ranks does it, with a clear error
      o.timeout = timeout;
      store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, o);
    }
  } catch (const std::exception& e) {
    HYLAB_FAIL("rank {}: cannot open the rendezvous store ({}): {}", env.rank,
               env.rendezvous_file.empty() ? env.master_addr + ":" + std::to_string(env.master_port)
                                           : env.rendezvous_file,
               e.what());
  }
  store->setTimeout(timeout);
  return store;
}

void wait_for_all_ranks(c10d::Store& store, const DistEnv& env, const std::string& key) {
  const auto deadline = std::chrono::steady_clock::now() + env.init_timeout;
  int64_t arrived = store.add(key, 1);
  while (arrived < env.world) {
    if (std::chrono::steady_clock::now() > deadline) {
      HYLAB_FAIL("rank {}: only {} of {} ranks joined within {} s; a rank failed or hangs at "
                 "start-up (see its output above; HYLAB_DIST_INIT_TIMEOUT_S sets the deadline)",
                 env.rank, arrived, env.world, env.init_timeout.count());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    arrived = store.add(key, 0);
  }
}

void for_each_gradient_bucket(const std::vector<torch::Tensor>& params, int64_t bucket_bytes,
                              const std::function<void(torch::Tensor&)>& reduce) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> grads;
  for (const auto& p : params) {
    if (p.grad().defined()) grads.push_back(p.grad());
  }
  size_t i = 0;
  while (i < grads.size()) {
    // One bucket: consecutive grads of the same dtype/device up to bucket_bytes.
    size_t j = i;
    int64_t bytes = 0;
    while (j < grads.size() && grads[j].scalar_type() == grads[i].scalar_type() &&
           grads[j].device() == grads[i].device() &&
           (j == i || bytes + grads[j].numel() * grads[j].element_size() <= bucket_bytes)) {
      bytes += grads[j].numel() * grads[j].element_size();
      ++j;
    }
    std::vector<torch::Tensor> flat_parts;
    for (size_t k = i; k < j; ++k) flat_parts.push_back(grads[k].reshape({-1}));
    torch::Tensor flat = torch::cat(flat_parts);
    reduce(flat);
    int64_t offset = 0;
    for (size_t k = i; k < j; ++k) {
      const int64_t n = grads[k].numel();
      grads[k].copy_(flat.slice(0, offset, offset + n).view_as(grads[k]));
      offset += n;
    }
    i = j;
  }
}

std::unique_ptr<Dist> make_dist(const DistEnv& env, const torch::Device& device) {
  if (env.world == 1) return std::make_unique<SingleDist>(env);
  if (device.is_cuda()) {
#if HYLAB_HAS_NCCL
    return make_nccl_dist(env, device);
#else
    HYLAB_FAIL("WORLD_SIZE={} on CUDA needs NCCL, which this build does not have (CMake found no "
               "nccl.h/libnccl, or LibTorch has no CUDA)", env.world);
#endif
  }
#if HYLAB_HAS_GLOO
  auto store = make_store(env);
  wait_for_all_ranks(*store, env, "hylab/init");
  store->setTimeout(std::chrono::duration_cast<std::chrono::milliseconds>(kCollectiveTimeout));
  return std::make_unique<GlooDist>(env, store);
#else
  HYLAB_FAIL("WORLD_SIZE={} on CPU needs gloo, which this build does not have (install "
             "libgloo-dev and re-run cmake)", env.world);
#endif
}

}  // namespace hylab::trainer
