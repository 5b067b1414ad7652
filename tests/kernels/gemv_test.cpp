// The small-batch GEMV (kernels/gemv) against an fp64 product: rows 1..8, decode-sized and
// odd shapes (K not a multiple of 256, N not a multiple of the block's 8 warps), a strided
// x (a column slice of a wider tensor), and the shapes it refuses.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <array>
#include <cmath>
#include <string>

#include "model/cuda_ops.h"
#include "tests/kernels/test_util.h"

namespace hylab::testing {
namespace {

using torch::Tensor;

TEST(Gemv, MatchesFp64) {
  HYLAB_REQUIRE_GPU();
  torch::manual_seed(77);
  const auto o = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  const Tolerance tol = tolerance_for(torch::kBFloat16);
  torch::NoGradGuard ng;
  for (auto [K, N] : std::vector<std::array<int64_t, 2>>{
           {1280, 3840}, {5120, 1280}, {64, 100}, {8, 3}, {80, 2560}}) {
    for (int64_t M : {1, 2, 5, 8}) {
      const Tensor w = torch::randn({N, K}, o) / std::sqrt(static_cast<double>(K));
      const Tensor wide = torch::randn({M, K + 16}, o);
      for (const Tensor& x :
           {torch::randn({M, K}, o), wide.narrow(1, 8, K), torch::randn({M, 1, K}, o)}) {
        const Tensor got = cuda_ops::gemv(x, w);
        ASSERT_EQ(got.size(-1), N);
        const Tensor want = torch::matmul(x.to(torch::kDouble), w.to(torch::kDouble).t());
        EXPECT_TRUE(close(
            "gemv M=" + std::to_string(M) + " K=" + std::to_string(K) + " N=" + std::to_string(N),
            got, to_vec(want), tol));
      }
    }
  }
}

TEST(Gemv, RefusesWhatItDoesNotTake) {
  HYLAB_REQUIRE_GPU();
  const auto o = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  const Tensor w = torch::randn({16, 64}, o);
  EXPECT_TRUE(cuda_ops::gemv_supports(torch::randn({8, 64}, o), w));
  EXPECT_FALSE(cuda_ops::gemv_supports(torch::randn({9, 64}, o), w));                       // rows
  EXPECT_FALSE(cuda_ops::gemv_supports(torch::randn({2, 64}, o.dtype(torch::kFloat)), w));  // dtype
  EXPECT_FALSE(
      cuda_ops::gemv_supports(torch::randn({2, 60}, o), torch::randn({16, 60}, o)));  // K % 8
  EXPECT_THROW(cuda_ops::gemv(torch::randn({9, 64}, o), w), c10::Error);
}

}  // namespace
}  // namespace hylab::testing
