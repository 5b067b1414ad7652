// The small-batch GEMV (kernels/gemv) against an fp64 product: rows 1..8, decode-sized and
// odd shapes (K not a multiple of 256, N not a multiple of the block's 8 warps), a strided
// x (a column slice of a wider tensor), the fused norm / ReLU^2 / residual add, and the
// shapes it refuses; programmatic dependent launches (overlap_launches) equal plain ones.
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
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

// Each fusion against the unfused ops computed in fp64 from the same bf16 inputs (the norm's
// output rounded to bf16 first, as at::rms_norm returns it), at every warps_per_row.
TEST(Gemv, FusionsMatchTheUnfusedOps) {
  HYLAB_REQUIRE_GPU();
  torch::manual_seed(78);
  const auto o = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  const Tolerance tol = tolerance_for(torch::kBFloat16);
  const double eps = 0.0078125;  // rms_norm_eps(bf16)
  torch::NoGradGuard ng;
  for (auto [K, N] : std::vector<std::array<int64_t, 2>>{{1280, 3840}, {5120, 1280}, {72, 37}}) {
    for (int64_t M : {1, 2, 3}) {
      const Tensor w = torch::randn({N, K}, o) / std::sqrt(static_cast<double>(K));
      const Tensor x = torch::randn({M, 1, K}, o) * 3.0;
      const Tensor r = torch::randn({M, 1, N}, o);
      const Tensor wd = w.to(torch::kDouble).t();
      const Tensor xd = x.to(torch::kDouble);
      const Tensor xn = (xd * torch::rsqrt(xd.pow(2).mean(-1, true) + eps))
                            .to(torch::kBFloat16)
                            .to(torch::kDouble);
      const Tensor normed = torch::matmul(xn, wd);  // (M, 1, N)
      const Tensor relu2 = torch::relu(normed.to(torch::kBFloat16).to(torch::kDouble)).pow(2);
      const Tensor added = r.to(torch::kDouble) + torch::matmul(xd, wd);
      for (int wpr : {0, 1, 2, 4, 8}) {
        const std::string at = " M=" + std::to_string(M) + " K=" + std::to_string(K) +
                               " N=" + std::to_string(N) + " wpr=" + std::to_string(wpr);
        cuda_ops::GemvFusion f;
        f.warps_per_row = wpr;
        EXPECT_TRUE(close("plain" + at, cuda_ops::gemv(x, w, f), to_vec(torch::matmul(xd, wd)), tol));
        f.norm_eps = eps;
        EXPECT_TRUE(close("norm" + at, cuda_ops::gemv(x, w, f), to_vec(normed), tol));
        f.relu2 = true;
        EXPECT_TRUE(close("norm+relu2" + at, cuda_ops::gemv(x, w, f), to_vec(relu2), tol));
        cuda_ops::GemvFusion a;
        a.warps_per_row = wpr;
        a.residual = r;
        EXPECT_TRUE(close("residual" + at, cuda_ops::gemv(x, w, a), to_vec(added), tol));
      }
    }
  }
}

// overlap_launches (kernels/common/launch.cuh) changes when a GEMV starts, never what it
// computes: a chain shaped like a decode step (each GEMV reads the one before it: norm ->
// up, down with K = 5120 so each lane walks several weight groups, residual) gives the same
// bits launched plainly, overlapped, and overlapped inside a CUDA graph. A kernel that read
// its input before the previous one finished would differ here.
TEST(Gemv, OverlappedLaunchesEqualPlainOnes) {
  HYLAB_REQUIRE_GPU();
  torch::manual_seed(79);
  const auto o = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  torch::NoGradGuard ng;
  const Tensor w_up = torch::randn({5120, 1280}, o) / std::sqrt(1280.0);
  const Tensor w_down = torch::randn({1280, 5120}, o) / std::sqrt(5120.0);
  const Tensor w_sq = torch::randn({1280, 1280}, o) / std::sqrt(1280.0);
  auto chain = [&](const Tensor& x, bool overlap) {
    cuda_ops::GemvFusion norm, plain, res;
    norm.norm_eps = 0.0078125;
    norm.overlap_launches = plain.overlap_launches = res.overlap_launches = overlap;
    const Tensor up = cuda_ops::gemv(x * 1, w_up, norm);  // x * 1: a kernel just before
    const Tensor down = cuda_ops::gemv(up, w_down, plain);
    res.residual = down;
    return cuda_ops::gemv(down, w_sq, res);
  };
  for (int64_t M : {1, 2, 8}) {
    const std::string at = "M=" + std::to_string(M);
    const Tensor x = torch::randn({M, 1280}, o) * 3.0;
    const Tensor want = chain(x, false);
    EXPECT_TRUE(torch::equal(chain(x, true), want)) << at << " eager";

    Tensor x_buf = x.clone(), y_buf;
    at::cuda::CUDAGraph graph;
    {
      const c10::cuda::CUDAStreamGuard side(c10::cuda::getStreamFromPool());
      chain(x_buf, true);  // warm-up on the capture stream
      torch::cuda::synchronize();
      graph.capture_begin();
      try {
        y_buf = chain(x_buf, true);
      } catch (const std::exception& e) {
        try {
          graph.capture_end();  // leave capture mode before failing
        } catch (...) {
        }
        FAIL() << "capture failed: " << e.what();
      }
      graph.capture_end();
    }
    for (int rep = 0; rep < 3; ++rep) {
      graph.replay();
      torch::cuda::synchronize();
      EXPECT_TRUE(torch::equal(y_buf, want)) << at << " graph replay " << rep;
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
  cuda_ops::GemvFusion bad;
  bad.warps_per_row = 3;
  EXPECT_THROW(cuda_ops::gemv(torch::randn({2, 64}, o), w, bad), std::exception);
  cuda_ops::GemvFusion both;
  both.relu2 = true;
  both.residual = torch::randn({2, 16}, o);
  EXPECT_THROW(cuda_ops::gemv(torch::randn({2, 64}, o), w, both), c10::Error);
}

}  // namespace
}  // namespace hylab::testing
