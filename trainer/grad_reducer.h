// Gradient averaging over ranks, overlapped with backward (what DDP's reducer does).
//
// The parameters are cut into buckets of about `bucket_bytes` (default 25 MiB) in reverse
// order, which is roughly the order in which backward produces their gradients (lm_head
// first, the embedding last), one dtype and device per bucket. On the last micro-step of an
// optimiser step (arm() before its backward), a hook on every parameter's gradient
// accumulator counts the bucket down; when a bucket's last gradient has been accumulated
// (and every bucket before it has started: all ranks start them in the same order), the
// bucket is flattened and its all-reduce starts (Dist::all_reduce_sum_async: gloo's
// worker threads on CPU, a communication stream on CUDA) while backward carries on with the
// earlier layers. finish() after backward starts any bucket that did not fill (a parameter
// that got no gradient this step), waits for all, divides by the world size and copies the
// averages back into p.grad().
//
// Results equal Dist::average_gradients' (the same sums of the same values; on 2 ranks bit
// for bit), tests/trainer/dist_optim_test.cpp checks it over gloo. Micro-steps before the
// last run no collective: their gradients only accumulate locally.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "model/compat.h"
#include "trainer/dist.h"

namespace hylab::trainer {

class GradReducer {
 public:
  static constexpr int64_t kDefaultBucketBytes = 25ll << 20;

  // Every rank must pass the same parameters in the same order. `dist` outlives this.
  GradReducer(Dist& dist, std::vector<torch::Tensor> params,
              int64_t bucket_bytes = kDefaultBucketBytes);

  // The next backward is the last of the step: its gradients are all-reduced as they come.
  void arm();
  // After that backward: every gradient of `params` averaged over ranks, in place.
  void finish();

  // Parameter indices per bucket, in launch order (for tests and the log).
  std::vector<std::vector<size_t>> buckets() const;
  // Buckets launched by the hooks during the last armed backward (the rest by finish()).
  int launched_during_backward() const { return launched_in_backward_; }

 private:
  struct Bucket {
    std::vector<size_t> params;
    size_t pending = 0;  // gradients still to arrive in the armed backward
    bool launched = false;
    std::vector<torch::Tensor> grads;  // the gradients flattened into `flat`
    torch::Tensor flat;
    std::unique_ptr<CommWork> work;
  };
  void on_gradient(size_t bucket);  // a hook: one gradient of `bucket` has been accumulated
  void launch(Bucket& b);

  Dist& dist_;
  std::vector<torch::Tensor> params_;
  std::vector<Bucket> buckets_;
  std::vector<std::unique_ptr<compat::GradAccumulatedHook>> hooks_;
  std::mutex mu_;  // hooks may run on autograd's device threads
  bool armed_ = false;
  size_t next_launch_ = 0;  // buckets start in index order on every rank
  int launched_in_backward_ = 0;
};

}  // namespace hylab::trainer
