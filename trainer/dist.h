// Data-parallel communication between trainer ranks.
//
// Who is who comes from the environment, as torchrun and SLURM launchers set it:
//   RANK, WORLD_SIZE, LOCAL_RANK (default 0, 1, RANK), and a rendezvous:
//   HYLAB_RENDEZVOUS_FILE (a c10d FileStore path; `hylab train --nproc N` sets it) or
//   MASTER_ADDR + MASTER_PORT (a c10d TCPStore served by rank 0).
// Backends: one process -> no-ops; CPU -> LibTorch's c10d ProcessGroupGloo; CUDA -> NCCL
// called directly (rank 0 makes the unique id and hands it over through the store).
//
// Init has a deadline (HYLAB_DIST_INIT_TIMEOUT_S, default 120 s): every rank announces itself
// in the store and waits for all; a rank that never arrives makes the others fail with an
// error that says how many arrived. Collectives afterwards have a long timeout (30 min),
// since rank 0 evaluates and checkpoints while the others wait.
//
// Gradients are averaged over ranks either after the last micro-step (average_gradients:
// flattened into buckets of one dtype, at most 64 MiB each, all-reduced in place, divided by
// the world size) or while backward runs (trainer/grad_reducer.h, through all_reduce_async).
// Every rank then holds the same gradients; the Muon step is sharded (trainer/optim.h: each
// rank orthogonalises its share, all_gather shares the updates), AdamW runs on every rank,
// so parameters stay identical without being broadcast again.
#pragma once

#include <torch/torch.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace hylab::trainer {

struct DistEnv {
  int rank = 0, world = 1, local_rank = 0;
  std::string rendezvous_file;           // FileStore
  std::string master_addr;               // TCPStore
  int master_port = 0;
  std::chrono::seconds init_timeout{120};
};

// Reads the variables above. Throws hylab::Error on malformed values, or when WORLD_SIZE > 1
// comes without a rendezvous.
DistEnv dist_env_from_environment();

// An asynchronous collective in flight. wait() returns once the result may be read by the
// ops that follow on this thread (CPU: the data is there; CUDA: the current stream waits for
// the communication stream, the host does not block).
class CommWork {
 public:
  virtual ~CommWork() = default;
  virtual void wait() = 0;
};

class Dist {
 public:
  virtual ~Dist() = default;
  int rank() const { return env_.rank; }
  int world() const { return env_.world; }
  const DistEnv& env() const { return env_; }
  virtual std::string backend() const = 0;

  // Averages the gradients of `params` across ranks, in place (parameters without a
  // gradient are skipped; every rank must have the same set).
  virtual void average_gradients(const std::vector<torch::Tensor>& params) = 0;
  // Sums a small tensor across ranks in place (losses, counters).
  virtual void all_reduce_sum(torch::Tensor& t) = 0;
  // Starts summing a contiguous tensor across ranks in place; the caller keeps `t` alive and
  // unread until wait(). With one rank: nothing to do.
  virtual std::unique_ptr<CommWork> all_reduce_sum_async(torch::Tensor& t) = 0;
  // out (world * n elements, contiguous) = every rank's `in` (n elements) in rank order.
  // With one rank: out = in.
  virtual void all_gather(const torch::Tensor& in, torch::Tensor& out) = 0;
  // Copies root's tensor into every rank's, in place.
  virtual void broadcast(torch::Tensor& t, int root) = 0;
  virtual void barrier() = 0;

 protected:
  explicit Dist(DistEnv env) : env_(std::move(env)) {}
  DistEnv env_;
};

// The backend for `device`: single process if world == 1, gloo on CPU, NCCL on CUDA.
// Throws hylab::Error with the cause (missing backend, init deadline passed, ...).
std::unique_ptr<Dist> make_dist(const DistEnv& env, const torch::Device& device);

// Flattens the defined gradients of params into buckets of one dtype and device, at most
// bucket_bytes each (a single larger gradient gets its own bucket). For each bucket,
// `reduce(flat)` runs, then the values are copied back. Shared by the gloo and NCCL backends.
void for_each_gradient_bucket(const std::vector<torch::Tensor>& params, int64_t bucket_bytes,
                              const std::function<void(torch::Tensor&)>& reduce);

#if HYLAB_HAS_NCCL
// trainer/dist_nccl.cpp
std::unique_ptr<Dist> make_nccl_dist(const DistEnv& env, const torch::Device& device);
#endif

}  // namespace hylab::trainer
