// The fused Transformer-block kernels (kernels/fused_block through model/cuda_ops) against
// model/reference_ops evaluated in fp64 on the same inputs: every forward output and every
// input gradient, fp32 and bf16; rows that fill no block evenly, column counts that take the
// scalar path (not a whole number of 16-byte vectors), head dims 2..256 including 64 and 128,
// odd T, strided inputs, unused outputs (undefined incoming gradients), bit-identical reruns
// and argument errors. Outputs are poisoned first (NaN-filled allocator blocks).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <string>
#include <tuple>
#include <vector>

#include "model/compat.h"
#include "model/cuda_ops.h"
#include "model/reference_ops.h"
#include "tests/kernels/test_util.h"

namespace hylab::testing {
namespace {

using torch::Tensor;

const std::vector<torch::ScalarType> kDtypes = {torch::kFloat, torch::kBFloat16};

// A leaf copy in fp64 (the reference's inputs).
Tensor f64_leaf(const Tensor& t) { return t.detach().to(torch::kDouble).requires_grad_(true); }

// A random leaf of `dtype` on the GPU.
Tensor leaf(torch::IntArrayRef shape, torch::ScalarType dtype, double scale = 1.0) {
  return (torch::randn(shape, torch::TensorOptions().device(torch::kCUDA)) * scale)
      .to(dtype)
      .requires_grad_(true);
}

std::string tag(torch::ScalarType dtype, const std::string& what) {
  return std::string(c10::toString(dtype)) + " " + what;
}

// Runs f, expects a c10::Error whose message contains `needle`.
void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one containing \"" << needle << "\"";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// Rotary tables (rows, Dh/2) fp32 as model/transformer.cpp's rotary_tables builds them.
std::pair<Tensor, Tensor> tables(int64_t rows, int64_t head_dim) {
  auto channel = torch::arange(0, head_dim, 2, torch::kFloat);
  auto inv_freq = 1.0 / torch::pow(10000.0, channel / static_cast<double>(head_dim));
  auto freqs = torch::outer(torch::arange(rows, torch::kFloat), inv_freq);
  return {freqs.cos().to(torch::kCUDA), freqs.sin().to(torch::kCUDA)};
}

// ---------------------------------------------------------------- RMSNorm + residual add

struct NormCase {
  int64_t rows, cols;
};
// 768/1280: d12/d20 widths (16-byte path); 1001 and 7: the scalar path; 4096: many vectors
// per thread; rows 1..257, none a multiple of anything in the kernel.
const std::vector<NormCase> kNormCases = {{1, 768},  {37, 64},  {130, 128}, {257, 768},
                                          {5, 1280}, {3, 1001}, {65, 7},    {2, 4096}};

// uses: 0 = both outputs feed the loss, 1 = only y (the sum's gradient is undefined),
// 2 = only the sum (y's gradient is undefined).
TEST(FusedBlock, AddRmsNormMatchesTheReference) {
  HYLAB_REQUIRE_GPU();
  torch::manual_seed(11);
  poison_cuda_allocator();
  for (auto dtype : kDtypes) {
    const Tolerance tol = tolerance_for(dtype);
    const double eps = compat::rms_norm_eps(dtype);
    for (const auto& c : kNormCases) {
      for (int uses = 0; uses < 3; ++uses) {
        const std::string what =
            tag(dtype, "rows " + std::to_string(c.rows) + " cols " + std::to_string(c.cols) +
                           " uses " + std::to_string(uses));
        // branch is a strided view (every row 5 elements apart from the next): the glue copies.
        Tensor x = leaf({c.rows, c.cols}, dtype, 2.0);
        Tensor b_big = leaf({c.rows, c.cols + 5}, dtype, 0.5);
        Tensor b = b_big.narrow(1, 3, c.cols);
        auto [s, y] = cuda_ops::add_rms_norm(x, b, eps);
        ASSERT_EQ(s.sizes(), x.sizes());
        ASSERT_EQ(y.sizes(), x.sizes());
        ASSERT_EQ(y.scalar_type(), dtype);
        Tensor x64 = f64_leaf(x), b64_big = f64_leaf(b_big);
        auto [s64, y64] = ref::add_rms_norm(x64, b64_big.narrow(1, 3, c.cols), eps);
        EXPECT_TRUE(close(what + " sum", s, to_vec(s64), tol));
        EXPECT_TRUE(close(what + " y", y, to_vec(y64), tol));

        Tensor gs = torch::randn_like(s), gy = torch::randn_like(y);
        Tensor loss, loss64;
        if (uses != 1) loss = (s * gs).sum(), loss64 = (s64 * gs.to(torch::kDouble)).sum();
        if (uses != 2) {
          Tensor l = (y * gy).sum(), l64 = (y64 * gy.to(torch::kDouble)).sum();
          loss = loss.defined() ? loss + l : l;
          loss64 = loss64.defined() ? loss64 + l64 : l64;
        }
        loss.backward();
        loss64.backward();
        EXPECT_TRUE(close(what + " dx", x.grad(), to_vec(x64.grad()), tol));
        EXPECT_TRUE(close(what + " dbranch", b_big.grad(), to_vec(b64_big.grad()), tol));
      }
    }
  }
}

// Plain RMSNorm (no branch: the kernel's dres = null path), 2-D and 3-D inputs.
TEST(FusedBlock, RmsNormMatchesTheReference) {
  HYLAB_REQUIRE_GPU();
  torch::manual_seed(12);
  poison_cuda_allocator();
  for (auto dtype : kDtypes) {
    const Tolerance tol = tolerance_for(dtype);
    const double eps = compat::rms_norm_eps(dtype);
    std::vector<std::vector<int64_t>> shapes = {{3, 11, 128}, {2, 33, 768}, {1, 1001}, {129, 64}};
    for (const auto& shape : shapes) {
      const std::string what = tag(dtype, "rms_norm " + c10::str(torch::IntArrayRef(shape)));
      Tensor x = leaf(shape, dtype, 3.0);
      Tensor y = cuda_ops::rms_norm(x, eps);
      Tensor x64 = f64_leaf(x);
      Tensor y64 = std::get<1>(ref::add_rms_norm(x64, Tensor(), eps));
      EXPECT_TRUE(close(what + " y", y, to_vec(y64), tol));
      Tensor g = torch::randn_like(y);
      (y * g).sum().backward();
      (y64 * g.to(torch::kDouble)).sum().backward();
      EXPECT_TRUE(close(what + " dx", x.grad(), to_vec(x64.grad()), tol));
    }
  }
}

// ---------------------------------------------------------------- rotary + QK-norm

struct RopeCase {
  int64_t B, T, H, D;
};
const std::vector<RopeCase> kRopeCases = {{2, 7, 3, 64}, {1, 33, 2, 128}, {3, 5, 1, 256},
                                          {2, 17, 4, 6}, {1, 1, 1, 2},    {2, 65, 6, 128},
                                          {1, 9, 2, 96}, {4, 31, 5, 64}};

TEST(FusedBlock, RopeQkNormMatchesTheReference) {
  HYLAB_REQUIRE_GPU();
  torch::manual_seed(13);
  poison_cuda_allocator();
  for (auto dtype : kDtypes) {
    const Tolerance tol = tolerance_for(dtype);
    const double eps = compat::rms_norm_eps(dtype);
    for (const auto& c : kRopeCases) {
      const std::string what =
          tag(dtype, "B " + std::to_string(c.B) + " T " + std::to_string(c.T) + " H " +
                         std::to_string(c.H) + " Dh " + std::to_string(c.D));
      // Positions [3, 3 + T) of a longer table (a view with an offset, as GPT::rotary gives),
      // and x as the heads 1..H of a wider (B, T, H + 1, Dh) tensor (strided: the glue copies).
      auto [cos_all, sin_all] = tables(c.T + 3, c.D);
      Tensor cos = cos_all.narrow(0, 3, c.T), sin = sin_all.narrow(0, 3, c.T);
      Tensor x_big = leaf({c.B, c.T, c.H + 1, c.D}, dtype, 1.5);
      Tensor x = x_big.narrow(2, 1, c.H);
      Tensor y = cuda_ops::rope_qk_norm(x, cos, sin, eps);
      ASSERT_EQ(y.sizes(), x.sizes());
      ASSERT_TRUE(y.is_contiguous());
      ASSERT_EQ(y.scalar_type(), dtype);
      Tensor x64_big = f64_leaf(x_big);
      Tensor y64 = ref::rope_qk_norm(x64_big.narrow(2, 1, c.H), cos.to(torch::kDouble),
                                     sin.to(torch::kDouble), eps);
      EXPECT_TRUE(close(what + " y", y, to_vec(y64), tol));
      Tensor g = torch::randn_like(y);
      (y * g).sum().backward();
      (y64 * g.to(torch::kDouble)).sum().backward();
      EXPECT_TRUE(close(what + " dx", x_big.grad(), to_vec(x64_big.grad()), tol));
    }
  }
}

// ---------------------------------------------------------------- ReLU^2

TEST(FusedBlock, ReluSquareMatchesTheReference) {
  HYLAB_REQUIRE_GPU();
  torch::manual_seed(14);
  poison_cuda_allocator();
  for (auto dtype : kDtypes) {
    const Tolerance tol = tolerance_for(dtype);
    // Sizes: one element, under one vector, whole vectors, ragged, and a grid-stride size;
    // the last shape is a strided 2-D view (the glue copies).
    for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{8}, int64_t{1000}, int64_t{4099},
                      int64_t{3 * 4096 + 5}, int64_t{1} << 16, int64_t{1} << 22}) {
      const std::string what = tag(dtype, "n " + std::to_string(n));
      Tensor u = leaf({n}, dtype, 2.0);
      Tensor h = cuda_ops::relu_square(u);
      Tensor u64 = f64_leaf(u);
      Tensor h64 = ref::relu_square(u64);
      EXPECT_TRUE(close(what + " h", h, to_vec(h64), tol));
      Tensor g = torch::randn_like(h);
      (h * g).sum().backward();
      (h64 * g.to(torch::kDouble)).sum().backward();
      EXPECT_TRUE(close(what + " du", u.grad(), to_vec(u64.grad()), tol));
    }
    Tensor u_big = leaf({37, 40}, dtype, 2.0);
    Tensor u = u_big.narrow(1, 1, 33);
    Tensor h = cuda_ops::relu_square(u);
    Tensor u64_big = f64_leaf(u_big);
    Tensor h64 = ref::relu_square(u64_big.narrow(1, 1, 33));
    EXPECT_TRUE(close(tag(dtype, "strided h"), h, to_vec(h64), tol));
    Tensor g = torch::randn_like(h);
    (h * g).sum().backward();
    (h64 * g.to(torch::kDouble)).sum().backward();
    EXPECT_TRUE(close(tag(dtype, "strided du"), u_big.grad(), to_vec(u64_big.grad()), tol));
    // Zeros and negatives: zero output, zero gradient.
    Tensor z = (-torch::rand({64}, torch::TensorOptions().device(torch::kCUDA))).to(dtype);
    z.narrow(0, 0, 8).zero_();
    z.requires_grad_(true);
    Tensor hz = cuda_ops::relu_square(z);
    hz.sum().backward();
    EXPECT_EQ(hz.abs().sum().item<double>(), 0.0) << c10::toString(dtype);
    EXPECT_EQ(z.grad().abs().sum().item<double>(), 0.0) << c10::toString(dtype);
  }
}

// ---------------------------------------------------------------- determinism, no-grad, errors

TEST(FusedBlock, RerunsAreBitIdentical) {
  HYLAB_REQUIRE_GPU();
  torch::manual_seed(15);
  for (auto dtype : kDtypes) {
    Tensor x = leaf({300, 768}, dtype), b = leaf({300, 768}, dtype);
    Tensor q = leaf({2, 40, 3, 128}, dtype);
    auto [cos, sin] = tables(40, 128);
    Tensor gy = torch::randn({300, 768}, torch::TensorOptions().device(torch::kCUDA)).to(dtype);
    Tensor gq =
        torch::randn({2, 40, 3, 128}, torch::TensorOptions().device(torch::kCUDA)).to(dtype);
    std::vector<Tensor> out[2];
    for (int k = 0; k < 2; ++k) {
      x.mutable_grad() = Tensor();
      b.mutable_grad() = Tensor();
      q.mutable_grad() = Tensor();
      auto [s, y] = cuda_ops::add_rms_norm(x, b, 1e-6);
      Tensor r = cuda_ops::rope_qk_norm(q, cos, sin, 1e-6);
      ((y * gy).sum() + (r * gq).sum() + s.sum()).backward();
      out[k] = {s.detach(), y.detach(), r.detach(), x.grad(), b.grad(), q.grad()};
    }
    for (size_t i = 0; i < out[0].size(); ++i) {
      EXPECT_TRUE(torch::equal(out[0][i], out[1][i])) << c10::toString(dtype) << " output " << i;
    }
  }
}

TEST(FusedBlock, WithoutGradTheOpsStillCompute) {
  HYLAB_REQUIRE_GPU();
  torch::NoGradGuard no_grad;
  auto o = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  Tensor x = torch::randn({4, 5, 2, 64}, o);
  auto [cos, sin] = tables(5, 64);
  Tensor y = cuda_ops::rope_qk_norm(x, cos, sin, 1e-6);
  EXPECT_FALSE(y.requires_grad());
  EXPECT_TRUE(close("no-grad rope", y,
                    to_vec(ref::rope_qk_norm(x.to(torch::kDouble), cos, sin, 1e-6)),
                    tolerance_for(torch::kBFloat16)));
}

TEST(FusedBlock, ArgumentErrorsNameTheArgument) {
  HYLAB_REQUIRE_GPU();
  auto o = torch::TensorOptions().device(torch::kCUDA);
  auto [cos, sin] = tables(4, 64);
  expect_error(
      [&] {
        cuda_ops::rope_qk_norm(torch::randn({1, 4, 2, 258}, o), cos, sin, 1e-6);
      },
      "head dim 258");
  expect_error(
      [&] {
        cuda_ops::rope_qk_norm(torch::randn({1, 4, 2, 62}, o), cos, sin, 1e-6);
      },
      "cos must have shape");
  expect_error(
      [&] {
        cuda_ops::rope_qk_norm(torch::randn({4, 2, 64}, o), cos, sin, 1e-6);
      },
      "(B, T, H, Dh)");
  expect_error(
      [&] {
        cuda_ops::rope_qk_norm(torch::randn({1, 4, 2, 64}, o), cos.to(torch::kBFloat16), sin, 1e-6);
      },
      "cos must be Float");
  expect_error(
      [&] {
        cuda_ops::add_rms_norm(torch::randn({3, 64}, o),
                               torch::randn({3, 64}, o.dtype(torch::kBFloat16)), 1e-6);
      },
      "branch must be");
  expect_error(
      [&] {
        cuda_ops::add_rms_norm(torch::randn({3, 64}, o), torch::randn({3, 32}, o), 1e-6);
      },
      "branch must have shape");
  expect_error([&] { cuda_ops::relu_square(torch::ones({8}, o.dtype(torch::kInt))); },
               "u must be float32 or bfloat16");
  expect_error([&] { cuda_ops::relu_square(torch::ones({8})); }, "must be a CUDA tensor");
}

}  // namespace
}  // namespace hylab::testing
