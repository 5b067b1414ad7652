// The Mamba-2 mixer and its Mixer row (see mamba2.h and mixer.h).
#include "model/mamba2.h"

#include <cmath>
#include <limits>

#include "common/check.h"
#include "model/compat.h"
#include "model/mixer.h"
#include "model/ops.h"

namespace hylab {
namespace {

// mamba_ssm's Mamba2 defaults, fixed here (the M block's mamba_dt_* keys do not apply).
constexpr double kDtMin = 0.001, kDtMax = 0.1, kDtInitFloor = 1e-4;
constexpr double kALow = 1.0, kAHigh = 16.0;
constexpr double kNormEps = 1e-5;

// fp64 stays fp64 (the fp64 tests); everything else is computed in fp32.
torch::ScalarType acc_dtype(const torch::Tensor& t) {
  return t.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
}

// a_cum (..., S), cumulative sums of log-decays -> (..., S, S): out[i, j] = a_cum[i] - a_cum[j]
// = a[j+1] + ... + a[i] for i >= j (0 on the diagonal), -inf above it, so that exp(out) is the
// decay from step j to step i. Only used within a chunk, where the sums stay small (|a_cum| <=
// Q * max dt*|A|), so the difference loses no digits that matter even in fp32; across chunks
// ssd_chunked runs a recurrence instead.
torch::Tensor segsum_from_cumsum(const torch::Tensor& a_cum) {
  const int64_t S = a_cum.size(-1);
  auto above =
      torch::ones({S, S}, torch::TensorOptions().dtype(torch::kBool).device(a_cum.device()))
          .triu(1);
  return (a_cum.unsqueeze(-1) - a_cum.unsqueeze(-2))
      .masked_fill(above, -std::numeric_limits<double>::infinity());
}

// (B, n, G, Q, X) -> (B, n, H, Q, X): head h reads group h / (H/G).
torch::Tensor to_heads(const torch::Tensor& t, int64_t H) {
  const int64_t G = t.size(2);
  auto sizes = t.sizes().vec();
  auto e = t.unsqueeze(3).expand({sizes[0], sizes[1], G, H / G, sizes[3], sizes[4]});
  return e.reshape({sizes[0], sizes[1], H, sizes[3], sizes[4]});
}

}  // namespace

std::pair<torch::Tensor, torch::Tensor> ssd_chunked(const torch::Tensor& x, const torch::Tensor& dt,
                                                    const torch::Tensor& A, const torch::Tensor& Bm,
                                                    const torch::Tensor& Cm, int64_t Q,
                                                    const torch::Tensor& initial_state) {
  HYLAB_CHECK(x.dim() == 4, "ssd_chunked: x must be (B, T, H, P), got {}", c10::str(x.sizes()));
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), P = x.size(3);
  HYLAB_CHECK(Bm.dim() == 4 && Bm.size(0) == B && Bm.size(1) == T && Cm.sizes() == Bm.sizes() &&
                  H % Bm.size(2) == 0,
              "ssd_chunked: Bm and Cm must be (B={}, T={}, G, N) with G dividing H={}, got {}", B,
              T, H, c10::str(Bm.sizes()));
  HYLAB_CHECK(dt.sizes().equals(x.sizes().slice(0, 3)) && A.dim() == 1 && A.size(0) == H,
              "ssd_chunked: dt must be (B, T, H) and A (H={})", H);
  HYLAB_CHECK(Q >= 1, "ssd_chunked: chunk size {} must be >= 1", Q);
  const int64_t N = Bm.size(3), G = Bm.size(2);
  const int64_t nc = (T + Q - 1) / Q, pad = nc * Q - T;
  const auto acc = acc_dtype(dt);

  // Zero padding at the end: dt = 0 there, so the padded steps neither decay nor add.
  auto a = dt.to(acc) * A.to(acc);        // (B, T, H) log-decay per step
  auto X = x * dt.to(acc).unsqueeze(-1);  // (B, T, H, P) input scaled by dt
  a = torch::constant_pad_nd(a, {0, 0, 0, pad});
  X = torch::constant_pad_nd(X, {0, 0, 0, 0, 0, pad});
  // B and C in X's dtype, so that mixed inputs (bf16 x, B, C with an fp32 dt) multiply without
  // autocast too; under autocast the products run in bf16 regardless.
  auto Bp = torch::constant_pad_nd(Bm.to(X.scalar_type()), {0, 0, 0, 0, 0, pad});
  auto Cp = torch::constant_pad_nd(Cm.to(X.scalar_type()), {0, 0, 0, 0, 0, pad});

  auto Xc = X.reshape({B, nc, Q, H, P}).permute({0, 1, 3, 2, 4});          // (B, nc, H, Q, P)
  auto a_cum = a.reshape({B, nc, Q, H}).permute({0, 1, 3, 2}).cumsum(-1);  // (B, nc, H, Q)
  auto Bc = Bp.reshape({B, nc, Q, G, N}).permute({0, 1, 3, 2, 4});         // (B, nc, G, Q, N)
  auto Cc = Cp.reshape({B, nc, Q, G, N}).permute({0, 1, 3, 2, 4});         // (B, nc, G, Q, N)

  // 1. Within each chunk: y = (C B^T o L) X, L[i, j] = decay from j to i (causal mask).
  auto CB = torch::matmul(Cc, Bc.transpose(-1, -2));  // (B, nc, G, Q, Q)
  auto L = torch::exp(segsum_from_cumsum(a_cum));     // (B, nc, H, Q, Q)
  auto M = (CB.unsqueeze(3) * L.reshape({B, nc, G, H / G, Q, Q})).reshape({B, nc, H, Q, Q});
  auto y = torch::matmul(M, Xc);  // (B, nc, H, Q, P)

  // 2. Each chunk's own contribution to the state at its end: sum_s decay(s->end) X_s B_s^T.
  auto decay_to_end = torch::exp(a_cum.narrow(-1, Q - 1, 1) - a_cum);   // (B, nc, H, Q)
  auto Xd = Xc * decay_to_end.unsqueeze(-1);                            // (B, nc, H, Q, P)
  auto Bh = to_heads(Bc, H);                                            // (B, nc, H, Q, N)
  auto chunk_states = torch::matmul(Xd.transpose(-1, -2), Bh).to(acc);  // (B, nc, H, P, N)

  // 3. Across chunks, in fp32: the state entering chunk c, S_in[c] = decay(c-1) S_in[c-1] +
  //    chunk_states[c-1]. nc elementwise steps (a (nc x nc) product would put it in bf16).
  auto chunk_decay = torch::exp(a_cum.select(-1, Q - 1));  // (B, nc, H)
  torch::Tensor S = initial_state.defined() ? initial_state.to(acc)
                                            : torch::zeros({B, H, P, N}, x.options().dtype(acc));
  std::vector<torch::Tensor> states_in;
  states_in.reserve(nc);
  for (int64_t c = 0; c < nc; ++c) {
    states_in.push_back(S);
    S = S * chunk_decay.select(1, c).unsqueeze(-1).unsqueeze(-1) + chunk_states.select(1, c);
  }
  auto S_in = torch::stack(states_in, 1);  // (B, nc, H, P, N)

  // 4. The entering state's contribution: y_off[i] = decay(start->i) C_i S_in^T.
  auto Ch = to_heads(Cc, H);                                // (B, nc, H, Q, N)
  auto decay_from_start = torch::exp(a_cum).unsqueeze(-1);  // (B, nc, H, Q, 1)
  auto y_off = torch::matmul(Ch, S_in.to(Ch.scalar_type()).transpose(-1, -2)) * decay_from_start;

  auto out = (y + y_off).permute({0, 1, 3, 2, 4}).reshape({B, nc * Q, H, P}).narrow(1, 0, T);
  return {out, S};
}

Mamba2MixerImpl::Mamba2MixerImpl(const GPTConfig& cfg)
    : E_(cfg.mamba2_d_inner()),
      H_(cfg.mamba2_nheads()),
      P_(cfg.mamba2_headdim),
      G_(cfg.mamba2_ngroups),
      N_(cfg.mamba2_d_state),
      K_(cfg.mamba2_d_conv),
      Q_(cfg.mamba2_chunk_size) {
  HYLAB_CHECK(H_ * P_ == E_ && H_ % G_ == 0,
              "Mamba2: mamba2_headdim {} must divide E = {} and mamba2_ngroups {} the {} heads "
              "(resolve the config first)",
              P_, E_, G_, H_);
  const int64_t C = cfg.n_embd, conv_dim = E_ + 2 * G_ * N_;
  using torch::nn::LinearOptions;
  in_proj = register_module(
      "in_proj", torch::nn::Linear(LinearOptions(C, 2 * E_ + 2 * G_ * N_ + H_).bias(false)));
  conv1d_weight = register_parameter("conv1d_weight", torch::empty({conv_dim, K_}));
  conv1d_bias = register_parameter("conv1d_bias", torch::empty({conv_dim}));
  dt_bias = register_parameter("dt_bias", torch::empty({H_}, torch::kFloat));
  A_log = register_parameter("A_log", torch::empty({H_}, torch::kFloat));
  D = register_parameter("D", torch::empty({H_}, torch::kFloat));
  norm_weight = register_parameter("norm_weight", torch::empty({E_}));
  out_proj = register_module("out_proj", torch::nn::Linear(LinearOptions(E_, C).bias(false)));
  reset_mamba2_parameters();
}

std::vector<torch::Tensor> Mamba2MixerImpl::own_init_parameters() const {
  return {dt_bias, A_log, D, conv1d_weight, conv1d_bias, norm_weight, out_proj->weight};
}

std::vector<torch::Tensor> Mamba2MixerImpl::scalar_parameters() const {
  return {dt_bias, A_log, D, conv1d_weight, conv1d_bias, norm_weight};
}

void Mamba2MixerImpl::reset_mamba2_parameters() {
  torch::NoGradGuard no_grad;
  // dt ~ exp(U(log dt_min, log dt_max)), floored; bias = softplus^-1(dt) = dt + log(-expm1(-dt)).
  auto dt = torch::exp(torch::rand({H_}, torch::kFloat) * (std::log(kDtMax) - std::log(kDtMin)) +
                       std::log(kDtMin))
                .clamp_min(kDtInitFloor);
  dt_bias.copy_(dt + torch::log(-torch::expm1(-dt)));
  A_log.copy_(torch::log(torch::empty({H_}, torch::kFloat).uniform_(kALow, kAHigh)));
  D.fill_(1.0);
  const double conv_bound = 1.0 / std::sqrt(static_cast<double>(K_));  // a depthwise conv's fan-in
  conv1d_weight.uniform_(-conv_bound, conv_bound);
  conv1d_bias.uniform_(-conv_bound, conv_bound);
  norm_weight.fill_(1.0);
  out_proj->weight.zero_();
}

torch::Tensor Mamba2MixerImpl::gated_norm(const torch::Tensor& y, const torch::Tensor& z) const {
  const auto acc = acc_dtype(y);
  auto g = y.to(acc) * torch::silu(z.to(acc));  // (..., E)
  auto sizes = g.sizes().vec();
  auto grouped = g.reshape({-1, G_, E_ / G_});  // (rows, G, E/G)
  auto normed = grouped * torch::rsqrt(grouped.pow(2).mean(-1, /*keepdim=*/true) + kNormEps);
  return normed.reshape(sizes) * norm_weight.to(acc);
}

torch::Tensor Mamba2MixerImpl::forward(const torch::Tensor& u) {
  const int64_t B = u.size(0), T = u.size(1), GN = G_ * N_;
  auto zxbcdt = in_proj(u);                                       // (B, T, 2E+2GN+H)
  auto z = zxbcdt.narrow(-1, 0, E_);                              // (B, T, E)
  auto xBC = zxbcdt.narrow(-1, E_, E_ + 2 * GN).transpose(1, 2);  // (B, E+2GN, T)
  auto dt_raw = zxbcdt.narrow(-1, 2 * E_ + 2 * GN, H_);           // (B, T, H)
  xBC = ops::causal_conv1d(xBC, conv1d_weight, conv1d_bias, /*silu=*/true, use_kernels_)
            .transpose(1, 2);                                // (B, T, E+2GN)
  auto x = xBC.narrow(-1, 0, E_).reshape({B, T, H_, P_});    // (B, T, H, P)
  auto Bm = xBC.narrow(-1, E_, GN).reshape({B, T, G_, N_});  // (B, T, G, N)
  auto Cm = xBC.narrow(-1, E_ + GN, GN).reshape({B, T, G_, N_});
  const auto acc = acc_dtype(x);
  auto dt = torch::softplus(dt_raw.to(acc) + dt_bias.to(acc));  // (B, T, H)
  auto A = -torch::exp(A_log.to(acc));                          // (H)
  auto y = ssd_chunked(x, dt, A, Bm, Cm, Q_).first;             // (B, T, H, P)
  y = y + x.to(y.scalar_type()) * D.to(acc).unsqueeze(-1);
  y = gated_norm(y.reshape({B, T, E_}), z);  // (B, T, E)
  return out_proj(y.to(u.scalar_type()));    // (B, T, C)
}

torch::Tensor Mamba2MixerImpl::forward_step(const torch::Tensor& u, LayerCache& cache) {
  torch::NoGradGuard no_grad;
  HYLAB_CHECK(cache.conv_state.defined() && cache.ssm_state.defined() && cache.ssm_state.dim() == 4,
              "mamba2 forward_step: the layer cache has no M2 conv/ssm state");
  const int64_t B = u.size(0), T = u.size(1), GN = G_ * N_;
  if (T == 1) return step(u.select(1, 0), cache, use_kernels_).unsqueeze(1);
  auto zxbcdt = in_proj(u);
  auto z = zxbcdt.narrow(-1, 0, E_);
  auto xBC = zxbcdt.narrow(-1, E_, E_ + 2 * GN).transpose(1, 2);  // (B, E+2GN, T)
  auto dt_raw = zxbcdt.narrow(-1, 2 * E_ + 2 * GN, H_);
  // The conv continues from the last K-1 inputs of the cache (zeros for a new sequence).
  auto ext = torch::cat({cache.conv_state.narrow(2, 1, K_ - 1).to(xBC.scalar_type()), xBC}, 2);
  cache.conv_state.copy_(ext.narrow(2, ext.size(2) - K_, K_));
  xBC = ops::causal_conv1d(ext, conv1d_weight, conv1d_bias, /*silu=*/true, use_kernels_)
            .narrow(2, K_ - 1, T)
            .transpose(1, 2);  // (B, T, E+2GN)
  auto x = xBC.narrow(-1, 0, E_).reshape({B, T, H_, P_});
  auto Bm = xBC.narrow(-1, E_, GN).reshape({B, T, G_, N_});
  auto Cm = xBC.narrow(-1, E_ + GN, GN).reshape({B, T, G_, N_});
  const auto acc = acc_dtype(cache.ssm_state);
  auto dt = torch::softplus(dt_raw.to(acc) + dt_bias.to(acc));
  auto A = -torch::exp(A_log.to(acc));
  auto [y, last] = ssd_chunked(x, dt, A, Bm, Cm, Q_, cache.ssm_state);
  cache.ssm_state.copy_(last);
  y = y + x.to(y.scalar_type()) * D.to(acc).unsqueeze(-1);
  y = gated_norm(y.reshape({B, T, E_}), z);
  return out_proj(y.to(u.scalar_type()));
}

torch::Tensor Mamba2MixerImpl::step(const torch::Tensor& u, LayerCache& cache, bool use_kernels) {
  torch::NoGradGuard no_grad;
  const int64_t B = u.size(0), GN = G_ * N_, R = H_ / G_;
  auto zxbcdt = ops::linear(u, in_proj->weight, use_kernels);  // (B, 2E+2GN+H)
  auto z = zxbcdt.narrow(-1, 0, E_);
  auto xBC = ops::causal_conv1d_update(zxbcdt.narrow(-1, E_, E_ + 2 * GN), cache.conv_state,
                                       conv1d_weight, conv1d_bias, /*silu=*/true,
                                       use_kernels);  // (B, E+2GN)
  auto dt_raw = zxbcdt.narrow(-1, 2 * E_ + 2 * GN, H_);
  torch::Tensor& S = cache.ssm_state;  // (B, H, P, N)
  const auto acc = S.scalar_type();
  auto x = xBC.narrow(-1, 0, E_).to(acc).reshape({B, H_, P_});
  // (B, G, N) -> (B, H, N): head h reads group h / R.
  auto Bh = xBC.narrow(-1, E_, GN)
                .to(acc)
                .reshape({B, G_, 1, N_})
                .expand({B, G_, R, N_})
                .reshape({B, H_, N_});
  auto Ch = xBC.narrow(-1, E_ + GN, GN)
                .to(acc)
                .reshape({B, G_, 1, N_})
                .expand({B, G_, R, N_})
                .reshape({B, H_, N_});
  auto dt = torch::softplus(dt_raw.to(acc) + dt_bias.to(acc));  // (B, H)
  auto decay = torch::exp(dt * -torch::exp(A_log.to(acc)));     // (B, H)
  S.mul_(decay.unsqueeze(-1).unsqueeze(-1))
      .add_((dt.unsqueeze(-1) * x).unsqueeze(-1) * Bh.unsqueeze(2));  // (B, H, P, N)
  auto y =
      torch::matmul(S, Ch.unsqueeze(-1)).squeeze(-1) + x * D.to(acc).unsqueeze(-1);  // (B, H, P)
  y = gated_norm(y.reshape({B, E_}), z);
  return ops::linear(y.to(u.scalar_type()), out_proj->weight, use_kernels);  // (B, C)
}

LayerCache Mamba2MixerImpl::make_cache(int64_t batch, torch::Device device,
                                       torch::Dtype dtype) const {
  LayerCache c;
  auto opts = torch::TensorOptions().device(device).dtype(dtype);
  const auto state_dtype = dtype == torch::kDouble ? torch::kDouble : torch::kFloat;
  c.conv_state = torch::zeros({batch, E_ + 2 * G_ * N_, K_}, opts);          // (B, E+2GN, K)
  c.ssm_state = torch::zeros({batch, H_, P_, N_}, opts.dtype(state_dtype));  // (B, H, P, N)
  return c;
}

namespace {

// M2's row of the mixer table.
class Mamba2MixerAdapter final : public Mixer {
 public:
  explicit Mamba2MixerAdapter(const GPTConfig& cfg) : m_(cfg) {}

  std::shared_ptr<torch::nn::Module> module() const override { return m_.ptr(); }

  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& /*cos*/,
                        const torch::Tensor& /*sin*/) override {
    return m_(x);
  }
  torch::Tensor forward_step(const torch::Tensor& x, const torch::Tensor& /*cos*/,
                             const torch::Tensor& /*sin*/, LayerCache& cache,
                             int64_t /*pos*/) override {
    return m_->forward_step(x, cache);
  }
  torch::Tensor decode_step(const torch::Tensor& x, const torch::Tensor& /*cos*/,
                            const torch::Tensor& /*sin*/, LayerCache& cache,
                            const torch::Tensor& /*pos*/, bool use_kernels) override {
    // x + mamba2(norm(x)) (B, 1, C)
    return x + m_->step(compat::rms_norm(x).select(1, 0), cache, use_kernels).unsqueeze(1);
  }
  LayerCache make_cache(int64_t batch, int64_t /*max_len*/, torch::Device device,
                        torch::Dtype dtype) const override {
    return m_->make_cache(batch, device, dtype);
  }
  std::vector<torch::Tensor> scalar_parameters() const override { return m_->scalar_parameters(); }
  std::vector<torch::Tensor> own_init_parameters() const override {
    return m_->own_init_parameters();
  }
  void reset_parameters() override { m_->reset_mamba2_parameters(); }
  void set_use_kernels(bool on) override { m_->set_use_kernels(on); }

 private:
  Mamba2Mixer m_;
};

}  // namespace

std::unique_ptr<Mixer> build_mamba2_mixer(const GPTConfig& cfg) {
  return std::make_unique<Mamba2MixerAdapter>(cfg);
}

}  // namespace hylab
