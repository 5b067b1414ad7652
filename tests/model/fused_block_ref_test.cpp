// The references of the fused Transformer-block ops (ref::add_rms_norm, rope_qk_norm,
// relu_square) against the unfused block's own ops (compat::rms_norm, apply_rotary, relu and
// square), and the backward formulas the CUDA kernels use (kernels/fused_block/fused_block.h:
// gradients from the saved outputs) against LibTorch autograd in fp64. CPU, so the kernels'
// math is checked here even where no GPU runs; the kernels themselves are checked against
// these references in tests/kernels/fused_block_test.cpp (label gpu).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <tuple>

#include "common/run_config.h"
#include "model/compat.h"
#include "model/ops.h"
#include "model/reference_ops.h"
#include "model/transformer.h"
#include "tests/model/test_util.h"

namespace hylab {
namespace {

double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

torch::Tensor leaf(torch::IntArrayRef shape, torch::Dtype dtype, double scale = 1.0) {
  return (torch::randn(shape, torch::kDouble) * scale).to(dtype).requires_grad_(true);
}

TEST(FusedBlockRef, ReferencesEqualTheUnfusedBlockOps) {
  torch::manual_seed(31);
  for (auto dtype : {torch::kFloat, torch::kDouble}) {
    const double tol = dtype == torch::kFloat ? 1e-5 : 1e-12;
    auto x = torch::randn({3, 5, 64}, dtype), b = torch::randn({3, 5, 64}, dtype);
    auto [s, y] = ref::add_rms_norm(x, b);
    EXPECT_TRUE(torch::equal(s, x + b));
    EXPECT_LT(max_diff(y, compat::rms_norm(x + b)), tol);
    EXPECT_LT(max_diff(std::get<1>(ref::add_rms_norm(x, torch::Tensor())), compat::rms_norm(x)),
              tol);

    auto q = torch::randn({2, 7, 3, 32}, dtype);
    auto [cos, sin] = rotary_tables(7, 32, 10000);
    EXPECT_LT(max_diff(ref::rope_qk_norm(q, cos, sin), compat::rms_norm(apply_rotary(q, cos, sin))),
              tol);

    auto u = torch::randn({4, 33}, dtype);
    EXPECT_LT(max_diff(ref::relu_square(u), torch::relu(u).square()), tol);
  }
}

// bf16 inputs: the sum is rounded to bf16 (as LibTorch's add), the norm computed in fp32 and
// rounded once.
TEST(FusedBlockRef, Bf16ReferencesRoundOnce) {
  torch::manual_seed(32);
  auto x = torch::randn({9, 48}).to(torch::kBFloat16),
       b = torch::randn({9, 48}).to(torch::kBFloat16);
  auto [s, y] = ref::add_rms_norm(x, b);
  EXPECT_EQ(s.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(y.scalar_type(), torch::kBFloat16);
  auto sf = (x + b).to(torch::kFloat);
  auto want = (sf * torch::rsqrt(sf.pow(2).mean(-1, true) + compat::rms_norm_eps(torch::kBFloat16)))
                  .to(torch::kBFloat16);
  EXPECT_TRUE(torch::equal(y, want));
}

// The kernels' backward: RMSNorm from its output, dx = rstd * (dy - y * mean(dy * y)) + dres,
// is autograd's gradient of (s -> RMSNorm(s)) plus the residual gradient.
TEST(FusedBlockRef, NormBackwardFromTheOutputIsExact) {
  torch::manual_seed(33);
  const double eps = 1e-3;  // large, so a formula that ignored eps would fail
  for (int64_t C : {2, 7, 64, 768}) {
    auto x = leaf({5, C}, torch::kDouble, 2.0), b = leaf({5, C}, torch::kDouble, 0.5);
    auto [s, y] = ref::add_rms_norm(x, b, eps);
    auto dy = torch::randn_like(y), dres = torch::randn_like(s);
    ((y * dy).sum() + (s * dres).sum()).backward();
    auto sd = s.detach(), yd = y.detach();
    auto rstd = torch::rsqrt(sd.pow(2).mean(-1, true) + eps);
    auto dx = rstd * (dy - yd * (dy * yd).mean(-1, true)) + dres;
    EXPECT_LT(max_diff(dx, x.grad()), 1e-12) << C;
    EXPECT_LT(max_diff(dx, b.grad()), 1e-12) << C;
  }
}

// Rotary + QK-norm backward: dr from the output as above, then the inverse rotation
// dx1 = dr1 c - dr2 s, dx2 = dr1 s + dr2 c.
TEST(FusedBlockRef, RopeQkNormBackwardFromTheOutputIsExact) {
  torch::manual_seed(34);
  const double eps = 1e-3;
  for (int64_t D : {2, 6, 64, 128}) {
    const int64_t T = 9, half = D / 2;
    auto x = leaf({2, T, 3, D}, torch::kDouble, 1.5);
    auto [cos32, sin32] = rotary_tables(T, D, 10000);
    auto cos = cos32.to(torch::kDouble), sin = sin32.to(torch::kDouble);
    auto y = ref::rope_qk_norm(x, cos, sin, eps);
    auto dy = torch::randn_like(y);
    (y * dy).sum().backward();
    auto yd = y.detach(), xd = x.detach();
    auto c = cos.unsqueeze(0).unsqueeze(2), s = sin.unsqueeze(0).unsqueeze(2);
    auto x1 = xd.narrow(3, 0, half), x2 = xd.narrow(3, half, half);
    auto r = torch::cat({x1 * c + x2 * s, x2 * c - x1 * s}, 3);
    auto rstd = torch::rsqrt(r.pow(2).mean(-1, true) + eps);  // the kernel saves it
    auto dr = rstd * (dy - yd * (dy * yd).mean(-1, true));
    auto dr1 = dr.narrow(3, 0, half), dr2 = dr.narrow(3, half, half);
    auto dx = torch::cat({dr1 * c - dr2 * s, dr1 * s + dr2 * c}, 3);
    EXPECT_LT(max_diff(dx, x.grad()), 1e-12) << D;
  }
}

// ReLU^2 backward from the output: du = 2 dh sqrt(h) = 2 dh relu(u).
TEST(FusedBlockRef, ReluSquareBackwardFromTheOutputIsExact) {
  torch::manual_seed(35);
  auto u = leaf({1000}, torch::kDouble, 2.0);
  auto h = ref::relu_square(u);
  auto dh = torch::randn_like(h);
  (h * dh).sum().backward();
  EXPECT_LT(max_diff(2 * dh * h.detach().sqrt(), u.grad()), 1e-12);
}

// On the CPU the ops are the references, and the config key reaches GPTConfig.
TEST(FusedBlockRef, CpuOpsAreTheReferencesAndTheKeyIsPlumbed) {
  torch::manual_seed(36);
  auto x = torch::randn({4, 64}), b = torch::randn({4, 64});
  EXPECT_FALSE(ops::fused_block_supports(x));
  auto [s, y] = ops::add_rms_norm(x, b);
  EXPECT_TRUE(torch::equal(y, std::get<1>(ref::add_rms_norm(x, b))));
  EXPECT_TRUE(torch::equal(ops::rms_norm(x), compat::rms_norm(x)));
  EXPECT_TRUE(torch::equal(ops::relu_square(x), ref::relu_square(x)));
  EXPECT_TRUE(testing::tiny_config("TT").fused_block);
  EXPECT_FALSE(testing::tiny_config("TT", {{"fused_block", "false"}}).fused_block);
}

}  // namespace
}  // namespace hylab
