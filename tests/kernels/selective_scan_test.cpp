// Selective scan kernels (model/cuda_ops.h) against the fp64 oracle: forward, every
// gradient (under every forward and backward kernel variant), the prefill's last state,
// determinism, strided inputs and input validation.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <ATen/cuda/CUDAContext.h>

#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "kernels/selective_scan/selective_scan.h"
#include "model/cuda_ops.h"
#include "model/reference_ops.h"
#include "tests/kernels/oracle.h"
#include "tests/kernels/test_util.h"

namespace hylab::testing {
namespace {

using torch::Tensor;

struct Case {
  int B, E, T, N;
  bool z, bias, D, softplus;
  torch::ScalarType dtype;
  bool strided = false;  // u/z as halves of one (B, 2E, T) tensor, Bm transposed, Cm sliced
};

std::string name(const Case& c) {
  return "B" + std::to_string(c.B) + "_E" + std::to_string(c.E) + "_T" + std::to_string(c.T) +
         "_N" + std::to_string(c.N) + (c.z ? "_z" : "") + (c.bias ? "_bias" : "") +
         (c.D ? "_D" : "") + (c.softplus ? "_sp" : "") +
         (c.dtype == torch::kBFloat16 ? "_bf16" : "_f32") + (c.strided ? "_strided" : "");
}

struct Inputs {
  Tensor u, delta, A, Bm, Cm, D, z, bias;
};

// Random inputs drawn on the CPU (reproducible), then moved to the GPU in the case's dtype.
Inputs make_inputs(const Case& c, uint64_t seed) {
  torch::manual_seed(seed);
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  const auto act = cuda.dtype(c.dtype);
  const auto f32 = cuda.dtype(torch::kFloat32);
  auto to_act = [&](const Tensor& t) { return t.to(act); };
  Inputs in;
  if (c.strided) {
    Tensor xz = to_act(torch::randn({c.B, 2 * c.E, c.T}));
    in.u = xz.narrow(1, 0, c.E);
    if (c.z) in.z = xz.narrow(1, c.E, c.E);
    in.Bm = to_act(torch::randn({c.B, c.T, c.N})).transpose(1, 2);   // last stride N: copied
    in.Cm = to_act(torch::randn({c.B, c.N, c.T + 5})).narrow(2, 2, c.T);  // strided rows
  } else {
    in.u = to_act(torch::randn({c.B, c.E, c.T}));
    if (c.z) in.z = to_act(torch::randn({c.B, c.E, c.T}));
    in.Bm = to_act(torch::randn({c.B, c.N, c.T}));
    in.Cm = to_act(torch::randn({c.B, c.N, c.T}));
  }
  if (c.softplus) {
    in.delta = to_act(torch::randn({c.B, c.E, c.T}) * 0.5 - 1.0);
    if (c.bias) in.bias = (torch::rand({c.E}) * 3.0 - 3.0).to(f32);
  } else {  // d used as is: keep it positive so exp(d A) decays
    in.delta = to_act(torch::rand({c.B, c.E, c.T}) * 0.2 + 0.01);
    if (c.bias) in.bias = (torch::rand({c.E}) * 0.1).to(f32);
  }
  Tensor n1 = torch::arange(1, c.N + 1, torch::kFloat32).view({1, c.N});
  in.A = (-(torch::rand({c.E, c.N}) + 0.5) * n1).to(f32);  // like Mamba's -(1..N) init
  if (c.D) in.D = torch::randn({c.E}).to(f32);
  return in;
}

ScanProblem problem(const Case& c, const Inputs& in) {
  ScanProblem p;
  p.B = c.B, p.E = c.E, p.T = c.T, p.N = c.N, p.softplus = c.softplus;
  p.u = to_vec(in.u), p.delta = to_vec(in.delta), p.A = to_vec(in.A);
  p.Bm = to_vec(in.Bm), p.Cm = to_vec(in.Cm), p.D = to_vec(in.D), p.z = to_vec(in.z);
  p.bias = to_vec(in.bias);
  return p;
}

Tensor leaf(const Tensor& t) { return t.defined() ? t.detach().requires_grad_(true) : t; }

// Forces the split scan's splits of T (cuda_ops::set_scan_splits) for one scope: 1 = off,
// > 1 = that many, 0 = automatic.
class ScopedSplits {
 public:
  explicit ScopedSplits(int splits) : saved_(cuda_ops::scan_splits()) {
    cuda_ops::set_scan_splits(splits);
  }
  ~ScopedSplits() { cuda_ops::set_scan_splits(saved_); }
  ScopedSplits(const ScopedSplits&) = delete;
  ScopedSplits& operator=(const ScopedSplits&) = delete;

 private:
  int saved_;
};

struct KernelRun {
  Tensor y;
  std::vector<Tensor> grads;  // du, ddelta, dA, dB, dC, [dD], [dz], [dbias]
};

KernelRun run_kernels(const Case& c, const Inputs& in, const Tensor& dout) {
  Inputs l{leaf(in.u), leaf(in.delta), leaf(in.A), leaf(in.Bm), leaf(in.Cm),
           leaf(in.D), leaf(in.z),     leaf(in.bias)};
  KernelRun r;
  r.y = cuda_ops::selective_scan(l.u, l.delta, l.A, l.Bm, l.Cm, l.D, l.z, l.bias, c.softplus);
  std::vector<Tensor> wrt = {l.u, l.delta, l.A, l.Bm, l.Cm};
  if (c.D) wrt.push_back(l.D);
  if (c.z) wrt.push_back(l.z);
  if (c.bias) wrt.push_back(l.bias);
  r.grads = torch::autograd::grad({r.y}, wrt, {dout});
  return r;
}

const Tolerance kReduceTol{1e-3, 1e-3, 1e-2};  // fp32 sums over B x T or over E

// Selects the forward and backward kernel variants for its lifetime (restores the previous
// settings).
class Variants {
 public:
  Variants(int fwd, int bwd)
      : saved_fwd_(cuda_ops::scan_fwd_variant()), saved_bwd_(cuda_ops::scan_bwd_variant()) {
    cuda_ops::set_scan_fwd_variant(fwd);
    cuda_ops::set_scan_bwd_variant(bwd);
  }
  ~Variants() {
    cuda_ops::set_scan_fwd_variant(saved_fwd_);
    cuda_ops::set_scan_bwd_variant(saved_bwd_);
  }
  Variants(const Variants&) = delete;
  Variants& operator=(const Variants&) = delete;

 private:
  int saved_fwd_, saved_bwd_;
};

std::string variant_trace(int fwd, int bwd) {
  return "fwd variant " + std::to_string(fwd) + " (" +
         kernels::selective_scan_fwd_variant_name(fwd) + "), bwd variant " +
         std::to_string(bwd) + " (" + kernels::selective_scan_bwd_variant_name(bwd) + ")";
}

// The (forward, backward) variant pairs the tests run: every backward after forward 0 and
// every forward before backward 0.
std::vector<std::pair<int, int>> variant_pairs() {
  std::vector<std::pair<int, int>> pairs;
  for (int b = 0; b < kernels::kScanBwdVariants; ++b) pairs.emplace_back(0, b);
  for (int f = 1; f < kernels::kScanFwdVariants; ++f) pairs.emplace_back(f, 0);
  return pairs;
}

// Runs the kernels on the case's inputs once per entry of `splits` (the split scan's
// setting, cuda_ops::set_scan_splits: 0 automatic, 1 off, > 1 forced) and (forward, backward)
// kernel variant pair, and compares each run with one fp64 oracle result (the oracle is the
// slow part at long T).
void check_case(const Case& c, uint64_t seed, std::initializer_list<int> splits = {0}) {
  SCOPED_TRACE(name(c));
  poison_cuda_allocator();
  const Inputs in = make_inputs(c, seed);
  torch::manual_seed(seed + 1);
  const Tensor dout = torch::randn({c.B, c.E, c.T}).to(in.u.options());

  const ScanProblem p = problem(c, in);
  const ScanForward fw = scan_forward(p);
  const ScanGrads g = scan_backward(p, to_vec(dout));
  const Tolerance tol = tolerance_for(c.dtype);

  for (const int s : splits) {
    SCOPED_TRACE("splits " + std::to_string(s));
    const ScopedSplits forced(s);
    for (const auto& [fv, bv] : variant_pairs()) {
      SCOPED_TRACE(variant_trace(fv, bv));
      const Variants variants(fv, bv);
      poison_cuda_allocator();
      const KernelRun k = run_kernels(c, in, dout);
      EXPECT_EQ(k.y.scalar_type(), c.dtype);
      EXPECT_TRUE(close("y", k.y, fw.y, tol));
      EXPECT_TRUE(close("du", k.grads[0], g.du, tol));
      EXPECT_TRUE(close("ddelta", k.grads[1], g.ddelta, tol));
      EXPECT_TRUE(close("dA", k.grads[2], g.dA, kReduceTol));
      EXPECT_TRUE(
          close("dB", k.grads[3], g.dB, c.dtype == torch::kBFloat16 ? tol : kReduceTol));
      EXPECT_TRUE(
          close("dC", k.grads[4], g.dC, c.dtype == torch::kBFloat16 ? tol : kReduceTol));
      size_t i = 5;
      if (c.D) {
        EXPECT_TRUE(close("dD", k.grads[i++], g.dD, kReduceTol));
      }
      if (c.z) {
        EXPECT_TRUE(close("dz", k.grads[i++], g.dz, tol));
      }
      if (c.bias) {
        EXPECT_TRUE(close("ddelta_bias", k.grads[i++], g.dbias, kReduceTol));
      }
      if (bv != 0) continue;  // the forward-only checks once per forward variant

      // Without autograd (no saved states) and as the prefill: the same y, plus the last
      // state.
      const Tensor y_nograd = [&] {
        torch::NoGradGuard ng;
        return cuda_ops::selective_scan(in.u, in.delta, in.A, in.Bm, in.Cm, in.D, in.z,
                                        in.bias, c.softplus);
      }();
      EXPECT_TRUE(torch::equal(y_nograd, k.y.detach())) << "no-grad forward differs";
      auto [y_pre, last] = cuda_ops::selective_scan_with_state(
          in.u, in.delta, in.A, in.Bm, in.Cm, in.D, in.z, in.bias, c.softplus);
      EXPECT_TRUE(torch::equal(y_pre, k.y.detach())) << "prefill forward differs";
      EXPECT_EQ(last.scalar_type(), torch::kFloat32);
      EXPECT_TRUE(close("last_state", last, fw.last_state, kReduceTol));
    }
  }
}

// The issue's grid: T x N x dtype x (z, delta_bias), each with the split scan forced off
// and forced on (7 splits of T, the last one ragged; T <= 64 has one split either way, splits
// hold multiples of 64 steps). T = 32768 (the oracle takes seconds there) with N = 16 only.
class ScanGrid
    : public ::testing::TestWithParam<std::tuple<int, int, torch::ScalarType, int>> {};

constexpr int kGridSplits = 7;

TEST_P(ScanGrid, MatchesOracle) {
  HYLAB_REQUIRE_GPU();
  const auto [T, N, dtype, flags] = GetParam();
  // E = 24: a partial channel block for every N (blocks of 64/32/16 channels).
  const Case c{2, 24, T, N, (flags & 1) != 0, (flags & 2) != 0, true, true, dtype};
  {
    const ScopedSplits off(1);
    EXPECT_EQ(cuda_ops::scan_splits_for(c.B, c.E, T, N, /*backward=*/false), 1);
    EXPECT_EQ(cuda_ops::scan_splits_for(c.B, c.E, T, N, /*backward=*/true), 1);
  }
  if (T >= 2048) {  // forced on, the split path really runs
    const ScopedSplits on(kGridSplits);
    EXPECT_EQ(cuda_ops::scan_splits_for(c.B, c.E, T, N, false), kGridSplits);
    EXPECT_EQ(cuda_ops::scan_splits_for(c.B, c.E, T, N, true), kGridSplits);
  }
  check_case(c, 1000 + T * 7 + N * 3 + flags, {1, kGridSplits});
}

std::string grid_name(const ::testing::TestParamInfo<ScanGrid::ParamType>& info) {
  const auto T = std::get<0>(info.param);
  const auto N = std::get<1>(info.param);
  const auto dtype = std::get<2>(info.param);
  const auto flags = std::get<3>(info.param);
  return "T" + std::to_string(T) + "_N" + std::to_string(N) +
         (dtype == torch::kBFloat16 ? "_bf16" : "_f32") + ((flags & 1) ? "_z" : "") +
         ((flags & 2) ? "_bias" : "");
}

INSTANTIATE_TEST_SUITE_P(
    Issue, ScanGrid,
    ::testing::Combine(::testing::Values(1, 7, 64, 2048, 2049, 8192), ::testing::Values(16, 32, 64),
                       ::testing::Values(torch::kFloat32, torch::kBFloat16),
                       ::testing::Values(0, 1, 2, 3)),
    grid_name);

INSTANTIATE_TEST_SUITE_P(
    IssueLong, ScanGrid,
    ::testing::Combine(::testing::Values(32768), ::testing::Values(16),
                       ::testing::Values(torch::kFloat32, torch::kBFloat16),
                       ::testing::Values(0, 3)),
    grid_name);

// Split scan corner cases (forced): splits of one tile (64 steps) with a 1- or 2-step last
// split, N = 4 / 8 (other thread layouts and tiles), several channel blocks and batch rows,
// strided views, no softplus / no D. Each case also compares the split and unsplit runs.
TEST(SelectiveScan, SplitCornerCases) {
  HYLAB_REQUIRE_GPU();
  struct SplitCase {
    Case c;
    int splits;
  };
  const std::vector<SplitCase> cases = {
      {{2, 24, 2049, 16, true, true, true, true, torch::kFloat32}, 1000},  // 33 x 64, last 1
      {{1, 24, 130, 16, true, true, true, true, torch::kBFloat16}, 1000},  // 64, 64, 2
      {{2, 40, 1000, 4, true, true, true, true, torch::kFloat32}, 5},
      {{2, 70, 777, 8, false, true, true, true, torch::kBFloat16}, 4},
      {{3, 200, 1333, 16, true, true, true, true, torch::kFloat32}, 3},
      {{2, 24, 640, 32, true, true, false, false, torch::kFloat32}, 10},
      {{2, 48, 1024, 16, true, true, true, true, torch::kBFloat16, true}, 6},
      {{2, 32, 515, 64, true, false, true, true, torch::kFloat32, true}, 8},
  };
  uint64_t seed = 500;
  for (const SplitCase& sc : cases) {
    const Case& c = sc.c;
    SCOPED_TRACE(name(c) + " splits " + std::to_string(sc.splits));
    {
      const ScopedSplits forced(sc.splits);
      EXPECT_GT(cuda_ops::scan_splits_for(c.B, c.E, c.T, c.N, false), 1);
      EXPECT_GT(cuda_ops::scan_splits_for(c.B, c.E, c.T, c.N, true), 1);
    }
    check_case(c, seed, {sc.splits});
    // Split vs unsplit on the same inputs: equal up to fp32 rounding order.
    const Inputs in = make_inputs(c, seed);
    const Tensor dout = torch::randn({c.B, c.E, c.T}).to(in.u.options());
    KernelRun split_run, whole_run;
    {
      const ScopedSplits forced(sc.splits);
      split_run = run_kernels(c, in, dout);
    }
    {
      const ScopedSplits off(1);
      whole_run = run_kernels(c, in, dout);
    }
    const Tolerance tol = c.dtype == torch::kBFloat16 ? tolerance_for(c.dtype)
                                                      : Tolerance{1e-5, 1e-5, 1e-4};
    EXPECT_TRUE(close("y split vs unsplit", split_run.y, to_vec(whole_run.y), tol));
    // grads: du, ddelta, dA, dB, dC, then those of D, z, delta_bias that the case has.
    for (size_t i = 0; i < split_run.grads.size(); ++i) {
      const bool reduced = i == 2 || i >= 5;  // sums over B x T (dz: looser than needed)
      EXPECT_TRUE(close("grad " + std::to_string(i) + " split vs unsplit", split_run.grads[i],
                        to_vec(whole_run.grads[i]), reduced ? kReduceTol : tol));
    }
    ++seed;
  }
}

// The automatic choice: long context at small batch splits, d12 training does not, forced
// off never does.
TEST(SelectiveScan, AutomaticSplits) {
  HYLAB_REQUIRE_GPU();
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  {
    const ScopedSplits automatic(0);
    if (std::getenv("HYLAB_SCAN_SPLITS") == nullptr && sms >= 64) {
      // 48 forward blocks (B2 x 24 channel blocks) on >= 64 SMs: split.
      EXPECT_GT(cuda_ops::scan_splits_for(2, 1536, 32768, 16, false), 1);
      EXPECT_GT(cuda_ops::scan_splits_for(2, 1536, 32768, 16, true), 1);
      EXPECT_GT(cuda_ops::scan_splits_for(1, 2560, 65536, 16, true), 1);
    }
    if (std::getenv("HYLAB_SCAN_SPLITS") == nullptr) {
      // d12 training (768 blocks) and short T are never split automatically.
      EXPECT_EQ(cuda_ops::scan_splits_for(32, 1536, 2048, 16, false), 1);
      EXPECT_EQ(cuda_ops::scan_splits_for(32, 1536, 2048, 16, true), 1);
      EXPECT_EQ(cuda_ops::scan_splits_for(1, 64, 1000, 16, true), 1);
    }
    std::fprintf(stderr, "automatic splits on %d SMs: B2xE1536xT32768 fwd %d bwd %d, "
                 "B1xE2560xT65536 fwd %d bwd %d, B8xE1536xT8192 fwd %d bwd %d\n", sms,
                 cuda_ops::scan_splits_for(2, 1536, 32768, 16, false),
                 cuda_ops::scan_splits_for(2, 1536, 32768, 16, true),
                 cuda_ops::scan_splits_for(1, 2560, 65536, 16, false),
                 cuda_ops::scan_splits_for(1, 2560, 65536, 16, true),
                 cuda_ops::scan_splits_for(8, 1536, 8192, 16, false),
                 cuda_ops::scan_splits_for(8, 1536, 8192, 16, true));
  }
  const ScopedSplits off(1);
  EXPECT_EQ(cuda_ops::scan_splits_for(2, 1536, 32768, 16, false), 1);
  EXPECT_EQ(cuda_ops::scan_splits_for(1, 2560, 65536, 16, true), 1);
}

TEST(SelectiveScan, OtherShapesAndOptions) {
  HYLAB_REQUIRE_GPU();
  const std::vector<Case> cases = {
      // small N, one thread per channel or two
      {2, 40, 7, 4, true, true, true, true, torch::kFloat32},
      {2, 300, 130, 4, true, false, true, true, torch::kBFloat16},
      {2, 70, 130, 8, false, true, true, true, torch::kFloat32},
      {1, 64, 96, 8, true, true, false, true, torch::kBFloat16},
      // no softplus, no D
      {2, 24, 100, 16, true, true, false, false, torch::kFloat32},
      {2, 24, 256, 32, false, false, false, false, torch::kBFloat16},
      // many channel blocks, several batch rows
      {3, 200, 333, 16, true, true, true, true, torch::kFloat32},
      {3, 200, 512, 16, true, true, true, true, torch::kBFloat16},
      // strided inputs (views of a fused projection)
      {2, 48, 64, 16, true, true, true, true, torch::kBFloat16, true},
      {2, 40, 77, 16, true, false, true, true, torch::kFloat32, true},
      {2, 32, 256, 64, true, true, true, true, torch::kFloat32, true},
  };
  uint64_t seed = 77;
  for (const Case& c : cases) check_case(c, seed++, {1});
}

// Bit-identical outputs and gradients across two runs: unsplit, and with the split scan
// forced on (its partials get a split dimension, summed in a fixed order too); under every
// (forward, backward) kernel variant pair.
void expect_deterministic(const Case& c, int splits) {
  SCOPED_TRACE(name(c) + " splits " + std::to_string(splits));
  const ScopedSplits forced(splits);
  const Inputs in = make_inputs(c, 5);
  const Tensor dout = torch::randn({c.B, c.E, c.T}, in.u.options());
  const char* names[] = {"du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias"};
  for (const auto& [fv, bv] : variant_pairs()) {
    SCOPED_TRACE(variant_trace(fv, bv));
    const Variants variants(fv, bv);
    const KernelRun a = run_kernels(c, in, dout);
    poison_cuda_allocator();
    const KernelRun b = run_kernels(c, in, dout);
    EXPECT_TRUE(torch::equal(a.y, b.y));
    ASSERT_EQ(a.grads.size(), b.grads.size());
    for (size_t i = 0; i < a.grads.size(); ++i) {
      EXPECT_TRUE(torch::equal(a.grads[i], b.grads[i])) << names[i] << " differs between runs";
    }
  }
}

TEST(SelectiveScan, DeterministicGradients) {
  HYLAB_REQUIRE_GPU();
  ASSERT_TRUE(cuda_ops::deterministic());
  expect_deterministic({4, 512, 1024, 16, true, true, true, true, torch::kBFloat16}, 1);
  expect_deterministic({2, 256, 8192, 16, true, true, true, true, torch::kBFloat16}, 8);
  expect_deterministic({1, 100, 5000, 16, true, true, true, true, torch::kFloat32}, 5);
}

// The variants compute the same outputs: fp32 inputs, each pair against (0, 0) (differences
// are the last bits of reordered fp32 sums; bounds far below the oracle's); unsplit and split.
TEST(SelectiveScan, KernelVariantsAgree) {
  HYLAB_REQUIRE_GPU();
  const Case c{2, 200, 777, 16, true, true, true, true, torch::kFloat32};
  const Inputs in = make_inputs(c, 9);
  const Tensor dout = torch::randn({c.B, c.E, c.T}, in.u.options());
  const char* names[] = {"du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias"};
  const Tolerance tight{1e-5, 1e-5, 1e-4};
  for (const int splits : {1, 4}) {
    SCOPED_TRACE("splits " + std::to_string(splits));
    const ScopedSplits forced(splits);
    KernelRun base;
    {
      const Variants variants(0, 0);
      base = run_kernels(c, in, dout);
    }
    for (const auto& [fv, bv] : variant_pairs()) {
      SCOPED_TRACE(variant_trace(fv, bv));
      const Variants variants(fv, bv);
      const KernelRun k = run_kernels(c, in, dout);
      EXPECT_TRUE(close("y", k.y, to_vec(base.y), tight));
      ASSERT_EQ(k.grads.size(), base.grads.size());
      for (size_t i = 0; i < k.grads.size(); ++i) {
        EXPECT_TRUE(close(names[i], k.grads[i], to_vec(base.grads[i]), tight));
      }
    }
  }
}

TEST(SelectiveScan, KernelVariantSwitches) {
  HYLAB_REQUIRE_GPU();
  const Variants restore(cuda_ops::scan_fwd_variant(), cuda_ops::scan_bwd_variant());
  EXPECT_THROW(cuda_ops::set_scan_bwd_variant(kernels::kScanBwdVariants), c10::Error);
  EXPECT_THROW(cuda_ops::set_scan_bwd_variant(-2), c10::Error);
  EXPECT_THROW(cuda_ops::set_scan_fwd_variant(kernels::kScanFwdVariants), c10::Error);
  cuda_ops::set_scan_bwd_variant(-1);
  EXPECT_EQ(cuda_ops::scan_bwd_variant(), -1);
  cuda_ops::set_scan_fwd_variant(-1);
  EXPECT_EQ(cuda_ops::scan_fwd_variant(), -1);
}

// Against the model's reference ops (hylab::ref, fp32 on the GPU through LibTorch autograd).
TEST(SelectiveScan, MatchesModelReference) {
  HYLAB_REQUIRE_GPU();
  for (const torch::ScalarType dtype : {torch::kFloat32, torch::kBFloat16}) {
    const Case c{2, 96, 300, 16, true, true, true, true, dtype};
    SCOPED_TRACE(name(c));
    const Inputs in = make_inputs(c, 31);
    const Tensor dout = torch::randn({c.B, c.E, c.T}, in.u.options());
    const KernelRun k = run_kernels(c, in, dout);
    Inputs l{leaf(in.u), leaf(in.delta), leaf(in.A), leaf(in.Bm), leaf(in.Cm),
             leaf(in.D), leaf(in.z),     leaf(in.bias)};
    Tensor y = std::get<0>(hylab::ref::selective_scan(l.u, l.delta, l.A, l.Bm, l.Cm, l.D, l.z,
                                                      l.bias, true));
    const std::vector<Tensor> g = torch::autograd::grad(
        {y}, {l.u, l.delta, l.A, l.Bm, l.Cm, l.D, l.z, l.bias}, {dout});
    const Tolerance tol = dtype == torch::kBFloat16 ? tolerance_for(dtype) : Tolerance{2e-4, 2e-4, 2e-3};
    EXPECT_TRUE(close("y vs ref", k.y, to_vec(y), tol));
    const char* names[] = {"du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias"};
    // k.grads order: du, ddelta, dA, dB, dC, dD, dz, dbias (all present here).
    for (size_t i = 0; i < g.size(); ++i) {
      const bool reduce = i == 2 || i == 5 || i == 7 || ((i == 3 || i == 4) && dtype == torch::kFloat32);
      EXPECT_TRUE(close(std::string(names[i]) + " vs ref", k.grads[i], to_vec(g[i]),
                        reduce ? kReduceTol : tol));
    }
  }
}

// Expects `fn` to throw with a message containing `needle`.
template <typename Fn>
void expect_error(Fn&& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected an error containing '" << needle << "'";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message was: " << e.what();
  }
}

TEST(SelectiveScan, ValidatesInputs) {
  HYLAB_REQUIRE_GPU();
  const Case c{2, 8, 16, 16, true, true, true, true, torch::kFloat32};
  const Inputs in = make_inputs(c, 3);
  auto call = [&](Inputs x) {
    return cuda_ops::selective_scan(x.u, x.delta, x.A, x.Bm, x.Cm, x.D, x.z, x.bias, true);
  };
  Inputs bad = in;
  bad.A = in.A.to(torch::kBFloat16);
  expect_error([&] { call(bad); }, "selective_scan: A must be Float");
  bad = in;
  bad.Bm = in.Bm.narrow(2, 0, 8);
  expect_error([&] { call(bad); }, "selective_scan: Bm must have shape [2, 16, 16]");
  bad = in;
  bad.u = in.u.cpu();
  expect_error([&] { call(bad); }, "selective_scan: u must be a CUDA tensor");
  bad = in;
  bad.z = in.z.to(torch::kBFloat16);
  expect_error([&] { call(bad); }, "selective_scan: z must be Float");
  bad = in;
  bad.A = torch::zeros({c.E, 12}, in.A.options());
  expect_error([&] { call(bad); }, "N = 12 (A.size(1)) is not supported");
  bad = in;
  bad.D = torch::zeros({c.E + 1}, in.A.options());
  expect_error([&] { call(bad); }, "selective_scan: D must have shape [8]");
  expect_error([] { cuda_ops::set_scan_splits(-1); }, "set_scan_splits: splits must be >= 0");
}

}  // namespace
}  // namespace hylab::testing
