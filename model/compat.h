// Every difference between the LibTorch versions we build against goes through this header:
// Debian's 1.13 (CPU, the development and CI machines) and 2.x with CUDA (the GPU hosts).
//
//   - AutocastGuard, cuda_autocast_enabled: CUDA bf16 autocast for a scope (1.13:
//     set_enabled; >= 2.4: per device).
//   - causal_attention: scaled_dot_product_attention where it exists (>= 2.0; flash/cuDNN
//     on GPU), an exact fp32 math fallback elsewhere. Handles a KV cache offset.
//   - rms_norm: nanochat's weightless RMSNorm (F.rms_norm with eps = finfo(dtype).eps).
//   - HYLAB_HAS_CUDA_GRAPHS: 1 where the decoder may capture CUDA graphs (a CUDA LibTorch
//     >= 2.0 with our kernels built); elsewhere it decodes eagerly (model/decoder.h).
//   - GradAccumulatedHook: a callback after a leaf's gradient is accumulated in backward
//     (the overlapped gradient all-reduce, trainer/grad_reducer.h).
#pragma once

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <ATen/autocast_mode.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>

#define HYLAB_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) ||        \
   (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

#if defined(HYLAB_CUDA_KERNELS) && HYLAB_CUDA_KERNELS && HYLAB_TORCH_AT_LEAST(2, 0)
#define HYLAB_HAS_CUDA_GRAPHS 1
#else
#define HYLAB_HAS_CUDA_GRAPHS 0
#endif

namespace hylab::compat {

// Turns CUDA autocast to bf16 on (or leaves everything as is when `enabled` is false) for
// the guard's lifetime, and restores the previous state afterwards, like Python's
// `torch.autocast("cuda", dtype=torch.bfloat16)`. Not copyable; nest freely.
class AutocastGuard {
 public:
  explicit AutocastGuard(bool enabled) : active_(enabled) {
    if (!active_) return;
#if HYLAB_TORCH_AT_LEAST(2, 4)
    prev_enabled_ = at::autocast::is_autocast_enabled(at::kCUDA);
    prev_dtype_ = at::autocast::get_autocast_dtype(at::kCUDA);
    at::autocast::set_autocast_enabled(at::kCUDA, true);
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
#else
    prev_enabled_ = at::autocast::is_enabled();
    prev_dtype_ = at::autocast::get_autocast_gpu_dtype();
    at::autocast::set_enabled(true);
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
#endif
    at::autocast::increment_nesting();
  }
  ~AutocastGuard() {
    if (!active_) return;
    // As Python's autocast.__exit__: the cast cache lives as long as the outermost region.
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
#if HYLAB_TORCH_AT_LEAST(2, 4)
    at::autocast::set_autocast_enabled(at::kCUDA, prev_enabled_);
    at::autocast::set_autocast_dtype(at::kCUDA, prev_dtype_);
#else
    at::autocast::set_enabled(prev_enabled_);
    at::autocast::set_autocast_gpu_dtype(prev_dtype_);
#endif
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool active_;
  bool prev_enabled_ = false;
  at::ScalarType prev_dtype_ = at::kBFloat16;
};

// True while CUDA bf16 autocast (AutocastGuard) is on for this thread.
inline bool cuda_autocast_enabled() {
#if HYLAB_TORCH_AT_LEAST(2, 4)
  return at::autocast::is_autocast_enabled(at::kCUDA);
#else
  return at::autocast::is_enabled();
#endif
}

// nanochat's norm(): RMSNorm over the last dim, no learnable weight, eps = machine epsilon
// of the input dtype (what F.rms_norm uses when eps is None). Low-precision inputs are
// normalised in fp32 and returned in their own dtype.
inline double rms_norm_eps(at::ScalarType t) {
  return t == at::kDouble     ? std::numeric_limits<double>::epsilon()
         : t == at::kBFloat16 ? 0.0078125      // 2^-7
         : t == at::kHalf     ? 0.0009765625   // 2^-10
                              : static_cast<double>(std::numeric_limits<float>::epsilon());
}

inline torch::Tensor rms_norm(const torch::Tensor& x) {
  if (x.scalar_type() == at::kDouble) {
    return x * torch::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) +
                            std::numeric_limits<double>::epsilon());
  }
  const double eps = rms_norm_eps(x.scalar_type());
#if HYLAB_TORCH_AT_LEAST(2, 4)
  // One fused op on CUDA (it computes in fp32 for bf16/fp16 inputs), instead of the six
  // element-wise and reduction kernels below, each of which keeps an fp32 copy for backward.
  return at::rms_norm(x, {x.size(-1)}, c10::nullopt, eps);
#else
  torch::Tensor xf = x.to(at::kFloat);
  return (xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps)).to(x.scalar_type());
#endif
}

// Causal attention of Tq queries against Tk >= Tq keys, where query i sits at absolute
// position q_offset + i and key j at position j (q_offset = Tk - Tq with a KV cache, 0 in
// training). Query i sees keys j <= q_offset + i.
//   q: (B, H, Tq, Dh)   k, v: (B, Hkv, Tk, Dh) with Hkv dividing H   ->   (B, H, Tq, Dh)
// Scale 1/sqrt(Dh). The result has q's dtype.
inline torch::Tensor causal_attention(torch::Tensor q, torch::Tensor k, torch::Tensor v,
                                      int64_t q_offset) {
  const int64_t H = q.size(1), Hkv = k.size(1), Tq = q.size(2), Tk = k.size(2);
  TORCH_CHECK(H % Hkv == 0, "causal_attention: Hkv = ", Hkv, " must divide H = ", H);
  TORCH_CHECK(q_offset >= 0 && q_offset + Tq <= Tk, "causal_attention: q_offset ", q_offset,
              " + Tq ", Tq, " exceeds Tk ", Tk);
  if (Hkv != H) {  // GQA/MQA: each kv head serves H/Hkv consecutive query heads
    k = k.repeat_interleave(H / Hkv, /*dim=*/1);
    v = v.repeat_interleave(H / Hkv, /*dim=*/1);
  }
  // Keep mask: (Tq, Tk), true where key j <= q_offset + i. Not needed when every query sees
  // every key (one decode query) or for the plain causal case (flash path).
  auto keep_mask = [&] {
    auto qi = torch::arange(Tq, torch::dtype(torch::kLong).device(q.device())).unsqueeze(1);
    auto kj = torch::arange(Tk, torch::dtype(torch::kLong).device(q.device())).unsqueeze(0);
    return kj <= qi + q_offset;  // (Tq, Tk) bool
  };
  if (Tq == 1 && q_offset == Tk - 1) {
    // One decode query sees every key: two small matmuls and a softmax (fp32). Not SDPA:
    // its cuDNN backend (LibTorch 2.x on Hopper) builds a new plan for every new key length,
    // which made batch-1 decoding of a Transformer ~10x slower than of a Mamba stack.
    const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(3)));
    const auto acc = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    auto scores = torch::matmul(q, k.transpose(-2, -1)).to(acc) * scale;  // (B,H,1,Tk)
    auto att = torch::softmax(scores, -1).to(v.scalar_type());
    return torch::matmul(att, v).to(q.scalar_type());  // (B,H,1,Dh)
  }
#if HYLAB_TORCH_AT_LEAST(2, 0)
  if (q_offset == 0 && Tq == Tk) {
    return at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true);
  }
  return at::scaled_dot_product_attention(q, k, v, keep_mask(), 0.0, /*is_causal=*/false);
#else
  // Exact math: scores and softmax in fp32 (fp64 stays fp64).
  const auto acc = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  auto scores = torch::matmul(q.to(acc), k.to(acc).transpose(-2, -1)) * scale;  // (B,H,Tq,Tk)
  scores = scores.masked_fill(keep_mask().logical_not(), -std::numeric_limits<double>::infinity());
  auto att = torch::softmax(scores, -1);
  return torch::matmul(att, v.to(acc)).to(q.scalar_type());  // (B,H,Tq,Dh)
#endif
}

// Calls fn() each time backward has accumulated a gradient into `leaf`.grad() (once per
// backward pass, after every contribution is summed), until the hook is destroyed.
// Python 2.1+ spells this Tensor.register_post_accumulate_grad_hook; LibTorch has no public
// C++ form of it in 1.13, so on every version we do what c10d's DDP reducer does: a post
// hook on the leaf's AccumulateGrad node, which we keep alive (the tensor holds it weakly;
// while we hold it, every graph built from the leaf reuses this node). The node API
// (impl::grad_accumulator, add_post_hook/del_post_hook, LambdaPostHook) is the same in 1.13
// and 2.x; 2.x's FunctionPostHook adds compiled_args, used only by compiled autograd.
class GradAccumulatedHook {
 public:
  GradAccumulatedHook(const torch::Tensor& leaf, std::function<void()> fn)
      : node_(torch::autograd::impl::grad_accumulator(leaf)) {
    TORCH_CHECK(node_ != nullptr, "GradAccumulatedHook: the tensor is not a leaf that requires grad");
    using torch::autograd::variable_list;
    key_ = node_->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [fn = std::move(fn)](const variable_list& outputs, const variable_list&) {
          fn();
          return outputs;
        }));
  }
  ~GradAccumulatedHook() { node_->del_post_hook(key_); }
  GradAccumulatedHook(const GradAccumulatedHook&) = delete;
  GradAccumulatedHook& operator=(const GradAccumulatedHook&) = delete;

 private:
  std::shared_ptr<torch::autograd::Node> node_;
  uintptr_t key_ = 0;
};

}  // namespace hylab::compat
