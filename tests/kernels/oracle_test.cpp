// Checks the fp64 oracles (oracle.h) against LibTorch autograd on CPU, so the GPU tests rest
// on a backward that was derived once by hand and verified once by machine. Runs anywhere.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "model/reference_ops.h"
#include "tests/kernels/oracle.h"
#include "tests/kernels/test_util.h"

namespace hylab::testing {
namespace {

const auto kF64 = torch::TensorOptions().dtype(torch::kFloat64);

// Reference written with tensor ops, one timestep at a time; autograd gives the gradients.
torch::Tensor scan_torch(const torch::Tensor& u, const torch::Tensor& delta,
                         const torch::Tensor& A, const torch::Tensor& Bm,
                         const torch::Tensor& Cm, const torch::Tensor& D,
                         const torch::Tensor& z, const torch::Tensor& bias, bool softplus) {
  torch::Tensor d = delta;
  if (bias.defined()) d = d + bias.view({1, -1, 1});
  if (softplus) d = torch::softplus(d);
  torch::Tensor x = torch::zeros({u.size(0), u.size(1), A.size(1)}, kF64);
  std::vector<torch::Tensor> ys;
  for (int64_t t = 0; t < u.size(2); ++t) {
    const torch::Tensor dt = d.select(2, t).unsqueeze(-1);                 // (B, E, 1)
    x = torch::exp(dt * A) * x +
        dt * Bm.select(2, t).unsqueeze(1) * u.select(2, t).unsqueeze(-1);  // (B, E, N)
    torch::Tensor y = (x * Cm.select(2, t).unsqueeze(1)).sum(-1);         // (B, E)
    if (D.defined()) y = y + D * u.select(2, t);
    ys.push_back(y);
  }
  torch::Tensor y = torch::stack(ys, 2);
  if (z.defined()) y = y * torch::silu(z);
  return y;
}

struct Flags {
  bool z, bias, D, softplus;
};

class OracleScan : public ::testing::TestWithParam<Flags> {};

TEST_P(OracleScan, MatchesAutograd) {
  const Flags f = GetParam();
  torch::manual_seed(7);
  const int B = 2, E = 3, T = 6, N = 4;
  auto leaf = [](torch::Tensor t) { return t.set_requires_grad(true); };
  torch::Tensor u = leaf(torch::randn({B, E, T}, kF64));
  torch::Tensor delta = leaf(torch::randn({B, E, T}, kF64) * 0.5 + (f.softplus ? -0.5 : 1.0));
  torch::Tensor A = leaf(-torch::rand({E, N}, kF64) * 2 - 0.2);
  torch::Tensor Bm = leaf(torch::randn({B, N, T}, kF64));
  torch::Tensor Cm = leaf(torch::randn({B, N, T}, kF64));
  torch::Tensor D = f.D ? leaf(torch::randn({E}, kF64)) : torch::Tensor();
  torch::Tensor z = f.z ? leaf(torch::randn({B, E, T}, kF64)) : torch::Tensor();
  torch::Tensor bias = f.bias ? leaf(torch::randn({E}, kF64) * 0.3) : torch::Tensor();
  torch::Tensor y = scan_torch(u, delta, A, Bm, Cm, D, z, bias, f.softplus);
  torch::Tensor dout = torch::randn_like(y);
  y.backward(dout);

  ScanProblem p;
  p.B = B, p.E = E, p.T = T, p.N = N, p.softplus = f.softplus;
  p.u = to_vec(u), p.delta = to_vec(delta), p.A = to_vec(A), p.Bm = to_vec(Bm);
  p.Cm = to_vec(Cm), p.D = to_vec(D), p.z = to_vec(z), p.bias = to_vec(bias);
  const ScanForward fw = scan_forward(p);
  const ScanGrads g = scan_backward(p, to_vec(dout));
  const Tolerance tol{1e-12, 1e-12, 1e-10};
  EXPECT_TRUE(close("y", y, fw.y, tol));
  EXPECT_TRUE(close("du", u.grad(), g.du, tol));
  EXPECT_TRUE(close("ddelta", delta.grad(), g.ddelta, tol));
  EXPECT_TRUE(close("dA", A.grad(), g.dA, tol));
  EXPECT_TRUE(close("dB", Bm.grad(), g.dB, tol));
  EXPECT_TRUE(close("dC", Cm.grad(), g.dC, tol));
  if (f.D) {
    EXPECT_TRUE(close("dD", D.grad(), g.dD, tol));
  }
  if (f.z) {
    EXPECT_TRUE(close("dz", z.grad(), g.dz, tol));
  }
  if (f.bias) {
    EXPECT_TRUE(close("dbias", bias.grad(), g.dbias, tol));
  }

  // The last state is x_T: check it through y's definition with C = e_n at the last step.
  torch::NoGradGuard ng;
  const int64_t BE = B * E;
  torch::Tensor want_last = torch::empty({B, E, N}, kF64);
  for (int n = 0; n < N; ++n) {
    torch::Tensor C1 = torch::zeros({B, N, T}, kF64);
    C1.select(1, n).fill_(1.0);
    torch::Tensor yn = scan_torch(u, delta, A, Bm, C1, torch::Tensor(), torch::Tensor(), bias,
                                  f.softplus);
    want_last.select(2, n).copy_(yn.select(2, T - 1));
  }
  EXPECT_EQ(static_cast<int64_t>(fw.last_state.size()), BE * N);
  EXPECT_TRUE(close("last_state", want_last, fw.last_state, tol));
}

INSTANTIATE_TEST_SUITE_P(Flags, OracleScan,
                         ::testing::Values(Flags{true, true, true, true},
                                           Flags{false, false, true, true},
                                           Flags{true, false, false, false},
                                           Flags{false, true, true, false}));

class OracleConv : public ::testing::TestWithParam<std::tuple<int, bool, bool>> {};

TEST_P(OracleConv, MatchesAutograd) {
  const auto [K, silu, has_bias] = GetParam();
  torch::manual_seed(11);
  const int B = 2, E = 3, T = 9;
  torch::Tensor x = torch::randn({B, E, T}, kF64).set_requires_grad(true);
  torch::Tensor w = torch::randn({E, K}, kF64).set_requires_grad(true);
  torch::Tensor b = has_bias ? torch::randn({E}, kF64).set_requires_grad(true) : torch::Tensor();
  torch::Tensor out = torch::conv1d(x, w.unsqueeze(1), b, /*stride=*/1, /*padding=*/K - 1,
                                    /*dilation=*/1, /*groups=*/E)
                          .narrow(2, 0, T);
  if (silu) out = torch::silu(out);
  torch::Tensor dout = torch::randn_like(out);
  out.backward(dout);

  ConvProblem p;
  p.B = B, p.E = E, p.T = T, p.K = K, p.silu = silu;
  p.x = to_vec(x), p.weight = to_vec(w), p.bias = to_vec(b);
  const Tolerance tol{1e-12, 1e-12, 1e-10};
  EXPECT_TRUE(close("out", out, conv_forward(p), tol));
  const ConvGrads g = conv_backward(p, to_vec(dout));
  EXPECT_TRUE(close("dx", x.grad(), g.dx, tol));
  EXPECT_TRUE(close("dweight", w.grad(), g.dweight, tol));
  if (has_bias) {
    EXPECT_TRUE(close("dbias", b.grad(), g.dbias, tol));
  }
}

INSTANTIATE_TEST_SUITE_P(Widths, OracleConv,
                         ::testing::Combine(::testing::Values(2, 3, 4), ::testing::Bool(),
                                            ::testing::Bool()));

// The model's reference ops (model/reference_ops.h, fp64 in -> fp64 out) agree with the
// oracle, so "matches the oracle" also means "matches hylab::ref".
TEST(OracleVsModelReference, ScanConvAndDecode) {
  torch::manual_seed(3);
  const int B = 2, E = 5, T = 33, N = 8, K = 4;
  ScanProblem p;
  p.B = B, p.E = E, p.T = T, p.N = N, p.softplus = true;
  const torch::Tensor u = torch::randn({B, E, T}, kF64), delta = torch::randn({B, E, T}, kF64) - 1;
  const torch::Tensor A = -torch::rand({E, N}, kF64) * 3, Bm = torch::randn({B, N, T}, kF64);
  const torch::Tensor Cm = torch::randn({B, N, T}, kF64), D = torch::randn({E}, kF64);
  const torch::Tensor z = torch::randn({B, E, T}, kF64), bias = torch::randn({E}, kF64);
  p.u = to_vec(u), p.delta = to_vec(delta), p.A = to_vec(A), p.Bm = to_vec(Bm);
  p.Cm = to_vec(Cm), p.D = to_vec(D), p.z = to_vec(z), p.bias = to_vec(bias);
  const Tolerance tol{1e-12, 1e-12, 1e-10};
  const ScanForward fw = scan_forward(p);
  auto [y, last] = hylab::ref::selective_scan(u, delta, A, Bm, Cm, D, z, bias, true);
  EXPECT_TRUE(close("ref y", y, fw.y, tol));
  EXPECT_TRUE(close("ref last_state", last, fw.last_state, tol));

  // Decode: state-update steps from zero reproduce the scan.
  torch::Tensor state = torch::zeros({B, E, N}, kF64);
  std::vector<torch::Tensor> ys;
  for (int t = 0; t < T; ++t) {
    ys.push_back(hylab::ref::selective_state_update(state, u.select(2, t), delta.select(2, t), A,
                                                    Bm.select(2, t), Cm.select(2, t), D,
                                                    z.select(2, t), bias, true));
  }
  EXPECT_TRUE(close("ref stepped y", torch::stack(ys, 2), fw.y, tol));

  ConvProblem c;
  c.B = B, c.E = E, c.T = T, c.K = K, c.silu = true;
  const torch::Tensor w = torch::randn({E, K}, kF64), cb = torch::randn({E}, kF64);
  c.x = p.u, c.weight = to_vec(w), c.bias = to_vec(cb);
  const Vec want = conv_forward(c);
  EXPECT_TRUE(close("ref conv", hylab::ref::causal_conv1d(u, w, cb, true), want, tol));
  torch::Tensor cs = torch::zeros({B, E, K}, kF64);
  std::vector<torch::Tensor> outs;
  for (int t = 0; t < T; ++t) {
    outs.push_back(hylab::ref::causal_conv1d_update(u.select(2, t), cs, w, cb, true));
  }
  EXPECT_TRUE(close("ref conv stepped", torch::stack(outs, 2), want, tol));
}

}  // namespace
}  // namespace hylab::testing
