// The Mamba mixer (see mamba.h). All primitives go through model/ops.h.
#include "model/mamba.h"

#include <cmath>

#include "common/check.h"
#include "model/ops.h"

namespace hylab {
namespace {

// W (M, K) in x's dtype, broadcast over x's batch: (B, M, K) with batch stride 0.
torch::Tensor batched_weight(const torch::Tensor& W, const torch::Tensor& x) {
  return W.to(x.scalar_type()).unsqueeze(0).expand({x.size(0), -1, -1});
}

}  // namespace

MambaMixerImpl::MambaMixerImpl(const GPTConfig& cfg)
    : E_(cfg.d_inner()),
      N_(cfg.mamba_d_state),
      K_(cfg.mamba_d_conv),
      R_(cfg.mamba_dt_rank),
      dt_min_(cfg.mamba_dt_min),
      dt_max_(cfg.mamba_dt_max),
      dt_init_floor_(cfg.mamba_dt_init_floor) {
  const int64_t C = cfg.n_embd;
  using torch::nn::LinearOptions;
  in_proj = register_module("in_proj", torch::nn::Linear(LinearOptions(C, 2 * E_).bias(false)));
  conv1d_weight = register_parameter("conv1d_weight", torch::empty({E_, K_}));
  conv1d_bias = register_parameter("conv1d_bias", torch::empty({E_}));
  x_proj = register_module("x_proj", torch::nn::Linear(LinearOptions(E_, R_ + 2 * N_).bias(false)));
  dt_proj = register_module("dt_proj", torch::nn::Linear(LinearOptions(R_, E_).bias(true)));
  A_log = register_parameter("A_log", torch::empty({E_, N_}, torch::kFloat));
  D = register_parameter("D", torch::empty({E_}, torch::kFloat));
  out_proj = register_module("out_proj", torch::nn::Linear(LinearOptions(E_, C).bias(false)));
  reset_mamba_parameters();
}

std::vector<torch::Tensor> MambaMixerImpl::own_init_parameters() const {
  return {dt_proj->weight, dt_proj->bias, A_log, D, conv1d_weight, conv1d_bias, out_proj->weight};
}

void MambaMixerImpl::reset_mamba_parameters() {
  torch::NoGradGuard no_grad;
  const double dt_std = 1.0 / std::sqrt(static_cast<double>(R_));
  dt_proj->weight.uniform_(-dt_std, dt_std);
  // dt ~ exp(U(log dt_min, log dt_max)), floored; bias = softplus^-1(dt) = dt + log(-expm1(-dt)).
  auto dt = torch::exp(torch::rand({E_}, torch::kFloat) * (std::log(dt_max_) - std::log(dt_min_)) +
                       std::log(dt_min_))
                .clamp_min(dt_init_floor_);
  auto inv_dt = dt + torch::log(-torch::expm1(-dt));
  dt_proj->bias.copy_(inv_dt);
  // S4D-real: A = -(1..N) for every channel, stored as its log.
  A_log.copy_(torch::log(torch::arange(1, N_ + 1, torch::kFloat)).unsqueeze(0).expand({E_, N_}));
  D.fill_(1.0);
  const double conv_bound = 1.0 / std::sqrt(static_cast<double>(K_));  // fan_in of a depthwise conv
  conv1d_weight.uniform_(-conv_bound, conv_bound);
  conv1d_bias.uniform_(-conv_bound, conv_bound);
  out_proj->weight.zero_();
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> MambaMixerImpl::ssm_inputs(
    const torch::Tensor& x) {
  // Channel-major batched GEMMs (the weights broadcast over B), so dt, Bm and Cm come out
  // with unit stride along T and the kernels take them without layout copies (a Linear on
  // x^T returns (B, T, .) and each of them would become a transposed copy).
  // The weights are cast to x's dtype before the broadcast (what autocast would do anyway),
  // so autocast does not materialise a (B, ., .) copy of them.
  auto x_dbl = torch::bmm(batched_weight(x_proj->weight, x), x);  // (B, R+2N, T)
  auto parts = x_dbl.split_with_sizes({R_, N_, N_}, 1);   // (B,R,T) (B,N,T) (B,N,T)
  auto dt = torch::bmm(batched_weight(dt_proj->weight, parts[0]), parts[0]);  // (B, E, T)
  return {dt, parts[1], parts[2]};  // dt_proj's bias goes to the scan as delta_bias
}

torch::Tensor MambaMixerImpl::forward(const torch::Tensor& x_in) {
  const int64_t B = x_in.size(0), T = x_in.size(1);
  // in_proj as one GEMM with the channels first, as mamba_simple does:
  // (2E, C) @ (C, B*T) -> (2E, B, T); x and z are (B, E, T) views of it with unit stride
  // along T (strides (T, B*T, 1)), which the kernels take as they are. Splitting along the
  // leading dim makes the backward one cat straight into the (2E, B*T) layout mm wants.
  auto xz = torch::mm(in_proj->weight, x_in.reshape({B * T, x_in.size(2)}).t())
                .view({2 * E_, B, T});
  auto xz_parts = xz.split(E_, 0);          // (E, B, T) each
  auto x = xz_parts[0].permute({1, 0, 2});  // (B, E, T)
  auto z = xz_parts[1].permute({1, 0, 2});  // (B, E, T)
  x = ops::causal_conv1d(x, conv1d_weight, conv1d_bias, /*silu=*/true, use_kernels_);
  auto [dt, Bm, Cm] = ssm_inputs(x);
  auto A = -torch::exp(A_log.to(torch::kFloat));  // (E, N) fp32
  auto y = ops::selective_scan(x, dt, A, Bm, Cm, D.to(torch::kFloat), z,
                               dt_proj->bias.to(torch::kFloat), /*delta_softplus=*/true,
                               use_kernels_);  // (B, E, T)
  // out_proj as (C, E) @ y per batch: its backward hands the scan a (B, E, T) gradient with
  // unit stride along T; the one transposed copy left is that of the (B, T, C) output.
  auto out_t = torch::bmm(batched_weight(out_proj->weight, y), y);  // (B, C, T)
  return out_t.transpose(1, 2).contiguous();  // (B, T, C)
}

torch::Tensor MambaMixerImpl::forward_step(const torch::Tensor& x_in, LayerCache& cache,
                                           int64_t pos) {
  torch::NoGradGuard no_grad;
  HYLAB_CHECK(cache.conv_state.defined() && cache.ssm_state.defined(),
              "mamba forward_step: the layer cache has no conv/ssm state (not a Mamba layer?)");
  const int64_t T = x_in.size(1);
  auto A = -torch::exp(A_log.to(torch::kFloat));  // (E, N)
  auto Df = D.to(torch::kFloat);
  auto dt_bias = dt_proj->bias.to(torch::kFloat);

  if (pos == 0 && T > 1) {  // prefill from an empty state: the full ops, then keep the states
    auto xz = in_proj(x_in).transpose(1, 2);  // (B, 2E, T)
    auto x = xz.narrow(1, 0, E_);
    auto z = xz.narrow(1, E_, E_);
    // The conv state is the last K pre-conv inputs, zero-padded on the left when T < K.
    cache.conv_state.copy_(T >= K_ ? x.narrow(2, T - K_, K_)
                                   : torch::constant_pad_nd(x, {K_ - T, 0}));
    x = ops::causal_conv1d(x, conv1d_weight, conv1d_bias, /*silu=*/true, use_kernels_);
    auto [dt, Bm, Cm] = ssm_inputs(x);
    auto [y, last_state] = ops::selective_scan_with_state(x, dt, A, Bm, Cm, Df, z, dt_bias,
                                                          /*delta_softplus=*/true, use_kernels_);
    cache.ssm_state.copy_(last_state);
    return out_proj(y.transpose(1, 2));  // (B, T, C)
  }

  std::vector<torch::Tensor> outs;
  outs.reserve(T);
  for (int64_t t = 0; t < T; ++t) {
    // ops::linear: the small-batch GEMV kernel where it applies (bf16 weights, B <= 8).
    auto xz = ops::linear(x_in.select(1, t), in_proj->weight, use_kernels_);  // (B, 2E)
    auto x = xz.narrow(1, 0, E_);
    auto z = xz.narrow(1, E_, E_);
    // conv update -> x_proj -> dt_proj -> state update (two kernels on CUDA when fused).
    auto y = ops::mamba_decode_core(x, z, cache.conv_state, cache.ssm_state, conv1d_weight,
                                    conv1d_bias, x_proj->weight, dt_proj->weight, dt_bias, A,
                                    Df, fused_eager_, use_kernels_);  // (B, E)
    outs.push_back(ops::linear(y, out_proj->weight, use_kernels_));  // (B, C)
  }
  return torch::stack(outs, 1);  // (B, T, C)
}

void MambaMixerImpl::prepare_decode() {
  torch::NoGradGuard no_grad;
  auto A = -torch::exp(A_log.to(torch::kFloat));  // (E, N)
  if (A_decode_.defined() && A_decode_.sizes() == A.sizes() && A_decode_.device() == A.device()) {
    A_decode_.copy_(A);
  } else {
    A_decode_ = A;
  }
}

torch::Tensor MambaMixerImpl::decode(const torch::Tensor& x_in, LayerCache& cache) {
  torch::NoGradGuard no_grad;
  HYLAB_CHECK(cache.conv_state.defined() && cache.ssm_state.defined(),
              "mamba decode: the layer cache has no conv/ssm state (not a Mamba layer?)");
  HYLAB_CHECK(x_in.dim() == 3 && x_in.size(1) == 1, "mamba decode: x must be (B, 1, C), got {}",
              c10::str(x_in.sizes()));
  const int64_t B = x_in.size(0);
  const auto A = A_decode_.defined() ? A_decode_ : -torch::exp(A_log.to(torch::kFloat));
  // The casts first (no-ops when the parameters are fp32 already): with overlap_launches the
  // fused kernels read dt_bias and D before waiting for the kernel before them, so that
  // kernel must not be the one writing them (kernels/common/launch.cuh).
  const bool overlap = fused_graph_ && overlap_graph_;
  const auto dt_bias = dt_proj->bias.to(torch::kFloat);
  const auto Df = D.to(torch::kFloat);
  auto xz = ops::norm_linear(x_in.reshape({B, x_in.size(2)}), in_proj->weight, use_kernels_,
                             overlap);  // (B, 2E)
  auto x = xz.narrow(1, 0, E_);
  auto z = xz.narrow(1, E_, E_);
  // conv update -> x_proj -> dt_proj -> state update: on CUDA with fused_graph_ two kernels
  // (kernels/decode/mamba_step.h), so the step is 4 launches with in_proj and out_proj.
  auto y = ops::mamba_decode_core(x, z, cache.conv_state, cache.ssm_state, conv1d_weight,
                                  conv1d_bias, x_proj->weight, dt_proj->weight, dt_bias, A, Df,
                                  fused_graph_, use_kernels_, overlap);  // (B, E)
  return ops::linear_add(x_in, y.view({B, 1, E_}), out_proj->weight, use_kernels_,
                         overlap);  // (B, 1, C)
}

}  // namespace hylab
