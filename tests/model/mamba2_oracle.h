// Oracles of the Mamba-2 (M2) tests, CPU and GPU: the SSD recurrence and the whole mixer by
// their definitions (model/mamba2.h), one token at a time, in fp64. Differentiable, so the
// tests compare every gradient too.
#pragma once

#include <torch/torch.h>

#include <utility>
#include <vector>

#include "common/run_config.h"
#include "model/mamba2.h"

namespace hylab::testing {

// The SSD recurrence, one step at a time, fp64: S_t = exp(dt_t A) S_{t-1} + dt_t x_t B_t^T,
// y_t = S_t C_t. x (B, T, H, P), dt (B, T, H), A (H), Bm/Cm (B, T, G, N), S0 (B, H, P, N).
inline std::pair<torch::Tensor, torch::Tensor> ssd_recurrence(
    const torch::Tensor& x, const torch::Tensor& dt, const torch::Tensor& A,
    const torch::Tensor& Bm, const torch::Tensor& Cm, torch::Tensor S) {
  const int64_t T = x.size(1), H = x.size(2), G = Bm.size(2);
  std::vector<torch::Tensor> ys;
  for (int64_t t = 0; t < T; ++t) {
    std::vector<torch::Tensor> heads_S, heads_y;
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / (H / G);
      auto dth = dt.select(1, t).select(1, h).view({-1, 1, 1});  // (B, 1, 1)
      auto Sh = S.select(1, h) * torch::exp(dth * A.select(0, h)) +
                dth * x.select(1, t).select(1, h).unsqueeze(-1) *
                    Bm.select(1, t).select(1, g).unsqueeze(1);  // (B, P, N)
      heads_S.push_back(Sh);
      heads_y.push_back(torch::matmul(Sh, Cm.select(1, t).select(1, g).unsqueeze(-1)).squeeze(-1));
    }
    S = torch::stack(heads_S, 1);
    ys.push_back(torch::stack(heads_y, 1));  // (B, H, P)
  }
  return {torch::stack(ys, 1), S};
}

// The whole M2 mixer by its definition (mamba2.h), token by token, in fp64: u (B, T, C).
inline torch::Tensor mamba2_by_definition(Mamba2MixerImpl& m, const GPTConfig& g,
                                          const torch::Tensor& u) {
  // Every operand to the CPU in fp64 (the module may live on CUDA).
  const int64_t B = u.size(0), T = u.size(1), E = g.mamba2_d_inner(), H = g.mamba2_nheads(),
                P = g.mamba2_headdim, G = g.mamba2_ngroups, N = g.mamba2_d_state,
                K = g.mamba2_d_conv, Dc = E + 2 * G * N;
  auto d = [](const torch::Tensor& t) { return t.to(torch::kCPU, torch::kDouble); };
  auto zxbcdt = torch::matmul(d(u), d(m.in_proj->weight).t());  // (B, T, 2E+2GN+H)
  auto z = zxbcdt.narrow(-1, 0, E), xBC = zxbcdt.narrow(-1, E, Dc),
       dt_raw = zxbcdt.narrow(-1, E + Dc, H);
  auto A = -torch::exp(d(m.A_log));
  std::vector<torch::Tensor> xs, dts, Bs, Cs;
  for (int64_t t = 0; t < T; ++t) {
    auto conv = d(m.conv1d_bias).unsqueeze(0).expand({B, Dc});
    for (int64_t k = 0; k < K; ++k) {
      const int64_t s = t - (K - 1) + k;
      if (s >= 0) conv = conv + xBC.select(1, s) * d(m.conv1d_weight).select(1, k);
    }
    conv = torch::silu(conv);
    xs.push_back(conv.narrow(-1, 0, E).reshape({B, H, P}));
    Bs.push_back(conv.narrow(-1, E, G * N).reshape({B, G, N}));
    Cs.push_back(conv.narrow(-1, E + G * N, G * N).reshape({B, G, N}));
    dts.push_back(torch::softplus(dt_raw.select(1, t) + d(m.dt_bias)));
  }
  auto x = torch::stack(xs, 1);
  auto y = ssd_recurrence(x, torch::stack(dts, 1), A, torch::stack(Bs, 1), torch::stack(Cs, 1),
                          torch::zeros({B, H, P, N}, torch::kDouble))
               .first;  // (B, T, H, P)
  y = (y + x * d(m.D).view({H, 1})).reshape({B, T, E});
  auto gated = (y * torch::silu(z)).reshape({B, T, G, E / G});
  auto normed = gated / torch::sqrt(gated.pow(2).mean(-1, true) + 1e-5);
  return torch::matmul(normed.reshape({B, T, E}) * d(m.norm_weight), d(m.out_proj->weight).t());
}

}  // namespace hylab::testing
