// The one dispatch point of the Mamba primitives (see ops.h): our CUDA kernels for CUDA
// tensors when this build has them and the caller allows them, the reference otherwise.
#include "model/ops.h"

#include "model/compat.h"
#include "model/reference_ops.h"
#if HYLAB_CUDA_KERNELS
#include "model/cuda_ops.h"
#endif

namespace hylab::ops {
namespace {

// True when this call should go to hylab::cuda_ops.
[[maybe_unused]] bool use_cuda(const torch::Tensor& t, bool use_kernels) {
#if HYLAB_CUDA_KERNELS
  return use_kernels && t.is_cuda();
#else
  (void)t;
  (void)use_kernels;
  return false;
#endif
}

}  // namespace

bool have_cuda_kernels() {
#if HYLAB_CUDA_KERNELS
  return true;
#else
  return false;
#endif
}

torch::Tensor selective_scan(const torch::Tensor& u, const torch::Tensor& delta,
                             const torch::Tensor& A, const torch::Tensor& Bm,
                             const torch::Tensor& Cm, const torch::Tensor& D,
                             const torch::Tensor& z, const torch::Tensor& delta_bias,
                             bool delta_softplus, bool use_kernels) {
#if HYLAB_CUDA_KERNELS
  if (use_cuda(u, use_kernels)) {
    return cuda_ops::selective_scan(u, delta, A, Bm, Cm, D, z, delta_bias, delta_softplus);
  }
#endif
  return std::get<0>(ref::selective_scan(u, delta, A, Bm, Cm, D, z, delta_bias, delta_softplus));
}

std::tuple<torch::Tensor, torch::Tensor> selective_scan_with_state(
    const torch::Tensor& u, const torch::Tensor& delta, const torch::Tensor& A,
    const torch::Tensor& Bm, const torch::Tensor& Cm, const torch::Tensor& D,
    const torch::Tensor& z, const torch::Tensor& delta_bias, bool delta_softplus,
    bool use_kernels) {
  torch::NoGradGuard no_grad;
#if HYLAB_CUDA_KERNELS
  if (use_cuda(u, use_kernels)) {
    return cuda_ops::selective_scan_with_state(u, delta, A, Bm, Cm, D, z, delta_bias,
                                               delta_softplus);
  }
#endif
  return ref::selective_scan(u, delta, A, Bm, Cm, D, z, delta_bias, delta_softplus);
}

torch::Tensor causal_conv1d(const torch::Tensor& x, const torch::Tensor& weight,
                            const torch::Tensor& bias, bool silu, bool use_kernels) {
#if HYLAB_CUDA_KERNELS
  if (use_cuda(x, use_kernels)) return cuda_ops::causal_conv1d(x, weight, bias, silu);
#endif
  return ref::causal_conv1d(x, weight, bias, silu);
}

torch::Tensor causal_conv1d_update(const torch::Tensor& x, torch::Tensor& conv_state,
                                   const torch::Tensor& weight, const torch::Tensor& bias,
                                   bool silu, bool use_kernels) {
  torch::NoGradGuard no_grad;
#if HYLAB_CUDA_KERNELS
  if (use_cuda(x, use_kernels)) {
    return cuda_ops::causal_conv1d_update(x, conv_state, weight, bias, silu);
  }
#endif
  return ref::causal_conv1d_update(x, conv_state, weight, bias, silu);
}

torch::Tensor selective_state_update(torch::Tensor& ssm_state, const torch::Tensor& x,
                                     const torch::Tensor& dt, const torch::Tensor& A,
                                     const torch::Tensor& Bm, const torch::Tensor& Cm,
                                     const torch::Tensor& D, const torch::Tensor& z,
                                     const torch::Tensor& dt_bias, bool dt_softplus,
                                     bool use_kernels) {
  torch::NoGradGuard no_grad;
#if HYLAB_CUDA_KERNELS
  if (use_cuda(x, use_kernels)) {
    return cuda_ops::selective_state_update(ssm_state, x, dt, A, Bm, Cm, D, z, dt_bias,
                                            dt_softplus);
  }
#endif
  return ref::selective_state_update(ssm_state, x, dt, A, Bm, Cm, D, z, dt_bias, dt_softplus);
}

torch::Tensor mamba_decode_core(const torch::Tensor& x, const torch::Tensor& z,
                                torch::Tensor& conv_state, torch::Tensor& ssm_state,
                                const torch::Tensor& conv_weight, const torch::Tensor& conv_bias,
                                const torch::Tensor& x_proj_weight,
                                const torch::Tensor& dt_proj_weight, const torch::Tensor& dt_bias,
                                const torch::Tensor& A, const torch::Tensor& D, bool fused,
                                bool use_kernels, bool overlap_launches) {
  torch::NoGradGuard no_grad;
  const int64_t N = A.size(1), R = dt_proj_weight.size(1);
#if HYLAB_CUDA_KERNELS
  if (fused && use_cuda(x, use_kernels) &&
      cuda_ops::mamba_decode_core_supports(x, N, conv_weight.size(1), R)) {
    return cuda_ops::mamba_decode_core(x, z, conv_state, ssm_state, conv_weight, conv_bias,
                                       x_proj_weight, dt_proj_weight, dt_bias, A, D,
                                       overlap_launches);
  }
#else
  (void)fused;
  (void)overlap_launches;
#endif
  auto xc = causal_conv1d_update(x, conv_state, conv_weight, conv_bias, /*silu=*/true,
                                 use_kernels);  // (B, E)
  auto parts = linear(xc, x_proj_weight, use_kernels).split_with_sizes({R, N, N}, -1);
  auto dt = linear(parts[0], dt_proj_weight, use_kernels);  // (B, E)
  return selective_state_update(ssm_state, xc, dt, A, parts[1], parts[2], D, z, dt_bias,
                                /*dt_softplus=*/true, use_kernels);  // (B, E)
}

torch::Tensor softcap_cross_entropy(const torch::Tensor& logits, const torch::Tensor& targets,
                                    int64_t vocab, double softcap, bool use_kernels) {
#if HYLAB_CUDA_KERNELS
  if (use_cuda(logits, use_kernels)) {
    return cuda_ops::softcap_cross_entropy(logits, targets, vocab, softcap);
  }
#endif
  return ref::softcap_cross_entropy(logits, targets, vocab, softcap);
}

torch::Tensor decode_attention(const torch::Tensor& q, const torch::Tensor& k_cache,
                               const torch::Tensor& v_cache, const torch::Tensor& pos,
                               bool use_kernels) {
#if HYLAB_CUDA_KERNELS
  if (use_cuda(q, use_kernels) && cuda_ops::decode_attention_supports(q.size(-1)) &&
      k_cache.scalar_type() == q.scalar_type() && k_cache.stride(-1) == 1) {
    return cuda_ops::decode_attention(q, k_cache, v_cache, pos);
  }
#endif
  return ref::decode_attention(q, k_cache, v_cache, pos);
}

#if HYLAB_CUDA_KERNELS
namespace {
// Measured on an H200 (docs/BENCHMARKS.md): the GEMV beats cuBLAS at 1 row, cuBLAS wins
// at 8 (the kernel reloads x per weight chunk); the kernel takes up to 2.
bool gemv_path(const torch::Tensor& x, const torch::Tensor& weight, bool use_kernels) {
  constexpr int64_t kMaxGemvRows = 2;
  return use_cuda(x, use_kernels) && x.size(-1) > 0 && x.numel() / x.size(-1) <= kMaxGemvRows &&
         cuda_ops::gemv_supports(x, weight);
}
}  // namespace
#endif

torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& weight, bool use_kernels) {
#if HYLAB_CUDA_KERNELS
  if (gemv_path(x, weight, use_kernels)) return cuda_ops::gemv(x, weight);
#endif
  return torch::linear(x, weight);
}

torch::Tensor norm_linear(const torch::Tensor& x, const torch::Tensor& weight, bool use_kernels,
                          bool overlap_launches) {
#if HYLAB_CUDA_KERNELS
  if (gemv_path(x, weight, use_kernels)) {
    cuda_ops::GemvFusion f;
    f.norm_eps = compat::rms_norm_eps(x.scalar_type());
    f.overlap_launches = overlap_launches;
    return cuda_ops::gemv(x, weight, f);
  }
#else
  (void)overlap_launches;
#endif
  return linear(compat::rms_norm(x), weight, use_kernels);
}

torch::Tensor norm_mlp_fc(const torch::Tensor& x, const torch::Tensor& weight, bool use_kernels) {
#if HYLAB_CUDA_KERNELS
  if (gemv_path(x, weight, use_kernels)) {
    cuda_ops::GemvFusion f;
    f.norm_eps = compat::rms_norm_eps(x.scalar_type());
    f.relu2 = true;
    return cuda_ops::gemv(x, weight, f);
  }
#endif
  // h * h, not square(): autocast runs pow in fp32 (a cast kernel each way); the bf16 product
  // rounds the same as the fp32 square cast to bf16.
  auto h = torch::relu(linear(compat::rms_norm(x), weight, use_kernels));
  return h * h;
}

torch::Tensor linear_add(const torch::Tensor& residual, const torch::Tensor& x,
                         const torch::Tensor& weight, bool use_kernels, bool overlap_launches) {
#if HYLAB_CUDA_KERNELS
  if (gemv_path(x, weight, use_kernels) && residual.scalar_type() == torch::kBFloat16 &&
      residual.device() == x.device()) {
    cuda_ops::GemvFusion f;
    f.residual = residual;
    f.overlap_launches = overlap_launches;
    return cuda_ops::gemv(x, weight, f).view(residual.sizes());
  }
#else
  (void)overlap_launches;
#endif
  return residual + linear(x, weight, use_kernels);
}

torch::Tensor decode_rope_append(const torch::Tensor& qkv, const torch::Tensor& cos_full,
                                 const torch::Tensor& sin_full, const torch::Tensor& pos,
                                 torch::Tensor& k_cache, torch::Tensor& v_cache, int64_t heads,
                                 bool use_kernels) {
#if HYLAB_CUDA_KERNELS
  if (use_cuda(qkv, use_kernels) && k_cache.scalar_type() == qkv.scalar_type() &&
      qkv.is_contiguous() && (qkv.scalar_type() == torch::kBFloat16 || qkv.scalar_type() == torch::kFloat)) {
    return cuda_ops::rope_append(qkv, cos_full.contiguous(), sin_full.contiguous(), pos, k_cache,
                                 v_cache, heads, compat::rms_norm_eps(qkv.scalar_type()));
  }
#endif
  return ref::decode_rope_append(qkv, cos_full, sin_full, pos, k_cache, v_cache, heads);
}

bool fused_block_supports(const torch::Tensor& x, bool use_kernels) {
  return use_cuda(x, use_kernels) &&
         (x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kBFloat16);
}

std::tuple<torch::Tensor, torch::Tensor> add_rms_norm(const torch::Tensor& x,
                                                      const torch::Tensor& branch,
                                                      bool use_kernels) {
#if HYLAB_CUDA_KERNELS
  if (fused_block_supports(x, use_kernels) && branch.scalar_type() == x.scalar_type() &&
      branch.device() == x.device()) {
    return cuda_ops::add_rms_norm(x, branch, compat::rms_norm_eps(x.scalar_type()));
  }
#endif
  return ref::add_rms_norm(x, branch);
}

torch::Tensor rms_norm(const torch::Tensor& x, bool use_kernels) {
#if HYLAB_CUDA_KERNELS
  if (fused_block_supports(x, use_kernels)) {
    return cuda_ops::rms_norm(x, compat::rms_norm_eps(x.scalar_type()));
  }
#endif
  return compat::rms_norm(x);
}

torch::Tensor rope_qk_norm(const torch::Tensor& x, const torch::Tensor& cos,
                           const torch::Tensor& sin, bool use_kernels) {
#if HYLAB_CUDA_KERNELS
  if (fused_block_supports(x, use_kernels) && x.dim() == 4 && x.size(3) % 2 == 0 &&
      x.size(3) <= 256) {
    return cuda_ops::rope_qk_norm(x, cos.to(torch::kFloat), sin.to(torch::kFloat),
                                  compat::rms_norm_eps(x.scalar_type()));
  }
#endif
  return ref::rope_qk_norm(x, cos, sin);
}

torch::Tensor relu_square(const torch::Tensor& u, bool use_kernels) {
#if HYLAB_CUDA_KERNELS
  if (fused_block_supports(u, use_kernels)) return cuda_ops::relu_square(u);
#endif
  return ref::relu_square(u);
}

}  // namespace hylab::ops
