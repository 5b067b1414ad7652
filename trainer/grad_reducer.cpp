#include "trainer/grad_reducer.h"

#include "common/check.h"

namespace hylab::trainer {

GradReducer::GradReducer(Dist& dist, std::vector<torch::Tensor> params, int64_t bucket_bytes)
    : dist_(dist), params_(std::move(params)) {
  HYLAB_CHECK(bucket_bytes > 0, "GradReducer: bucket_bytes = {}: expected > 0", bucket_bytes);
  // Reverse order; a bucket holds one dtype and device and at most bucket_bytes (a larger
  // single parameter gets a bucket of its own).
  int64_t bytes = 0;
  for (size_t k = params_.size(); k-- > 0;) {
    const torch::Tensor& p = params_[k];
    const int64_t n = p.numel() * p.element_size();
    const bool fits = !buckets_.empty() && bytes + n <= bucket_bytes &&
                      params_[buckets_.back().params.front()].scalar_type() == p.scalar_type() &&
                      params_[buckets_.back().params.front()].device() == p.device();
    if (!fits) {
      buckets_.emplace_back();
      bytes = 0;
    }
    buckets_.back().params.push_back(k);
    bytes += n;
  }
  if (dist_.world() == 1) return;  // nothing to overlap
  for (size_t b = 0; b < buckets_.size(); ++b) {
    for (size_t k : buckets_[b].params) {
      hooks_.push_back(std::make_unique<compat::GradAccumulatedHook>(params_[k], [this, b] { on_gradient(b); }));
    }
  }
}

std::vector<std::vector<size_t>> GradReducer::buckets() const {
  std::vector<std::vector<size_t>> out;
  for (const Bucket& b : buckets_) out.push_back(b.params);
  return out;
}

void GradReducer::arm() {
  std::lock_guard<std::mutex> lock(mu_);
  for (Bucket& b : buckets_) {
    HYLAB_CHECK(!b.launched, "GradReducer::arm: the previous step's finish() was not called");
    b.pending = b.params.size();
  }
  launched_in_backward_ = 0;
  next_launch_ = 0;
  armed_ = true;
}

void GradReducer::on_gradient(size_t bucket) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!armed_) return;  // an earlier micro-step: gradients only accumulate
  Bucket& b = buckets_[bucket];
  if (b.pending == 0 || --b.pending > 0) return;
  // Collectives must start in the same order on every rank (NCCL and gloo pair them by
  // order), so a bucket that fills early waits for the buckets before it, as in DDP.
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].pending == 0) {
    launch(buckets_[next_launch_++]);
    ++launched_in_backward_;
  }
}

void GradReducer::launch(Bucket& b) {
  torch::NoGradGuard no_grad;
  b.launched = true;
  b.grads.clear();
  std::vector<torch::Tensor> parts;
  for (size_t k : b.params) {
    const torch::Tensor& g = params_[k].grad();
    if (!g.defined()) continue;  // every rank has the same set (as average_gradients)
    b.grads.push_back(g);
    parts.push_back(g.reshape({-1}));
  }
  if (parts.empty()) return;
  b.flat = torch::cat(parts);  // (sum of numel,), contiguous
  if (dist_.world() > 1) b.work = dist_.all_reduce_sum_async(b.flat);
}

void GradReducer::finish() {
  if (dist_.world() == 1) return;
  torch::NoGradGuard no_grad;
  {
    std::lock_guard<std::mutex> lock(mu_);
    armed_ = false;
    while (next_launch_ < buckets_.size()) launch(buckets_[next_launch_++]);
  }
  const double world = dist_.world();
  for (Bucket& b : buckets_) {
    if (b.work) b.work->wait();
    if (b.flat.defined()) {
      b.flat.div_(world);
      int64_t offset = 0;
      for (torch::Tensor& g : b.grads) {
        const int64_t n = g.numel();
        g.copy_(b.flat.slice(0, offset, offset + n).view_as(g));
        offset += n;
      }
    }
    b.work.reset();
    b.flat = torch::Tensor();
    b.grads.clear();
    b.launched = false;
  }
}

}  // namespace hylab::trainer
