// Causal conv1d kernels (model/cuda_ops.h) against the fp64 oracle: forward, dx, dweight,
// dbias for K in {2, 3, 4}, with/without SiLU and bias, fp32/bf16, strided input, weight in
// x's dtype, determinism and validation.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>

#include "model/cuda_ops.h"
#include "tests/kernels/oracle.h"
#include "tests/kernels/test_util.h"

namespace hylab::testing {
namespace {

using torch::Tensor;

struct Case {
  int B, E, T, K;
  bool silu, bias;
  torch::ScalarType dtype;
  bool strided = false;          // x is half of a (B, 2E, T) tensor
  bool weight_in_dtype = false;  // weight/bias in x's dtype instead of fp32
};

std::string name(const Case& c) {
  return "B" + std::to_string(c.B) + "_E" + std::to_string(c.E) + "_T" + std::to_string(c.T) +
         "_K" + std::to_string(c.K) + (c.silu ? "_silu" : "") + (c.bias ? "_bias" : "") +
         (c.dtype == torch::kBFloat16 ? "_bf16" : "_f32") + (c.strided ? "_strided" : "") +
         (c.weight_in_dtype ? "_wdtype" : "");
}

struct Inputs {
  Tensor x, w, b;
};

Inputs make_inputs(const Case& c, uint64_t seed) {
  torch::manual_seed(seed);
  const auto act = torch::TensorOptions().device(torch::kCUDA).dtype(c.dtype);
  const auto wopt = act.dtype(c.weight_in_dtype ? c.dtype : torch::kFloat32);
  Inputs in;
  in.x = c.strided ? torch::randn({c.B, 2 * c.E, c.T}).to(act).narrow(1, c.E, c.E)
                   : torch::randn({c.B, c.E, c.T}).to(act);
  in.w = (torch::randn({c.E, c.K}) * 0.5).to(wopt);
  if (c.bias) in.b = (torch::randn({c.E}) * 0.5).to(wopt);
  return in;
}

struct KernelRun {
  Tensor out;
  std::vector<Tensor> grads;  // dx, dw, [db]
};

KernelRun run_kernels(const Case& c, const Inputs& in, const Tensor& dout) {
  Tensor x = in.x.detach().requires_grad_(true);
  Tensor w = in.w.detach().requires_grad_(true);
  Tensor b = in.b.defined() ? in.b.detach().requires_grad_(true) : Tensor();
  KernelRun r;
  r.out = cuda_ops::causal_conv1d(x, w, b, c.silu);
  std::vector<Tensor> wrt = {x, w};
  if (c.bias) wrt.push_back(b);
  r.grads = torch::autograd::grad({r.out}, wrt, {dout});
  return r;
}

void check_case(const Case& c, uint64_t seed) {
  SCOPED_TRACE(name(c));
  poison_cuda_allocator();
  const Inputs in = make_inputs(c, seed);
  const Tensor dout = torch::randn({c.B, c.E, c.T}).to(in.x.options());
  const KernelRun k = run_kernels(c, in, dout);
  ConvProblem p;
  p.B = c.B, p.E = c.E, p.T = c.T, p.K = c.K, p.silu = c.silu;
  p.x = to_vec(in.x), p.weight = to_vec(in.w), p.bias = to_vec(in.b);
  const Tolerance tol = tolerance_for(c.dtype);
  const Tolerance reduce_tol = c.weight_in_dtype ? tol : Tolerance{1e-3, 1e-3, 1e-2};
  EXPECT_EQ(k.out.scalar_type(), c.dtype);
  EXPECT_TRUE(close("out", k.out, conv_forward(p), tol));
  const ConvGrads g = conv_backward(p, to_vec(dout));
  EXPECT_TRUE(close("dx", k.grads[0], g.dx, tol));
  EXPECT_EQ(k.grads[1].scalar_type(), in.w.scalar_type());
  EXPECT_TRUE(close("dweight", k.grads[1], g.dweight, reduce_tol));
  if (c.bias) {
    EXPECT_TRUE(close("dbias", k.grads[2], g.dbias, reduce_tol));
  }
  const Tensor out_nograd = [&] {
    torch::NoGradGuard ng;
    return cuda_ops::causal_conv1d(in.x, in.w, in.b, c.silu);
  }();
  EXPECT_TRUE(torch::equal(out_nograd, k.out.detach()));
}

class ConvGrid
    : public ::testing::TestWithParam<std::tuple<int, int, torch::ScalarType, int>> {};

TEST_P(ConvGrid, MatchesOracle) {
  HYLAB_REQUIRE_GPU();
  const auto [K, T, dtype, flags] = GetParam();
  const Case c{2, 20, T, K, (flags & 1) != 0, (flags & 2) != 0, dtype};
  check_case(c, 500 + K * 13 + T + flags);
}

INSTANTIATE_TEST_SUITE_P(
    Widths, ConvGrid,
    ::testing::Combine(::testing::Values(2, 3, 4), ::testing::Values(1, 7, 64, 1000, 2048, 2049),
                       ::testing::Values(torch::kFloat32, torch::kBFloat16),
                       ::testing::Values(0, 1, 3)),
    [](const auto& info) {
      const auto K = std::get<0>(info.param);
      const auto T = std::get<1>(info.param);
      const auto dtype = std::get<2>(info.param);
      const auto flags = std::get<3>(info.param);
      return "K" + std::to_string(K) + "_T" + std::to_string(T) +
             (dtype == torch::kBFloat16 ? "_bf16" : "_f32") + ((flags & 1) ? "_silu" : "") +
             ((flags & 2) ? "_bias" : "");
    });

TEST(CausalConv1d, StridedAndWeightDtypes) {
  HYLAB_REQUIRE_GPU();
  const std::vector<Case> cases = {
      {2, 48, 256, 4, true, true, torch::kBFloat16, true},
      {3, 33, 100, 4, true, true, torch::kFloat32, true},
      {2, 16, 4096, 4, true, true, torch::kBFloat16, false, true},
      {2, 16, 3000, 3, true, false, torch::kFloat32, false, false},
  };
  uint64_t seed = 9;
  for (const Case& c : cases) check_case(c, seed++);
}

TEST(CausalConv1d, DeterministicGradients) {
  HYLAB_REQUIRE_GPU();
  const Case c{8, 256, 4096, 4, true, true, torch::kBFloat16};
  const Inputs in = make_inputs(c, 21);
  const Tensor dout = torch::randn({c.B, c.E, c.T}, in.x.options());
  const KernelRun a = run_kernels(c, in, dout);
  poison_cuda_allocator();
  const KernelRun b = run_kernels(c, in, dout);
  EXPECT_TRUE(torch::equal(a.out, b.out));
  for (size_t i = 0; i < a.grads.size(); ++i) {
    EXPECT_TRUE(torch::equal(a.grads[i], b.grads[i])) << "grad " << i << " differs";
  }
}

TEST(CausalConv1d, ValidatesInputs) {
  HYLAB_REQUIRE_GPU();
  const Case c{2, 8, 16, 4, true, true, torch::kFloat32};
  const Inputs in = make_inputs(c, 3);
  auto expect_error = [](auto&& fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "expected an error containing '" << needle << "'";
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error([&] { cuda_ops::causal_conv1d(in.x, in.w.narrow(1, 0, 1), in.b, true); },
               "width K = 1 is not supported");
  expect_error([&] { cuda_ops::causal_conv1d(in.x, in.w, in.b.narrow(0, 0, 4), true); },
               "causal_conv1d: bias must have shape [8]");
  expect_error([&] { cuda_ops::causal_conv1d(in.x.to(torch::kFloat16), in.w, in.b, true); },
               "causal_conv1d: x must be float32 or bfloat16");
  expect_error([&] { cuda_ops::causal_conv1d(in.x, in.w.cpu(), in.b, true); },
               "causal_conv1d: weight must be a CUDA tensor");
}

}  // namespace
}  // namespace hylab::testing
