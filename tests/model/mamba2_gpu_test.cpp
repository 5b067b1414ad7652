// The Mamba-2 (M2) block on CUDA, fp32 and bf16 autocast: the chunked SSD and the whole mixer
// (forward and every gradient) against the fp64 definitions of tests/model/mamba2_oracle.h,
// decode == forward in a hybrid, the Decoder's CUDA graph with M2 layers, and a hybrid that
// trains under autocast. Label gpu; built only with a CUDA LibTorch, skipped without a device.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "model/compat.h"
#include "model/decoder.h"
#include "model/gpt.h"
#include "model/mamba2.h"
#include "tests/model/mamba2_oracle.h"
#include "tests/model/test_util.h"

namespace hylab {
namespace {

using testing::mamba2_by_definition;
using testing::ssd_recurrence;
using testing::tiny_config;

const std::vector<std::pair<std::string, std::string>> kM2 = {{"mamba2_headdim", "16"},
                                                              {"mamba2_ngroups", "2"},
                                                              {"mamba2_d_state", "64"},
                                                              {"mamba2_chunk_size", "16"}};

class M2Gpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  }
};

double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kCPU, torch::kDouble) - b.to(torch::kCPU, torch::kDouble))
      .abs()
      .max()
      .item<double>();
}
double max_abs(const torch::Tensor& a) { return a.abs().max().item<double>(); }

TEST_F(M2Gpu, SsdChunkedMatchesTheFp64RecurrenceFp32AndBf16) {
  torch::manual_seed(1);
  const int64_t B = 2, H = 8, P = 16, G = 2, N = 64;
  for (int64_t T : {1, 7, 37, 130}) {
    auto x = torch::randn({B, T, H, P}, torch::kDouble);
    auto dt = torch::rand({B, T, H}, torch::kDouble) * 0.2 + 0.01;
    auto A = -torch::rand({H}, torch::kDouble) * 8 - 1;
    auto Bm = torch::randn({B, T, G, N}, torch::kDouble),
         Cm = torch::randn({B, T, G, N}, torch::kDouble);
    auto S0 = torch::randn({B, H, P, N}, torch::kDouble);
    auto [y_ref, S_ref] = ssd_recurrence(x, dt, A, Bm, Cm, S0);
    const double scale = max_abs(y_ref);
    auto cu = [](const torch::Tensor& t, torch::Dtype d) { return t.to(torch::kCUDA, d); };
    auto [y, S] =
        ssd_chunked(cu(x, torch::kFloat), cu(dt, torch::kFloat), cu(A, torch::kFloat),
                    cu(Bm, torch::kFloat), cu(Cm, torch::kFloat), 16, cu(S0, torch::kFloat));
    EXPECT_LT(max_diff(y, y_ref), 2e-3 * scale) << "fp32 T " << T;  // TF32 matmuls
    EXPECT_LT(max_diff(S, S_ref), 2e-3 * max_abs(S_ref)) << "fp32 T " << T;
    compat::AutocastGuard autocast(true);  // as in training: the products in bf16
    auto [yb, Sb] =
        ssd_chunked(cu(x, torch::kBFloat16), cu(dt, torch::kFloat), cu(A, torch::kFloat),
                    cu(Bm, torch::kBFloat16), cu(Cm, torch::kBFloat16), 16, cu(S0, torch::kFloat));
    EXPECT_EQ(Sb.scalar_type(), torch::kFloat);  // states stay fp32
    EXPECT_LT(max_diff(yb, y_ref), 3e-2 * scale) << "bf16 T " << T;
  }
}

TEST_F(M2Gpu, MixerForwardAndEveryGradientMatchTheFp64Definition) {
  torch::manual_seed(2);
  GPTConfig g = tiny_config("M2", kM2);
  Mamba2Mixer m(g);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : m->parameters()) p.add_(torch::randn_like(p) * 0.1);
  }
  m->to(torch::kCUDA);
  for (bool bf16 : {false, true}) {
    for (int64_t T : {1, 37}) {
      const std::string what = std::string(bf16 ? "bf16" : "fp32") + " T " + std::to_string(T);
      auto u = torch::randn({2, T, g.n_embd}, torch::kFloat).to(torch::kCUDA).requires_grad_(true);
      auto w = torch::randn({2, T, g.n_embd}, torch::kFloat).to(torch::kCUDA);
      std::vector<torch::Tensor> inputs = m->parameters();
      inputs.push_back(u);
      auto want_out = mamba2_by_definition(*m, g, u);
      auto want =
          torch::autograd::grad({(want_out * w.to(torch::kCPU, torch::kDouble)).sum()}, inputs);
      torch::Tensor out;
      {
        compat::AutocastGuard autocast(bf16);
        out = m->forward(bf16 ? u.to(torch::kBFloat16) : u);
      }
      const double tol = bf16 ? 5e-2 : 5e-3;
      EXPECT_LT(max_diff(out, want_out), tol * (1 + max_abs(want_out))) << what;
      auto got = torch::autograd::grad({(out.to(torch::kFloat) * w).sum()}, inputs);
      auto names = m->named_parameters();
      for (size_t i = 0; i < inputs.size(); ++i) {
        const std::string name = i < names.size() ? names[i].key() : "input";
        EXPECT_EQ(got[i].scalar_type(), torch::kFloat) << name;
        EXPECT_LT(max_diff(got[i], want[i]), tol * (1 + max_abs(want[i]))) << name << " " << what;
      }
    }
  }
}

GPT hybrid_on_cuda(int seed) {
  torch::manual_seed(seed);
  GPT model(tiny_config("T,M2,M,M2", kM2));
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.add_(torch::randn_like(p) * 0.05);
  model->to(torch::kCUDA);
  model->eval();
  return model;
}

TEST_F(M2Gpu, DecodeEqualsForwardFp32AndBf16) {
  GPT model = hybrid_on_cuda(3);
  auto idx = torch::randint(100, {2, 30}, torch::kLong).to(torch::kCUDA);
  torch::NoGradGuard no_grad;
  for (bool bf16 : {false, true}) {
    compat::AutocastGuard autocast(bf16);
    auto full = model->forward(idx);
    auto cache = model->make_cache(2, 30);
    std::vector<torch::Tensor> parts;
    int64_t pos = 0;
    for (int64_t c : {9, 1, 1, 5, 1, 13}) {
      parts.push_back(model->forward_step(idx.narrow(1, pos, c), cache));
      pos += c;
    }
    EXPECT_LT(max_diff(torch::cat(parts, 1), full), bf16 ? 0.15 : 2e-3) << (bf16 ? "bf16" : "fp32");
  }
}

TEST_F(M2Gpu, DecoderGraphWithM2EqualsEagerAndForward) {
  GPT model = hybrid_on_cuda(4);
  const int64_t B = 4, kPrompt = 11, kNew = 20;
  auto prompt = torch::randint(100, {B, kPrompt}, torch::kLong).to(torch::kCUDA);
  Decoder graph(*model, DecoderOptions{/*autocast=*/true, /*cuda_graphs=*/true});
  Decoder eager(*model, DecoderOptions{/*autocast=*/true, /*cuda_graphs=*/false});
  graph.reset(B, kPrompt + kNew);
  eager.reset(B, kPrompt + kNew);
  EXPECT_EQ(graph.graphed(), HYLAB_HAS_CUDA_GRAPHS == 1);
  auto lg = graph.prefill(prompt).clone(), le = eager.prefill(prompt).clone();
  std::vector<torch::Tensor> tokens;
  for (int64_t t = 0; t < kNew; ++t) {
    EXPECT_LT(max_diff(lg, le), 0.1) << "step " << t;
    auto next = lg.argmax(-1);  // (B)
    tokens.push_back(next.unsqueeze(1));
    lg = graph.step(next).clone();
    le = eager.step(next).clone();
  }
  // The full forward over prompt + tokens agrees with the graph's last logits.
  torch::NoGradGuard no_grad;
  compat::AutocastGuard autocast(true);
  auto seq = torch::cat({prompt, torch::cat(tokens, 1)}, 1);
  auto full = model->forward(seq).select(1, -1);
  EXPECT_LT(max_diff(lg, full), 0.1);
}

TEST_F(M2Gpu, HybridTrainsUnderAutocast) {
  torch::manual_seed(5);
  GPT model(tiny_config("T,M2,M,M2", kM2));
  model->to(torch::kCUDA);
  torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(3e-3).weight_decay(0));
  auto idx = torch::randint(100, {8, 64}, torch::kLong).to(torch::kCUDA);
  auto targets = torch::roll(idx, -1, 1);
  double first = 0, last = 0;
  for (int step = 0; step < 30; ++step) {
    opt.zero_grad();
    torch::Tensor loss;
    {
      compat::AutocastGuard autocast(true);
      loss = model->loss(idx, targets);
    }
    loss.backward();
    for (const auto& item : model->named_parameters()) {
      if (item.value().grad().defined()) {
        ASSERT_TRUE(torch::isfinite(item.value().grad()).all().item<bool>()) << item.key();
      }
    }
    opt.step();
    if (step == 0) first = loss.item<double>();
    last = loss.item<double>();
  }
  EXPECT_LT(last, 0.8 * first) << "first " << first << " last " << last;
}

}  // namespace
}  // namespace hylab
