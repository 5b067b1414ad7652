// The split-K decode attention kernel (kernels/decode_attention) against the masked
// reference in fp64 (ref::decode_attention on upcast inputs): head dims, GQA, per-sequence
// and shared positions, positions at the start, inside one split and at the end of the
// cache, caches that are views (strided batch/head dims), bf16 and fp32.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <array>
#include <functional>
#include <string>
#include <tuple>
#include <vector>

#include "model/cuda_ops.h"
#include "model/reference_ops.h"
#include "tests/kernels/test_util.h"

namespace hylab::testing {
namespace {

using torch::Tensor;

Vec oracle(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& pos) {
  auto d = [](const Tensor& t) { return t.to(torch::kCPU, torch::kDouble); };
  return to_vec(ref::decode_attention(d(q), d(k), d(v), pos.cpu()));
}

class DecodeAttention
    : public ::testing::TestWithParam<std::tuple<int, int, int, int64_t, torch::ScalarType>> {};

TEST_P(DecodeAttention, MatchesTheReference) {
  HYLAB_REQUIRE_GPU();
  const auto [Dh, H, Hkv, L, dtype] = GetParam();
  torch::manual_seed(Dh * 131 + H * 7 + static_cast<int>(L));
  const int64_t B = 3;
  const auto o = torch::TensorOptions().device(torch::kCUDA).dtype(dtype);
  const auto li = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kLong);
  // A cache with room for one more kv head, sliced: batch/head strides that are not dense.
  const Tensor k_big = torch::randn({B, Hkv + 1, L, Dh}, o),
               v_big = torch::randn({B, Hkv + 1, L, Dh}, o);
  const Tensor k = k_big.narrow(1, 1, Hkv), v = v_big.narrow(1, 1, Hkv);
  const Tensor q = torch::randn({B, H, Dh}, o) * 2;  // peaked softmax as well as flat ones
  const Tolerance tol = tolerance_for(dtype);
  torch::NoGradGuard ng;
  const std::vector<std::vector<int64_t>> cases = {
      {L - 1, 0, L / 2},
      {0},
      {L - 1},
      {std::min<int64_t>(5, L - 1)},
      {L / 3, std::max<int64_t>(L - 2, 0), std::min<int64_t>(1, L - 1)}};
  for (const auto& c : cases) {
    const Tensor pos = torch::tensor(c, torch::kLong).to(li.device());
    const Tensor got = cuda_ops::decode_attention(q, k, v, pos);
    ASSERT_EQ(got.sizes(), q.sizes());
    ASSERT_EQ(got.scalar_type(), dtype);
    EXPECT_TRUE(close("decode attention vs fp64 reference, pos " + c10::str(pos.cpu()), got,
                      oracle(q, k, v, pos), tol))
        << "Dh=" << Dh << " H=" << H << " Hkv=" << Hkv << " L=" << L;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, DecodeAttention,
    ::testing::Values(std::make_tuple(128, 10, 10, int64_t{5000}, torch::kBFloat16),
                      std::make_tuple(128, 8, 2, int64_t{700}, torch::kBFloat16),
                      std::make_tuple(64, 4, 1, int64_t{3000}, torch::kBFloat16),
                      std::make_tuple(16, 4, 2, int64_t{40}, torch::kBFloat16),
                      std::make_tuple(256, 2, 2, int64_t{300}, torch::kBFloat16),
                      std::make_tuple(32, 4, 4, int64_t{1}, torch::kFloat32),
                      std::make_tuple(128, 10, 5, int64_t{2500}, torch::kFloat32),
                      std::make_tuple(16, 4, 2, int64_t{77}, torch::kFloat32)));

TEST(DecodeAttentionArgs, BadArgumentsAreNamed) {
  HYLAB_REQUIRE_GPU();
  const auto o = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  const auto li = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kLong);
  const Tensor q = torch::randn({2, 4, 64}, o), k = torch::randn({2, 2, 10, 64}, o);
  const Tensor pos = torch::tensor({int64_t{3}}, li);
  auto message = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const c10::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(
      message([&] { cuda_ops::decode_attention(q, k.to(torch::kFloat), k, pos); }).find("k_cache"),
      std::string::npos);
  EXPECT_NE(message([&] { cuda_ops::decode_attention(q, k, k, pos.to(torch::kInt)); }).find("pos"),
            std::string::npos);
  EXPECT_NE(message([&] {
              cuda_ops::decode_attention(torch::randn({2, 4, 48}, o),
                                         torch::randn({2, 2, 10, 48}, o),
                                         torch::randn({2, 2, 10, 48}, o), pos);
            }).find("head dim 48"),
            std::string::npos);
}

// The fused rotary + QK-norm + KV append against the same steps in LibTorch ops: q within
// rounding, the cache rows at pos written alike, every other row untouched.
TEST(RopeAppend, MatchesTheReference) {
  HYLAB_REQUIRE_GPU();
  torch::manual_seed(91);
  for (auto dtype : {torch::kBFloat16, torch::kFloat32}) {
    for (auto [Dh, H, Hkv] :
         std::vector<std::array<int64_t, 3>>{{128, 10, 10}, {16, 4, 2}, {64, 8, 1}}) {
      const int64_t B = 3, L = 20, P = 7;
      const auto o = torch::TensorOptions().device(torch::kCUDA).dtype(dtype);
      const Tensor qkv = torch::randn({B, 1, H + 2 * Hkv, Dh}, o);
      const Tensor ang = torch::rand({1, Dh / 2}, o.dtype(torch::kFloat)) * 6;
      const Tensor cos_full = torch::cat({ang.cos(), ang.cos()}, 1).to(dtype);
      const Tensor sin_full = torch::cat({ang.sin(), -ang.sin()}, 1).to(dtype);
      const Tensor pos = torch::tensor(std::vector<int64_t>{P}, torch::kLong).to(torch::kCUDA);
      Tensor k1 = torch::randn({B, Hkv, L, Dh}, o), v1 = torch::randn({B, Hkv, L, Dh}, o);
      Tensor k2 = k1.clone(), v2 = v1.clone();
      torch::NoGradGuard ng;
      const double eps = dtype == torch::kFloat32 ? 1.1920928955078125e-07 : 0.0078125;
      const Tensor got = cuda_ops::rope_append(qkv, cos_full, sin_full, pos, k1, v1, H, eps);
      const Tensor want = ref::decode_rope_append(qkv, cos_full, sin_full, pos, k2, v2, H);
      const Tolerance tol = tolerance_for(dtype);
      const std::string what = std::string(c10::toString(dtype)) + " Dh=" + std::to_string(Dh);
      EXPECT_TRUE(close("q " + what, got, to_vec(want), tol));
      EXPECT_TRUE(close("k row " + what, k1.select(2, P), to_vec(k2.select(2, P)), tol));
      EXPECT_TRUE(torch::equal(v1, v2)) << what;  // v is copied
      k1.select(2, P).zero_();
      k2.select(2, P).zero_();
      EXPECT_TRUE(torch::equal(k1, k2)) << what;  // nothing else written
    }
  }
}

}  // namespace
}  // namespace hylab::testing
