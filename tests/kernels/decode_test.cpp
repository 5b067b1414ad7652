// Decode-step kernels: stepping causal_conv1d_update and selective_state_update token by
// token, after a prefill (selective_scan_with_state + the last K conv inputs), reproduces
// the full-sequence kernels and the fp64 oracle.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <string>

#include "model/cuda_ops.h"
#include "tests/kernels/oracle.h"
#include "tests/kernels/test_util.h"

namespace hylab::testing {
namespace {

using torch::Tensor;

class ConvUpdate : public ::testing::TestWithParam<std::tuple<int, torch::ScalarType, bool>> {};

TEST_P(ConvUpdate, StepsMatchFullConv) {
  HYLAB_REQUIRE_GPU();
  const auto [K, dtype, fp32_state] = GetParam();
  torch::manual_seed(40 + K);
  const int B = 3, E = 50, T = 23;
  const auto act = torch::TensorOptions().device(torch::kCUDA).dtype(dtype);
  const auto f32 = act.dtype(torch::kFloat32);
  const Tensor x = torch::randn({B, E, T}).to(act);
  const Tensor w = (torch::randn({E, K}) * 0.5).to(f32);
  const Tensor b = (torch::randn({E}) * 0.5).to(f32);
  torch::NoGradGuard ng;
  const Tensor full = cuda_ops::causal_conv1d(x, w, b, true);
  Tensor state = torch::zeros({B, E, K}, fp32_state ? f32 : act);
  std::vector<Tensor> outs;
  for (int t = 0; t < T; ++t) outs.push_back(cuda_ops::causal_conv1d_update(x.select(2, t), state, w, b, true));
  const Tensor stepped = torch::stack(outs, 2);
  ConvProblem p;
  p.B = B, p.E = E, p.T = T, p.K = K, p.silu = true;
  p.x = to_vec(x), p.weight = to_vec(w), p.bias = to_vec(b);
  const Tolerance tol = tolerance_for(dtype);
  EXPECT_TRUE(close("stepped vs oracle", stepped, conv_forward(p), tol));
  EXPECT_TRUE(close("stepped vs full kernel", stepped, to_vec(full), tol));
  // The state holds the last K inputs.
  EXPECT_TRUE(torch::equal(state.to(dtype), x.narrow(2, T - K, K)));
}

INSTANTIATE_TEST_SUITE_P(Widths, ConvUpdate,
                         ::testing::Values(std::make_tuple(2, torch::kFloat32, true),
                                           std::make_tuple(3, torch::kFloat32, true),
                                           std::make_tuple(4, torch::kFloat32, true),
                                           std::make_tuple(4, torch::kBFloat16, false),
                                           std::make_tuple(4, torch::kBFloat16, true),
                                           std::make_tuple(3, torch::kBFloat16, false)));

// conv (SiLU) -> selective scan, as in a Mamba block: prefill T0 tokens, decode the rest.
class PrefillDecode
    : public ::testing::TestWithParam<std::tuple<int, int, torch::ScalarType>> {};

TEST_P(PrefillDecode, MatchesFullSequence) {
  HYLAB_REQUIRE_GPU();
  const auto [N, T0, dtype] = GetParam();
  torch::manual_seed(N * 100 + T0);
  const int B = 3, E = 40, T = 45, K = 4;
  const auto act = torch::TensorOptions().device(torch::kCUDA).dtype(dtype);
  const auto f32 = act.dtype(torch::kFloat32);
  const Tensor x = torch::randn({B, E, T}).to(act);
  const Tensor delta = (torch::randn({B, E, T}) * 0.5 - 1.0).to(act);
  const Tensor Bm = torch::randn({B, N, T}).to(act);
  const Tensor Cm = torch::randn({B, N, T}).to(act);
  const Tensor z = torch::randn({B, E, T}).to(act);
  const Tensor w = (torch::randn({E, K}) * 0.5).to(f32);
  const Tensor cb = (torch::randn({E}) * 0.5).to(f32);
  const Tensor A = (-(torch::rand({E, N}) + 0.5) *
                    torch::arange(1, N + 1, torch::kFloat32).view({1, N})).to(f32);
  const Tensor D = torch::randn({E}).to(f32);
  const Tensor bias = (torch::rand({E}) * 3.0 - 3.0).to(f32);
  torch::NoGradGuard ng;

  // Full sequence.
  const Tensor xc = cuda_ops::causal_conv1d(x, w, cb, true);
  const Tensor y_full = cuda_ops::selective_scan(xc, delta, A, Bm, Cm, D, z, bias, true);

  // Prefill [0, T0), then one token at a time.
  auto head = [&](const Tensor& t) { return t.narrow(2, 0, T0); };
  const Tensor xc0 = cuda_ops::causal_conv1d(head(x), w, cb, true);
  auto [y0, ssm_state] = cuda_ops::selective_scan_with_state(
      xc0, head(delta), A, head(Bm), head(Cm), D, head(z), bias, true);
  Tensor conv_state = torch::zeros({B, E, K}, act);
  const int keep = std::min(K, T0);
  conv_state.narrow(2, K - keep, keep).copy_(x.narrow(2, T0 - keep, keep));
  std::vector<Tensor> ys = {y0};
  for (int t = T0; t < T; ++t) {
    const Tensor xt = cuda_ops::causal_conv1d_update(x.select(2, t), conv_state, w, cb, true);
    ys.push_back(cuda_ops::selective_state_update(ssm_state, xt, delta.select(2, t), A,
                                                  Bm.select(2, t), Cm.select(2, t), D,
                                                  z.select(2, t), bias, true)
                     .unsqueeze(2));
  }
  const Tensor y_dec = torch::cat(ys, 2);

  // Oracle on the kernel's conv output (rounded to dtype exactly as the kernels use it).
  ScanProblem p;
  p.B = B, p.E = E, p.T = T, p.N = N, p.softplus = true;
  p.u = to_vec(xc), p.delta = to_vec(delta), p.A = to_vec(A), p.Bm = to_vec(Bm);
  p.Cm = to_vec(Cm), p.D = to_vec(D), p.z = to_vec(z), p.bias = to_vec(bias);
  const ScanForward fw = scan_forward(p);
  const Tolerance tol = tolerance_for(dtype);
  EXPECT_TRUE(close("decode vs oracle", y_dec, fw.y, tol));
  EXPECT_TRUE(close("decode vs full kernel", y_dec, to_vec(y_full), tol));
  EXPECT_TRUE(close("final ssm_state", ssm_state, fw.last_state, Tolerance{1e-3, 1e-3, 1e-2}));
}

INSTANTIATE_TEST_SUITE_P(States, PrefillDecode,
                         ::testing::Combine(::testing::Values(16, 32, 64),
                                            ::testing::Values(1, 2, 30),
                                            ::testing::Values(torch::kFloat32,
                                                              torch::kBFloat16)));

TEST(Decode, ValidatesInputs) {
  HYLAB_REQUIRE_GPU();
  const auto f32 = torch::TensorOptions().device(torch::kCUDA);
  const int B = 2, E = 8, N = 16, K = 4;
  Tensor x = torch::randn({B, E}, f32), dt = torch::randn({B, E}, f32);
  Tensor A = -torch::rand({E, N}, f32), Bm = torch::randn({B, N}, f32), Cm = Bm.clone();
  Tensor state = torch::zeros({B, E, N}, f32);
  auto expect_error = [](auto&& fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "expected an error containing '" << needle << "'";
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  Tensor bf_state = state.to(torch::kBFloat16);
  expect_error([&] {
    cuda_ops::selective_state_update(bf_state, x, dt, A, Bm, Cm, {}, {}, {}, true);
  }, "selective_state_update: ssm_state must be Float");
  Tensor wrong = torch::zeros({B, E, N + 4}, f32);
  expect_error([&] {
    cuda_ops::selective_state_update(wrong, x, dt, A, Bm, Cm, {}, {}, {}, true);
  }, "selective_state_update: ssm_state must have shape [2, 8, 16]");
  Tensor cs = torch::zeros({B, E, K + 1}, f32);
  Tensor w = torch::randn({E, K}, f32);
  expect_error([&] { cuda_ops::causal_conv1d_update(x, cs, w, {}, true); },
               "causal_conv1d_update: conv_state must have shape [2, 8, 4]");
  Tensor cs_t = torch::zeros({B, K, E}, f32).transpose(1, 2);
  expect_error([&] { cuda_ops::causal_conv1d_update(x, cs_t, w, {}, true); },
               "conv_state must be contiguous");
}

}  // namespace
}  // namespace hylab::testing
