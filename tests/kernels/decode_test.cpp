// Decode-step kernels: stepping causal_conv1d_update and selective_state_update token by
// token, after a prefill (selective_scan_with_state + the last K conv inputs), reproduces
// the full-sequence kernels and the fp64 oracle; the fused step (mamba_decode_core: conv +
// x_proj, dt_proj + state update) equals its unfused twin step after step, in a CUDA graph
// too.
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
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

// ---- The fused step (cuda_ops::mamba_decode_core) against the unfused ops it replaces.

// One Mamba layer's decode-step inputs between in_proj and out_proj, at any size.
struct StepProblem {
  int64_t B, E, N, K, R;
  torch::ScalarType dtype;
  bool conv_state_fp32;
  Tensor conv_w, conv_b, Wx, Wdt, dt_bias, A, D;  // parameters
  Tensor conv_state, ssm_state;                     // the states before the first step

  StepProblem(int64_t B_, int64_t E_, int64_t N_, int64_t K_, int64_t R_, torch::ScalarType dt,
              bool fp32_state, uint64_t seed)
      : B(B_), E(E_), N(N_), K(K_), R(R_), dtype(dt), conv_state_fp32(fp32_state) {
    torch::manual_seed(seed);
    const auto act = torch::TensorOptions().device(torch::kCUDA).dtype(dtype);
    const auto f32 = act.dtype(torch::kFloat32);
    conv_w = (torch::randn({E, K}) * 0.5).to(f32);
    conv_b = (torch::randn({E}) * 0.5).to(f32);
    Wx = (torch::randn({R + 2 * N, E}) / std::sqrt(static_cast<double>(E))).to(act);
    Wdt = (torch::randn({E, R}) / std::sqrt(static_cast<double>(R))).to(act);
    dt_bias = (torch::rand({E}) * 3.0 - 4.0).to(f32);  // softplus -> delta ~ 0.02 .. 0.7
    A = (-(torch::rand({E, N}) + 0.5) * torch::arange(1, N + 1, torch::kFloat32).view({1, N})).to(f32);
    D = torch::randn({E}).to(f32);
    conv_state = torch::randn({B, E, K}).to(fp32_state ? f32 : act);
    ssm_state = (torch::randn({B, E, N}) * 0.5).to(f32);
  }
  // in_proj's output for one token: x and z are (B, E) views with batch stride 2E.
  Tensor xz() const {
    return torch::randn({B, 2 * E}).to(torch::TensorOptions().device(torch::kCUDA).dtype(dtype));
  }
};

// The unfused twin: conv update -> x_proj (cuBLAS) -> dt_proj (cuBLAS) -> state update.
Tensor unfused_step(const StepProblem& p, const Tensor& xz, Tensor& conv_state, Tensor& ssm_state) {
  const Tensor x = xz.narrow(1, 0, p.E), z = xz.narrow(1, p.E, p.E);
  const Tensor xc = cuda_ops::causal_conv1d_update(x, conv_state, p.conv_w, p.conv_b, true);
  const Tensor x_dbl = torch::linear(xc, p.Wx);                           // (B, R + 2N)
  const Tensor dt = torch::linear(x_dbl.narrow(1, 0, p.R), p.Wdt);        // (B, E)
  return cuda_ops::selective_state_update(ssm_state, xc, dt, p.A, x_dbl.narrow(1, p.R, p.N),
                                          x_dbl.narrow(1, p.R + p.N, p.N), p.D, z, p.dt_bias,
                                          true);
}

Tensor fused_step(const StepProblem& p, const Tensor& xz, Tensor& conv_state, Tensor& ssm_state,
                  bool overlap = false) {
  return cuda_ops::mamba_decode_core(xz.narrow(1, 0, p.E), xz.narrow(1, p.E, p.E), conv_state,
                                     ssm_state, p.conv_w, p.conv_b, p.Wx, p.Wdt, p.dt_bias, p.A,
                                     p.D, overlap);
}

struct StepShape {
  int64_t E, K, R;
};

class FusedStep
    : public ::testing::TestWithParam<std::tuple<torch::ScalarType, int, int, StepShape>> {};

// Six steps of the fused and the unfused step from the same states and inputs: y every step
// and the final states agree to the dtype's tolerance (the only difference is the order of
// the projections' fp32 sums, and with bf16 a rare one-ulp difference after rounding: see
// kernels/decode/mamba_step.h); the conv states are equal bit for bit. Odd E takes the
// kernel's element-by-element x_proj path, E a multiple of 8 the 16-byte one; B > 8 takes a
// second row group; bf16 runs with a bf16 conv state at even B and an fp32 one at odd B.
TEST_P(FusedStep, MatchesTheUnfusedOps) {
  HYLAB_REQUIRE_GPU();
  const auto [dtype, N, B, shape] = GetParam();
  const bool fp32_state = dtype == torch::kFloat32 || B % 2 == 1;
  const StepProblem p(B, shape.E, N, shape.K, shape.R, dtype, fp32_state,
                      static_cast<uint64_t>(1000 * N + 10 * B + shape.E));
  torch::NoGradGuard ng;
  poison_cuda_allocator(int64_t{64} << 20);
  Tensor cs_f = p.conv_state.clone(), ss_f = p.ssm_state.clone();
  Tensor cs_u = p.conv_state.clone(), ss_u = p.ssm_state.clone();
  const Tolerance tol = tolerance_for(dtype);
  const std::string what = std::string(dtype == torch::kFloat32 ? "fp32" : "bf16") +
                           " N=" + std::to_string(N) + " B=" + std::to_string(B) +
                           " E=" + std::to_string(shape.E) + " K=" + std::to_string(shape.K) +
                           " R=" + std::to_string(shape.R);
  for (int step = 0; step < 6; ++step) {
    const Tensor xz = p.xz();
    const Tensor y_f = fused_step(p, xz, cs_f, ss_f);
    const Tensor y_u = unfused_step(p, xz, cs_u, ss_u);
    ASSERT_EQ(y_f.sizes(), y_u.sizes());
    ASSERT_EQ(y_f.scalar_type(), dtype);
    EXPECT_TRUE(close(what + " y step " + std::to_string(step), y_f, to_vec(y_u), tol));
  }
  EXPECT_TRUE(torch::equal(cs_f, cs_u)) << what << ": conv states differ";
  EXPECT_TRUE(close(what + " ssm_state", ss_f, to_vec(ss_u), tol));
}

INSTANTIATE_TEST_SUITE_P(
    Sizes, FusedStep,
    ::testing::Combine(::testing::Values(torch::kFloat32, torch::kBFloat16),
                       ::testing::Values(16, 32), ::testing::Values(1, 2, 3, 8, 11),
                       ::testing::Values(StepShape{37, 4, 5}, StepShape{96, 3, 6},
                                         StepShape{1536, 4, 48}, StepShape{50, 2, 3},
                                         StepShape{2560, 4, 80})));

// Same inputs, same states -> the same bits (fixed-order sums, no atomics).
TEST(FusedStepRuns, AreBitIdentical) {
  HYLAB_REQUIRE_GPU();
  const StepProblem p(5, 1536, 16, 4, 48, torch::kBFloat16, false, 7);
  torch::NoGradGuard ng;
  const Tensor xz = p.xz();
  Tensor cs1 = p.conv_state.clone(), ss1 = p.ssm_state.clone();
  Tensor cs2 = p.conv_state.clone(), ss2 = p.ssm_state.clone();
  const Tensor y1 = fused_step(p, xz, cs1, ss1);
  const Tensor y2 = fused_step(p, xz, cs2, ss2);
  EXPECT_TRUE(torch::equal(y1, y2));
  EXPECT_TRUE(torch::equal(ss1, ss2));
  EXPECT_TRUE(torch::equal(cs1, cs2));
  // overlap_launches changes when the kernels start, not what they compute. A kernel that
  // writes none of the pre-wait inputs goes first (their contract), as in_proj does.
  Tensor cs3 = p.conv_state.clone(), ss3 = p.ssm_state.clone();
  const Tensor xz3 = xz.clone();
  const Tensor y3 = fused_step(p, xz3, cs3, ss3, /*overlap=*/true);
  EXPECT_TRUE(torch::equal(y1, y3));
  EXPECT_TRUE(torch::equal(ss1, ss3));
  EXPECT_TRUE(torch::equal(cs1, cs3));
}

// The generator replays the step from a CUDA graph: captured once, replayed for 5 tokens, it
// gives the eager fused step's outputs and states bit for bit.
void expect_graph_replay_matches_eager(bool overlap) {
  for (auto dtype : {torch::kBFloat16, torch::kFloat32}) {
    SCOPED_TRACE(std::string(dtype == torch::kFloat32 ? "fp32" : "bf16") + ", overlap_launches " +
                 (overlap ? "on" : "off"));
    const StepProblem p(2, 1536, 16, 4, 48, dtype, dtype == torch::kFloat32, 8);
    torch::NoGradGuard ng;
    std::vector<Tensor> inputs;
    for (int i = 0; i < 5; ++i) inputs.push_back(p.xz());
    Tensor cs_e = p.conv_state.clone(), ss_e = p.ssm_state.clone();
    std::vector<Tensor> y_eager;
    for (const Tensor& xz : inputs) y_eager.push_back(fused_step(p, xz, cs_e, ss_e));

    Tensor xz_buf = inputs[0].clone();
    Tensor cs_g = p.conv_state.clone(), ss_g = p.ssm_state.clone();
    Tensor y_buf;
    at::cuda::CUDAGraph graph;
    {
      const c10::cuda::CUDAStreamGuard side(c10::cuda::getStreamFromPool());
      Tensor cs_w = p.conv_state.clone(), ss_w = p.ssm_state.clone();
      fused_step(p, xz_buf, cs_w, ss_w, overlap);  // warm-up off the states under test
      torch::cuda::synchronize();
      graph.capture_begin();
      try {
        // In the graph the step follows a kernel that writes x and z only (as in_proj's GEMV).
        Tensor xz_in = xz_buf * 1;
        y_buf = fused_step(p, xz_in, cs_g, ss_g, overlap);
      } catch (const std::exception& e) {
        try {
          graph.capture_end();  // leave capture mode before failing
        } catch (...) {
        }
        FAIL() << "capture failed: " << e.what();
      }
      graph.capture_end();
    }
    torch::cuda::synchronize();
    for (size_t i = 0; i < inputs.size(); ++i) {
      xz_buf.copy_(inputs[i]);
      graph.replay();
      EXPECT_TRUE(torch::equal(y_buf, y_eager[i])) << "token " << i;
    }
    EXPECT_TRUE(torch::equal(ss_g, ss_e));
    EXPECT_TRUE(torch::equal(cs_g, cs_e));
  }
}

TEST(FusedStepRuns, ReplaysFromACudaGraph) {
  HYLAB_REQUIRE_GPU();
  expect_graph_replay_matches_eager(/*overlap=*/false);
}

TEST(FusedStepRuns, ValidatesInputs) {
  HYLAB_REQUIRE_GPU();
  const StepProblem p(2, 24, 16, 4, 4, torch::kFloat32, true, 9);
  torch::NoGradGuard ng;
  const Tensor xz = p.xz();
  const Tensor x = xz.narrow(1, 0, p.E), z = xz.narrow(1, p.E, p.E);
  auto expect_error = [](auto&& fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "expected an error containing '" << needle << "'";
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  Tensor cs = p.conv_state.clone(), ss = p.ssm_state.clone();
  auto call = [&](const Tensor& xx, const Tensor& zz, Tensor& c, Tensor& s, const Tensor& cw,
                  const Tensor& Wx, const Tensor& Wdt, const Tensor& db, const Tensor& A) {
    return cuda_ops::mamba_decode_core(xx, zz, c, s, cw, p.conv_b, Wx, Wdt, db, A, p.D);
  };
  // The good call works (and the checks below are what makes the others fail).
  EXPECT_NO_THROW(call(x, z, cs, ss, p.conv_w, p.Wx, p.Wdt, p.dt_bias, p.A));
  Tensor ss_bf = ss.to(torch::kBFloat16);
  expect_error([&] { call(x, z, cs, ss_bf, p.conv_w, p.Wx, p.Wdt, p.dt_bias, p.A); },
               "mamba_decode_core: ssm_state must be Float");
  Tensor ss_t = torch::zeros({2, 16, 24}, ss.options()).transpose(1, 2);
  expect_error([&] { call(x, z, cs, ss_t, p.conv_w, p.Wx, p.Wdt, p.dt_bias, p.A); },
               "mamba_decode_core: ssm_state must be contiguous");
  expect_error([&] { call(x, z, cs, ss, p.conv_w, p.Wx.narrow(0, 0, 30), p.Wdt, p.dt_bias, p.A); },
               "mamba_decode_core: x_proj_weight must have shape [36, 24]");
  expect_error([&] { call(x, z, cs, ss, p.conv_w, p.Wx, p.Wdt.narrow(0, 0, 20), p.dt_bias, p.A); },
               "mamba_decode_core: dt_proj_weight must be (E, R) with E = 24");
  Tensor A12 = p.A.narrow(1, 0, 12).contiguous();
  Tensor ss12 = torch::zeros({2, 24, 12}, ss.options());
  expect_error([&] { call(x, z, cs, ss12, p.conv_w, p.Wx, p.Wdt, p.dt_bias, A12); },
               "mamba_decode_core: N = 12 is not supported");
  Tensor cw5 = torch::randn({24, 5}, p.conv_w.options());
  Tensor cs5 = torch::zeros({2, 24, 5}, cs.options());
  expect_error([&] { call(x, z, cs5, ss, cw5, p.Wx, p.Wdt, p.dt_bias, p.A); },
               "mamba_decode_core: width K = 5 is not supported");
  Tensor cs_t = torch::zeros({2, 4, 24}, cs.options()).transpose(1, 2);
  expect_error([&] { call(x, z, cs_t, ss, p.conv_w, p.Wx, p.Wdt, p.dt_bias, p.A); },
               "mamba_decode_core: conv_state must be contiguous");
  Tensor cs_bf = cs.to(torch::kBFloat16);
  expect_error([&] { call(x, z, cs_bf, ss, p.conv_w, p.Wx, p.Wdt, p.dt_bias, p.A); },
               "mamba_decode_core: conv_state must be float32 or x's dtype");
  Tensor z_bf = z.to(torch::kBFloat16);
  expect_error([&] { call(x, z_bf, cs, ss, p.conv_w, p.Wx, p.Wdt, p.dt_bias, p.A); },
               "mamba_decode_core: z must be Float");
  expect_error([&] { call(x, z, cs, ss, p.conv_w, p.Wx, p.Wdt, p.dt_bias.narrow(0, 0, 23), p.A); },
               "mamba_decode_core: dt_bias must have shape [24]");
  Tensor x_cpu = x.cpu();
  expect_error([&] { call(x_cpu, z, cs, ss, p.conv_w, p.Wx, p.Wdt, p.dt_bias, p.A); },
               "mamba_decode_core: x must be a CUDA tensor");
  Tensor x_h = x.to(torch::kHalf);
  expect_error([&] { call(x_h, z, cs, ss, p.conv_w, p.Wx, p.Wdt, p.dt_bias, p.A); },
               "mamba_decode_core: x must be float32 or bfloat16");
  // Sizes the kernel does not take: the state kernel holds its rows' R + 2N x_proj outputs
  // in shared memory; 2 rows x 60,032 fp32 (480 KB) do not fit. supports() says so and the
  // call names the limit. (Any E fits: kernel 1 splits the channels over its blocks.)
  const StepProblem big(2, 64, 16, 4, 60000, torch::kFloat32, true, 10);
  const Tensor bxz = big.xz();
  const Tensor bx = bxz.narrow(1, 0, big.E), bz = bxz.narrow(1, big.E, big.E);
  EXPECT_FALSE(cuda_ops::mamba_decode_core_supports(bx, 16, 4, 60000));
  EXPECT_TRUE(cuda_ops::mamba_decode_core_supports(bx, 16, 4, 4000));
  EXPECT_TRUE(cuda_ops::mamba_decode_core_supports(x, 16, 4, 4));
  const Tensor wide = torch::randn({8, 40000}, x.options());  // 8 rows x E = 40000: fine now
  EXPECT_TRUE(cuda_ops::mamba_decode_core_supports(wide, 16, 4, 4));
  Tensor bcs = big.conv_state.clone(), bss = big.ssm_state.clone();
  expect_error([&] {
    cuda_ops::mamba_decode_core(bx, bz, bcs, bss, big.conv_w, big.conv_b, big.Wx, big.Wdt,
                                big.dt_bias, big.A, big.D);
  }, "do not fit the kernel");
}

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

// Experimental (overlap_launches: programmatic dependent launch captured as graph edges).
// Last in the file: a runtime that cannot capture it fails here, after everything else ran.
TEST(FusedStepRuns, ZOverlapLaunchesReplayFromACudaGraph) {
  HYLAB_REQUIRE_GPU();
  expect_graph_replay_matches_eager(/*overlap=*/true);
}

}  // namespace
}  // namespace hylab::testing
