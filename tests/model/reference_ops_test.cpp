// The reference Mamba ops against independent implementations: a naive fp64 scalar loop for
// the scan, torch's conv1d for the conv, finite differences for the gradients, and the full
// ops for the decode-step ops.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <vector>

#include "model/ops.h"
#include "model/reference_ops.h"

namespace hylab {
namespace {

struct ScanInputs {
  torch::Tensor u, delta, A, Bm, Cm, D, z, delta_bias;
};

// Random inputs in the ranges a Mamba layer sees: A < 0, delta around softplus^-1(0.01..0.1).
ScanInputs make_inputs(int64_t B, int64_t E, int64_t T, int64_t N, torch::Dtype dtype, int seed) {
  torch::manual_seed(seed);
  auto o = torch::TensorOptions().dtype(dtype);
  ScanInputs in;
  in.u = torch::randn({B, E, T}, o);
  in.delta = torch::randn({B, E, T}, o) * 0.5;
  in.A = -torch::exp(torch::randn({E, N}, o) * 0.5);
  in.Bm = torch::randn({B, N, T}, o);
  in.Cm = torch::randn({B, N, T}, o);
  in.D = torch::randn({E}, o);
  in.z = torch::randn({B, E, T}, o);
  in.delta_bias = torch::randn({E}, o) * 0.5 - 2.0;
  return in;
}

double softplus(double x) { return x > 20 ? x : std::log1p(std::exp(x)); }
double silu(double x) { return x / (1 + std::exp(-x)); }

// The recurrence written out with scalar loops in double: the definition, nothing shared
// with the reference implementation. Returns (y (B,E,T), last state (B,E,N)).
std::pair<torch::Tensor, torch::Tensor> naive_scan(const ScanInputs& in, bool use_z, bool use_bias,
                                                   bool softplus_delta) {
  auto d = [](const torch::Tensor& t) { return t.to(torch::kDouble).contiguous(); };
  auto u = d(in.u), delta = d(in.delta), A = d(in.A), Bm = d(in.Bm), Cm = d(in.Cm), D = d(in.D),
       z = d(in.z), bias = d(in.delta_bias);
  const int64_t B = u.size(0), E = u.size(1), T = u.size(2), N = A.size(1);
  auto y = torch::zeros({B, E, T}, torch::kDouble);
  auto last = torch::zeros({B, E, N}, torch::kDouble);
  auto ua = u.accessor<double, 3>(), da = delta.accessor<double, 3>(), za = z.accessor<double, 3>();
  auto Aa = A.accessor<double, 2>();
  auto Ba = Bm.accessor<double, 3>(), Ca = Cm.accessor<double, 3>();
  auto Da = D.accessor<double, 1>(), ba = bias.accessor<double, 1>();
  auto ya = y.accessor<double, 3>(), la = last.accessor<double, 3>();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t e = 0; e < E; ++e) {
      std::vector<double> x(N, 0.0);
      for (int64_t t = 0; t < T; ++t) {
        double dt = da[b][e][t] + (use_bias ? ba[e] : 0.0);
        if (softplus_delta) dt = softplus(dt);
        double out = 0;
        for (int64_t n = 0; n < N; ++n) {
          x[n] = std::exp(dt * Aa[e][n]) * x[n] + dt * Ba[b][n][t] * ua[b][e][t];
          out += x[n] * Ca[b][n][t];
        }
        out += Da[e] * ua[b][e][t];
        if (use_z) out *= silu(za[b][e][t]);
        ya[b][e][t] = out;
      }
      for (int64_t n = 0; n < N; ++n) la[b][e][n] = x[n];
    }
  }
  return {y, last};
}

TEST(ReferenceOps, ScanMatchesNaiveLoop) {
  for (bool use_z : {true, false}) {
    for (bool softplus_delta : {true, false}) {
      auto in = make_inputs(2, 5, 9, 3, torch::kFloat, 1);
      if (!softplus_delta) in.delta = in.delta.abs() * 0.1;  // raw delta must be positive
      auto [y, last] = ref::selective_scan(in.u, in.delta, in.A, in.Bm, in.Cm, in.D,
                                           use_z ? in.z : torch::Tensor(), in.delta_bias,
                                           softplus_delta);
      auto [y_ref, last_ref] = naive_scan(in, use_z, true, softplus_delta);
      EXPECT_EQ(y.scalar_type(), torch::kFloat);
      EXPECT_EQ(last.sizes(), (std::vector<int64_t>{2, 5, 3}));
      EXPECT_TRUE(torch::allclose(y.to(torch::kDouble), y_ref, 1e-5, 1e-5))
          << "max err " << (y.to(torch::kDouble) - y_ref).abs().max().item<double>();
      EXPECT_TRUE(torch::allclose(last.to(torch::kDouble), last_ref, 1e-5, 1e-5));
    }
  }
}

TEST(ReferenceOps, ScanInFp64IsExact) {
  auto in = make_inputs(1, 3, 6, 4, torch::kDouble, 2);
  auto [y, last] = ref::selective_scan(in.u, in.delta, in.A, in.Bm, in.Cm, in.D, in.z,
                                       in.delta_bias, true);
  auto [y_ref, last_ref] = naive_scan(in, true, true, true);
  EXPECT_EQ(y.scalar_type(), torch::kDouble);
  EXPECT_TRUE(torch::allclose(y, y_ref, 1e-12, 1e-12));
  EXPECT_TRUE(torch::allclose(last, last_ref, 1e-12, 1e-12));
}

TEST(ReferenceOps, ScanBf16InputsComputeInFp32) {
  auto in = make_inputs(2, 4, 8, 3, torch::kFloat, 3);
  auto bf = [](const torch::Tensor& t) { return t.to(torch::kBFloat16); };
  // u, delta, Bm, Cm, z in bf16 as under autocast; A, D, bias stay fp32.
  auto [y, last] = ref::selective_scan(bf(in.u), bf(in.delta), in.A, bf(in.Bm), bf(in.Cm), in.D,
                                       bf(in.z), in.delta_bias, true);
  EXPECT_EQ(y.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(last.scalar_type(), torch::kFloat);
  ScanInputs rounded = in;
  rounded.u = bf(in.u).to(torch::kFloat);
  rounded.delta = bf(in.delta).to(torch::kFloat);
  rounded.Bm = bf(in.Bm).to(torch::kFloat);
  rounded.Cm = bf(in.Cm).to(torch::kFloat);
  rounded.z = bf(in.z).to(torch::kFloat);
  auto [y_ref, last_ref] = naive_scan(rounded, true, true, true);
  // Only the output rounding to bf16 (8 bits of mantissa) separates them.
  EXPECT_TRUE(torch::allclose(y.to(torch::kDouble), y_ref, 1e-2, 1e-2));
  EXPECT_TRUE(torch::allclose(last.to(torch::kDouble), last_ref, 1e-5, 1e-5));
}

// Central finite differences of a scalar function of one input tensor, fp64.
torch::Tensor numeric_grad(const std::function<double()>& f, torch::Tensor& x, double eps = 1e-6) {
  auto g = torch::zeros_like(x);
  auto flat = x.view({-1});
  auto gflat = g.view({-1});
  for (int64_t i = 0; i < flat.numel(); ++i) {
    const double orig = flat[i].item<double>();
    flat[i] = orig + eps;
    const double fp = f();
    flat[i] = orig - eps;
    const double fm = f();
    flat[i] = orig;
    gflat[i] = (fp - fm) / (2 * eps);
  }
  return g;
}

TEST(ReferenceOps, ScanGradientsMatchFiniteDifferences) {
  auto in = make_inputs(1, 2, 5, 3, torch::kDouble, 4);
  torch::manual_seed(5);
  auto w = torch::randn({1, 2, 5}, torch::kDouble);  // loss = sum(y * w)
  std::vector<torch::Tensor*> inputs = {&in.u, &in.delta, &in.A, &in.Bm,
                                        &in.Cm, &in.D, &in.z, &in.delta_bias};
  auto loss = [&] {
    auto y = std::get<0>(ref::selective_scan(in.u, in.delta, in.A, in.Bm, in.Cm, in.D, in.z,
                                             in.delta_bias, true));
    return (y * w).sum();
  };
  for (auto* t : inputs) t->set_requires_grad(true);
  loss().backward();
  std::vector<torch::Tensor> analytic;
  for (auto* t : inputs) analytic.push_back(t->grad().clone());
  for (auto* t : inputs) *t = t->detach();
  torch::NoGradGuard no_grad;
  const char* names[] = {"u", "delta", "A", "Bm", "Cm", "D", "z", "delta_bias"};
  for (size_t i = 0; i < inputs.size(); ++i) {
    auto numeric = numeric_grad([&] { return loss().item<double>(); }, *inputs[i]);
    EXPECT_TRUE(torch::allclose(analytic[i], numeric, 1e-6, 1e-7))
        << names[i] << ": max err " << (analytic[i] - numeric).abs().max().item<double>();
    EXPECT_GT(analytic[i].abs().max().item<double>(), 0.0) << names[i] << " has no gradient";
  }
}

TEST(ReferenceOps, ConvMatchesTorchConv1d) {
  for (int64_t K : {2, 3, 4}) {
    torch::manual_seed(K);
    const int64_t B = 2, E = 6, T = 11;
    auto x = torch::randn({B, E, T});
    auto w = torch::randn({E, K});
    auto bias = torch::randn({E});
    auto expected = torch::nn::functional::conv1d(
        x, w.unsqueeze(1),
        torch::nn::functional::Conv1dFuncOptions().bias(bias).padding(K - 1).groups(E));
    expected = expected.narrow(2, 0, T);  // causal: drop the right-hand padding outputs
    EXPECT_TRUE(torch::allclose(ref::causal_conv1d(x, w, bias, false), expected, 1e-5, 1e-6));
    EXPECT_TRUE(torch::allclose(ref::causal_conv1d(x, w, bias, true), torch::silu(expected), 1e-5, 1e-6));
    EXPECT_TRUE(torch::allclose(ref::causal_conv1d(x, w, torch::Tensor(), false),
                                expected - bias.view({1, E, 1}), 1e-5, 1e-6));
  }
}

TEST(ReferenceOps, ConvGradientsMatchFiniteDifferences) {
  torch::manual_seed(6);
  auto x = torch::randn({1, 3, 6}, torch::kDouble);
  auto w = torch::randn({3, 4}, torch::kDouble);
  auto b = torch::randn({3}, torch::kDouble);
  auto g = torch::randn({1, 3, 6}, torch::kDouble);
  auto loss = [&] { return (ref::causal_conv1d(x, w, b, true) * g).sum(); };
  for (auto* t : {&x, &w, &b}) t->set_requires_grad(true);
  loss().backward();
  std::vector<torch::Tensor> analytic = {x.grad().clone(), w.grad().clone(), b.grad().clone()};
  x = x.detach();
  w = w.detach();
  b = b.detach();
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor*> ts = {&x, &w, &b};
  for (size_t i = 0; i < ts.size(); ++i) {
    auto numeric = numeric_grad([&] { return loss().item<double>(); }, *ts[i]);
    EXPECT_TRUE(torch::allclose(analytic[i], numeric, 1e-6, 1e-7)) << "input " << i;
  }
}

TEST(ReferenceOps, ConvUpdateMatchesFullConv) {
  torch::manual_seed(7);
  const int64_t B = 2, E = 5, T = 9, K = 4;
  auto x = torch::randn({B, E, T});
  auto w = torch::randn({E, K});
  auto bias = torch::randn({E});
  auto full = ref::causal_conv1d(x, w, bias, true);
  auto state = torch::zeros({B, E, K});
  for (int64_t t = 0; t < T; ++t) {
    auto out = ref::causal_conv1d_update(x.select(2, t), state, w, bias, true);
    ASSERT_TRUE(torch::allclose(out, full.select(2, t), 1e-5, 1e-6)) << "t=" << t;
  }
  // The state holds the last K inputs, oldest first.
  EXPECT_TRUE(torch::equal(state, x.narrow(2, T - K, K)));
}

TEST(ReferenceOps, StateUpdateMatchesScanAndContinuesFromPrefill) {
  auto in = make_inputs(2, 4, 10, 3, torch::kFloat, 8);
  auto [y_full, last_full] = ref::selective_scan(in.u, in.delta, in.A, in.Bm, in.Cm, in.D, in.z,
                                                 in.delta_bias, true);
  // Prefill the first 6 steps with the scan, decode the remaining 4 one at a time.
  const int64_t T1 = 6;
  auto sub = [&](const torch::Tensor& t) { return t.narrow(2, 0, T1); };
  auto [y1, state] = ops::selective_scan_with_state(sub(in.u), sub(in.delta), in.A, sub(in.Bm),
                                                    sub(in.Cm), in.D, sub(in.z), in.delta_bias, true);
  EXPECT_TRUE(torch::allclose(y1, y_full.narrow(2, 0, T1), 1e-5, 1e-6));
  for (int64_t t = T1; t < 10; ++t) {
    auto y = ref::selective_state_update(state, in.u.select(2, t), in.delta.select(2, t), in.A,
                                         in.Bm.select(2, t), in.Cm.select(2, t), in.D,
                                         in.z.select(2, t), in.delta_bias, true);
    ASSERT_TRUE(torch::allclose(y, y_full.select(2, t), 1e-5, 1e-5)) << "t=" << t;
  }
  EXPECT_TRUE(torch::allclose(state, last_full, 1e-5, 1e-6));
}

TEST(Ops, CpuDispatchIsTheReference) {
  auto in = make_inputs(1, 3, 5, 2, torch::kFloat, 9);
  auto y_ops = ops::selective_scan(in.u, in.delta, in.A, in.Bm, in.Cm, in.D, in.z, in.delta_bias, true);
  auto y_ref = std::get<0>(ref::selective_scan(in.u, in.delta, in.A, in.Bm, in.Cm, in.D, in.z,
                                               in.delta_bias, true));
  EXPECT_TRUE(torch::equal(y_ops, y_ref));
  auto w = torch::randn({3, 4});
  auto b = torch::randn({3});
  EXPECT_TRUE(torch::equal(ops::causal_conv1d(in.u, w, b, true), ref::causal_conv1d(in.u, w, b, true)));
  // The with-state and decode variants run without autograd.
  in.u.set_requires_grad(true);
  auto [y, s] = ops::selective_scan_with_state(in.u, in.delta, in.A, in.Bm, in.Cm, in.D, in.z,
                                               in.delta_bias, true);
  EXPECT_FALSE(y.requires_grad());
}

TEST(ReferenceOps, BadShapesAreNamed) {
  auto in = make_inputs(1, 3, 5, 2, torch::kFloat, 10);
  try {
    ref::selective_scan(in.u, in.delta, in.A.narrow(0, 0, 2), in.Bm, in.Cm, in.D, in.z,
                        in.delta_bias, true);
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("A must be (E=3, N)"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace hylab
