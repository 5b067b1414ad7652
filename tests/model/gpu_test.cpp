// The model on CUDA (LibTorch 2.x): scaled_dot_product_attention paths, bf16 autocast, the
// inference cache, checkpoints across devices, and (when built) our kernels against the
// reference. Label gpu; built only with a CUDA LibTorch.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "model/accounting.h"
#include "model/checkpoint.h"
#include "model/compat.h"
#include "model/decoder.h"
#include "model/generate.h"
#include "model/gpt.h"
#include "model/ops.h"
#include "model/reference_ops.h"
#include "tests/model/test_files.h"
#include "tests/model/test_util.h"

namespace hylab {
namespace {

using testing::example_patterns;
using testing::tiny_config;
using testing::tiny_run_config;

class Gpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  }
};

GPT perturbed(const GPTConfig& cfg, int seed) {
  torch::manual_seed(seed);
  GPT model(cfg);
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.add_(torch::randn_like(p) * 0.05);
  return model;
}

double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kCPU, torch::kDouble) - b.to(torch::kCPU, torch::kDouble)).abs().max().item<double>();
}

TEST_F(Gpu, SdpaMatchesTheDefinition) {
  torch::manual_seed(1);
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    for (auto [H, Hkv, Tq, Tk] : std::vector<std::array<int64_t, 4>>{
             {4, 4, 64, 64}, {4, 2, 64, 64}, {4, 1, 1, 70}, {4, 2, 13, 70}}) {
      auto o = torch::TensorOptions().device(torch::kCUDA).dtype(dtype);
      auto q = torch::randn({2, H, Tq, 64}, o), k = torch::randn({2, Hkv, Tk, 64}, o),
           v = torch::randn({2, Hkv, Tk, 64}, o);
      auto got = compat::causal_attention(q, k, v, Tk - Tq);
      const double tol = dtype == torch::kFloat ? 2e-3 : 3e-2;  // TF32/flash accumulate differently
      EXPECT_LT(max_diff(got, testing::naive_attention(q, k, v, Tk - Tq)), tol)
          << c10::toString(dtype) << " H=" << H << " Hkv=" << Hkv << " Tq=" << Tq << " Tk=" << Tk;
    }
  }
}

TEST_F(Gpu, ReferenceOpsOnCudaMatchCpu) {
  torch::manual_seed(2);
  const int64_t B = 2, E = 32, T = 40, N = 16;
  auto u = torch::randn({B, E, T}), delta = torch::randn({B, E, T}) * 0.5, A = -torch::rand({E, N}) - 0.1;
  auto Bm = torch::randn({B, N, T}), Cm = torch::randn({B, N, T}), D = torch::randn({E}), z = torch::randn({B, E, T});
  auto bias = torch::randn({E}) - 2;
  auto c = [](const torch::Tensor& t) { return t.to(torch::kCUDA); };
  auto [y_cpu, s_cpu] = ref::selective_scan(u, delta, A, Bm, Cm, D, z, bias, true);
  auto [y_gpu, s_gpu] = ref::selective_scan(c(u), c(delta), c(A), c(Bm), c(Cm), c(D), c(z), c(bias), true);
  EXPECT_LT(max_diff(y_cpu, y_gpu), 1e-4);
  EXPECT_LT(max_diff(s_cpu, s_gpu), 1e-4);
  auto w = torch::randn({E, 4}), b = torch::randn({E});
  EXPECT_LT(max_diff(ref::causal_conv1d(u, w, b, true), ref::causal_conv1d(c(u), c(w), c(b), true)), 1e-5);
}

TEST_F(Gpu, ForwardMatchesCpuAndDecodeMatchesForwardFp32) {
  for (const auto& pattern : example_patterns()) {
    GPT model = perturbed(tiny_config(pattern), 3);
    auto idx = torch::randint(100, {2, 24}, torch::kLong);
    torch::Tensor cpu_logits;
    {
      torch::NoGradGuard no_grad;
      cpu_logits = model->forward(idx);
    }
    model->to(torch::kCUDA);
    model->set_use_kernels(false);
    auto idx_gpu = idx.to(torch::kCUDA);
    torch::NoGradGuard no_grad;
    auto full = model->forward(idx_gpu);
    EXPECT_LT(max_diff(full, cpu_logits), 2e-3) << pattern;  // TF32 matmuls may differ slightly
    auto cache = model->make_cache(2, 24);
    std::vector<torch::Tensor> parts;
    int64_t pos = 0;
    for (int64_t c : {9, 1, 1, 5, 1, 7}) {
      parts.push_back(model->forward_step(idx_gpu.narrow(1, pos, c), cache));
      pos += c;
    }
    EXPECT_LT(max_diff(torch::cat(parts, 1), full), 2e-3) << pattern;
  }
}

TEST_F(Gpu, AutocastBf16TrainingStepAndDecode) {
  for (const std::string pattern : {"TMTM", "MTTM"}) {
    GPT model = perturbed(tiny_config(pattern, {{"mamba_use_mlp", "true"}}), 4);
    model->to(torch::kCUDA);
    auto idx = torch::randint(100, {4, 32}, torch::kLong).to(torch::kCUDA);
    auto targets = torch::randint(100, {4, 32}, torch::kLong).to(torch::kCUDA);
    float fp32_loss;
    {
      torch::NoGradGuard no_grad;
      fp32_loss = model->loss(idx, targets).item<float>();
    }
    torch::Tensor loss;
    {
      compat::AutocastGuard autocast(true);
      loss = model->loss(idx, targets);
      EXPECT_EQ(model->forward(idx).scalar_type(), torch::kFloat);  // logits stay fp32
    }
    EXPECT_NEAR(loss.item<float>(), fp32_loss, 0.03 * fp32_loss) << pattern;
    loss.backward();
    for (const auto& item : model->named_parameters()) {
      EXPECT_EQ(item.value().scalar_type(), torch::kFloat) << item.key();
      ASSERT_TRUE(item.value().grad().defined()) << item.key();
      EXPECT_EQ(item.value().grad().scalar_type(), torch::kFloat) << item.key();
      EXPECT_TRUE(torch::isfinite(item.value().grad()).all().item<bool>()) << pattern << " " << item.key();
    }
    // Decoding under autocast stays close to the fp32 forward.
    torch::NoGradGuard no_grad;
    auto full = model->forward(idx);
    compat::AutocastGuard autocast(true);
    auto cache = model->make_cache(4, 32);
    auto a = model->forward_step(idx.narrow(1, 0, 20), cache);
    std::vector<torch::Tensor> parts = {a};
    for (int64_t t = 20; t < 32; ++t) parts.push_back(model->forward_step(idx.narrow(1, t, 1), cache));
    EXPECT_LT(max_diff(torch::cat(parts, 1), full), 0.15) << pattern;
  }
  // The guard restores the previous state.
#if HYLAB_TORCH_AT_LEAST(2, 4)
  EXPECT_FALSE(at::autocast::is_autocast_enabled(at::kCUDA));
#endif
}

TEST_F(Gpu, CheckpointFromCudaLoadsOnCpu) {
  RunConfig r = tiny_run_config("TMMT");
  GPT model = perturbed(gpt_config(r), 5);
  model->to(torch::kCUDA);
  const std::string root = testing::make_temp_dir("gpu_ckpt"), dir = testing::join(root, "step_1");
  const nlohmann::json meta = {{"config", nlohmann::json::parse(config_to_json(r))}};
  save_checkpoint(dir, *model, {{"m", torch::ones({3}, torch::kCUDA)}}, meta);
  Checkpoint info;
  GPT loaded = load_model(dir, torch::kCPU, &info);
  EXPECT_TRUE(info.extra["m"].device().is_cpu());
  auto a = model->named_parameters(), b = loaded->named_parameters();
  for (const auto& item : a) EXPECT_TRUE(torch::equal(item.value().cpu(), b[item.key()])) << item.key();
  if (const char* keep = std::getenv("HYLAB_KEEP_CKPT")) {  // for cross-version checks by hand
    save_checkpoint(keep, *model, {}, meta);
  }
  testing::remove_tree(root);
}

TEST_F(Gpu, KernelsMatchTheReferenceInTheModel) {
  if (!ops::have_cuda_kernels()) GTEST_SKIP() << "this build has no CUDA kernels";
  for (const std::string pattern : {"MMMM", "TMTM"}) {
    GPT model = perturbed(tiny_config(pattern, {{"max_seq_len", "128"}}), 6);
    model->to(torch::kCUDA);
    auto idx = torch::randint(100, {2, 128}, torch::kLong).to(torch::kCUDA);
    auto targets = torch::randint(100, {2, 128}, torch::kLong).to(torch::kCUDA);
    std::map<std::string, torch::Tensor> grads[2];
    torch::Tensor logits[2];
    for (int k = 0; k < 2; ++k) {
      model->set_use_kernels(k == 1);
      model->zero_grad();
      logits[k] = model->forward(idx).detach();
      model->loss(idx, targets).backward();
      for (const auto& item : model->named_parameters()) grads[k][item.key()] = item.value().grad().clone();
    }
    EXPECT_LT(max_diff(logits[0], logits[1]), 2e-3) << pattern;
    for (const auto& [name, g] : grads[0]) {
      const double scale = g.abs().max().item<double>() + 1e-6;
      EXPECT_LT(max_diff(g, grads[1][name]) / scale, 1e-2) << pattern << " " << name;
    }
    // Decoding with kernels equals the full forward with kernels.
    torch::NoGradGuard no_grad;
    auto cache = model->make_cache(2, 128);
    std::vector<torch::Tensor> parts = {model->forward_step(idx.narrow(1, 0, 100), cache)};
    for (int64_t t = 100; t < 128; ++t) parts.push_back(model->forward_step(idx.narrow(1, t, 1), cache));
    EXPECT_LT(max_diff(torch::cat(parts, 1), logits[1]), 2e-3) << pattern;
  }
}

// Names of every autograd node reachable from t's grad_fn.
std::set<std::string> graph_node_names(const torch::Tensor& t) {
  std::set<std::string> names;
  std::set<const torch::autograd::Node*> seen;
  std::vector<std::shared_ptr<torch::autograd::Node>> todo = {t.grad_fn()};
  while (!todo.empty()) {
    auto node = todo.back();
    todo.pop_back();
    if (!node || !seen.insert(node.get()).second) continue;
    names.insert(node->name());
    for (const auto& edge : node->next_edges()) todo.push_back(edge.function);
  }
  return names;
}

bool has_node(const std::set<std::string>& names, const std::string& part) {
  for (const auto& n : names) {
    if (n.find(part) != std::string::npos) return true;
  }
  return false;
}

// The fused Transformer block (fused_block: true, kernels/fused_block) against the unfused
// one (fused_block: false) in the same model weights: logits, loss and every parameter
// gradient, fp32 and bf16 autocast, head dims 16 (GQA 4:2) and 128 (MHA), odd T, a hybrid
// pattern; and the fused graph really holds the fused ops (the unfused one none of them).
TEST_F(Gpu, FusedBlockMatchesTheUnfusedBlock) {
  if (!ops::have_cuda_kernels()) GTEST_SKIP() << "this build has no CUDA kernels";
  struct Case {
    std::string pattern;
    std::vector<std::pair<std::string, std::string>> overrides;
    int64_t T;
  };
  const std::vector<Case> cases = {
      {"TTTT", {{"max_seq_len", "67"}}, 67},
      {"TMTM", {{"max_seq_len", "64"}}, 61},
      {"TT", {{"max_seq_len", "33"}, {"n_embd", "256"}, {"n_head", "2"}, {"n_kv_head", "2"}}, 33}};
  for (const auto& c : cases) {
    for (bool bf16 : {false, true}) {
      const std::string what = c.pattern + " T=" + std::to_string(c.T) + (bf16 ? " bf16" : " fp32");
      torch::manual_seed(21);
      auto idx = torch::randint(100, {3, c.T}, torch::kLong).to(torch::kCUDA);
      auto targets = torch::randint(100, {3, c.T}, torch::kLong).to(torch::kCUDA);
      std::map<std::string, torch::Tensor> grads[2];
      torch::Tensor logits[2];
      double loss[2];
      for (int k = 0; k < 2; ++k) {
        GPTConfig cfg = tiny_config(c.pattern, c.overrides);
        cfg.fused_block = (k == 1);
        GPT model = perturbed(cfg, 8);  // same seed: the same weights in both
        model->to(torch::kCUDA);
        compat::AutocastGuard autocast(bf16);
        logits[k] = model->forward(idx).detach().to(torch::kFloat);
        auto l = model->loss(idx, targets);
        const auto names = graph_node_names(l);
        for (const char* op : {"AddRmsNormFn", "RmsNormFn", "RopeQkNormFn", "ReluSquareFn"}) {
          EXPECT_EQ(has_node(names, op), k == 1) << what << " " << op;
        }
        loss[k] = l.item<double>();
        l.backward();
        for (const auto& item : model->named_parameters()) {
          ASSERT_TRUE(item.value().grad().defined()) << what << " " << item.key();
          grads[k][item.key()] = item.value().grad().to(torch::kDouble);
        }
      }
      // bf16: both paths round differently (the unfused one rounds the rotation's products,
      // the fused one only its output), so they agree to bf16 noise, not bits.
      const double logit_tol = bf16 ? 0.1 : 2e-3, loss_tol = bf16 ? 2e-2 : 1e-4,
                   grad_tol = bf16 ? 8e-2 : 1e-3;
      EXPECT_LT(max_diff(logits[0], logits[1]), logit_tol) << what;
      EXPECT_NEAR(loss[0], loss[1], loss_tol * std::abs(loss[0])) << what;
      double worst = 0;
      for (const auto& [name, g] : grads[0]) {
        const double rel = (g - grads[1][name]).norm().item<double>() / (g.norm().item<double>() + 1e-12);
        worst = std::max(worst, rel);
        EXPECT_LT(rel, grad_tol) << what << " " << name;
      }
      std::printf("  %s: max |logit diff| %.3g, loss %.6f vs %.6f, worst grad rel-L2 %.3g\n",
                  what.c_str(), max_diff(logits[0], logits[1]), loss[0], loss[1], worst);
    }
  }
}

// The fused soft-capped cross-entropy against the reference chain in fp64: per-row losses and
// the gradient, bf16 and fp32, with and without the cap, ignored rows, a width past the vocab
// (padded vocab), the 16-byte path (width % 8 == 0) and the scalar one, and a strided input.
TEST_F(Gpu, SoftcapCrossEntropyKernelMatchesTheReference) {
  if (!ops::have_cuda_kernels()) GTEST_SKIP() << "this build has no CUDA kernels";
  struct Case { int64_t rows, width, vocab; double cap; torch::Dtype dtype; bool strided; };
  const Case cases[] = {
      {300, 1040, 1000, 15.0, torch::kBFloat16, false}, {300, 1040, 1000, 0.0, torch::kBFloat16, false},
      {257, 1001, 999, 15.0, torch::kFloat32, false},   {64, 32768, 32768, 15.0, torch::kBFloat16, false},
      {64, 32768, 32768, 30.0, torch::kFloat32, false}, {100, 520, 512, 15.0, torch::kBFloat16, true},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message() << c.rows << "x" << c.width << " vocab " << c.vocab << " cap "
                                    << c.cap << " " << c10::toString(c.dtype) << (c.strided ? " strided" : ""));
    torch::manual_seed(11);
    auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(c.dtype);
    torch::Tensor base = (torch::randn({c.rows, c.width + (c.strided ? 8 : 0)}) * 6).to(opts);
    torch::Tensor x = (c.strided ? base.narrow(1, 0, c.width) : base).detach().requires_grad_(true);
    torch::Tensor t = torch::randint(c.vocab, {c.rows}, torch::kLong);
    t.index_put_({torch::arange(0, c.rows, 7)}, -1);  // every 7th row ignored
    t = t.to(torch::kCUDA);
    torch::Tensor w = torch::rand({c.rows}).to(torch::kCUDA);  // upstream gradient per row

    torch::Tensor loss = ops::softcap_cross_entropy(x, t, c.vocab, c.cap, /*use_kernels=*/true);
    (loss * w).sum().backward();
    torch::Tensor x64 = x.detach().to(torch::kDouble).requires_grad_(true);
    torch::Tensor ref = ref::softcap_cross_entropy(x64, t, c.vocab, c.cap);
    (ref * w.to(torch::kDouble)).sum().backward();

    EXPECT_EQ(loss.scalar_type(), torch::kFloat32);
    EXPECT_LT(max_diff(loss, ref), 2e-4 * std::log(static_cast<double>(c.vocab)));
    // Gradients of one row sum to ~0 and are at most w; bf16 output rounding is 2^-8 relative.
    const double tol = c.dtype == torch::kBFloat16 ? 4e-3 : 2e-5;
    EXPECT_LT(max_diff(x.grad(), x64.grad()), tol);
    if (c.width > c.vocab) {  // the padded columns get no gradient
      EXPECT_EQ(x.grad().narrow(1, c.vocab, c.width - c.vocab).abs().max().item<double>(), 0.0);
    }

    // Deterministic: a second run gives the same bits.
    torch::Tensor g1 = x.grad().clone();
    x.mutable_grad().zero_();
    (ops::softcap_cross_entropy(x, t, c.vocab, c.cap, true) * w).sum().backward();
    EXPECT_TRUE(torch::equal(g1, x.grad()));
  }
  // Errors name the argument.
  auto x = torch::randn({4, 16}, torch::kCUDA);
  auto t = torch::zeros({3}, torch::dtype(torch::kLong).device(torch::kCUDA));
  EXPECT_THROW(ops::softcap_cross_entropy(x, t, 16, 15.0), c10::Error);
  EXPECT_THROW(ops::softcap_cross_entropy(x, t.narrow(0, 0, 3).repeat({2}).narrow(0, 0, 4), 17, 15.0),
               c10::Error);
}

// Not a check: a timing line for the report (d12-sized, bf16, reference ops for Mamba).
TEST_F(Gpu, TimingLine) {
  for (const std::string pattern : {"T*12", "(T,M)*6"}) {
    RunConfig c;
    c.set_depth(12);
    c.set_vocab_size(32768);
    c.set_max_seq_len(1024);
    apply_override(&c, "block_pattern", pattern);
    GPT model(gpt_config(resolve_config(c)));
    model->to(torch::kCUDA);
    auto idx = torch::randint(32768, {8, 1024}, torch::kLong).to(torch::kCUDA);
    auto run = [&] {
      compat::AutocastGuard autocast(true);
      model->loss(idx, idx).backward();
    };
    run();
    torch::cuda::synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 3; ++i) run();
    torch::cuda::synchronize();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 3;
    std::printf("timing: d12 %s B=8 T=1024 bf16 fwd+bwd %.1f ms/step, %.0f tok/s (kernels %s)\n",
                pattern.c_str(), s * 1e3, 8 * 1024 / s, ops::have_cuda_kernels() ? "on" : "off");
  }
}


// ---- the inference engine (model/decoder.h) ----

struct Decoded {
  torch::Tensor tokens;  // (B, n) int64, CPU
  torch::Tensor logits;  // (B, n, V) fp32, CPU: the logits each token was chosen from
};

// Prefill `prompt`, then n greedy tokens, or the tokens of `forced` (B, n) when given
// (teacher forcing: the same inputs for every path under comparison).
Decoded decode_with(Decoder& dec, const torch::Tensor& prompt, int64_t n,
                    const torch::Tensor& forced = {}) {
  const int64_t B = prompt.size(0), P = prompt.size(1);
  dec.reset(B, P + n);
  auto logits = dec.prefill(prompt);  // (B, V)
  std::vector<torch::Tensor> toks, lg;
  for (int64_t i = 0; i < n; ++i) {
    lg.push_back(logits.to(torch::kCPU, torch::kFloat).clone());
    auto next = forced.defined() ? forced.select(1, i).to(logits.device()) : logits.argmax(-1);
    toks.push_back(next.cpu());
    if (i + 1 < n) logits = dec.step(next);
  }
  return {torch::stack(toks, 1), torch::stack(lg, 1)};
}

// Greedy agreement in bf16: where `tokens` differ from the argmax of `logits`, the two must be
// a near-tie (gap below tie_tol). Returns the number of exact matches.
int64_t expect_greedy_agrees(const torch::Tensor& tokens, const torch::Tensor& logits,
                             double tie_tol, const std::string& what) {
  auto best = logits.argmax(-1);  // (B, n)
  int64_t same = 0;
  for (int64_t b = 0; b < tokens.size(0); ++b) {
    for (int64_t i = 0; i < tokens.size(1); ++i) {
      const int64_t t = tokens[b][i].item<int64_t>(), a = best[b][i].item<int64_t>();
      if (t == a) {
        ++same;
        continue;
      }
      const double gap = (logits[b][i][a] - logits[b][i][t]).item<double>();
      EXPECT_LT(gap, tie_tol) << what << ": row " << b << " step " << i << " picked " << t
                              << " where the argmax " << a << " is ahead by " << gap;
    }
  }
  return same;
}

// Graph decode == eager decode == full forward, bf16 autocast, all-T / all-M / hybrid, batch 1
// and 8: the graph path (bf16 copy, decode_step, split-K attention kernel) decodes greedily;
// the eager engine (forward_step on the model itself) and the full forward are fed the same
// tokens. Logits agree within bf16 noise, tokens agree except at near-ties (and nearly all
// are exact); two graph runs are identical (the replay restarts cleanly after reset).
TEST_F(Gpu, DecoderGraphEqualsEagerEqualsForward) {
  constexpr int64_t kPrompt = 13, kNew = 24;
  constexpr double kLogitTol = 0.1, kTieTol = 0.1;
  for (const std::string pattern : {"TTTT", "MMMM", "TMMT"}) {
    GPT model = perturbed(tiny_config(pattern, {{"max_seq_len", "64"}}), 11);
    model->to(torch::kCUDA);
    model->eval();
    for (int64_t B : {1, 8}) {
      const std::string what = pattern + " B=" + std::to_string(B);
      auto prompt = torch::randint(100, {B, kPrompt}, torch::kLong).to(torch::kCUDA);
      Decoder graph(*model, DecoderOptions{/*autocast=*/true, /*cuda_graphs=*/true});
      Decoder eager(*model, DecoderOptions{/*autocast=*/true, /*cuda_graphs=*/false});
      const Decoded g = decode_with(graph, prompt, kNew);
      EXPECT_EQ(graph.graphed(), HYLAB_HAS_CUDA_GRAPHS == 1) << what;
      EXPECT_FALSE(eager.graphed());
      const Decoded g2 = decode_with(graph, prompt, kNew);
      EXPECT_TRUE(torch::equal(g.tokens, g2.tokens)) << what;
      EXPECT_TRUE(torch::equal(g.logits, g2.logits)) << what;
      const Decoded e = decode_with(eager, prompt, kNew, g.tokens);
      EXPECT_LT(max_diff(g.logits, e.logits), kLogitTol) << what;
      // The full forward over prompt + the decoded tokens (all but the last).
      torch::Tensor full;
      {
        torch::NoGradGuard no_grad;
        compat::AutocastGuard autocast(true);
        auto seq = torch::cat({prompt, g.tokens.narrow(1, 0, kNew - 1).to(torch::kCUDA)}, 1);
        full = model->forward(seq).narrow(1, kPrompt - 1, kNew).cpu();  // (B, kNew, V)
      }
      EXPECT_LT(max_diff(g.logits, full), kLogitTol) << what;
      const int64_t n = B * kNew;
      EXPECT_GE(expect_greedy_agrees(g.tokens, e.logits, kTieTol, what + " graph vs eager"), n * 9 / 10);
      EXPECT_GE(expect_greedy_agrees(g.tokens, full, kTieTol, what + " graph vs forward"), n * 9 / 10);
      // The eager engine decoding freely agrees with the full forward over its own tokens too
      // (free-running paths part ways after a near-tie, so each is checked on its own tokens).
      const Decoded ef = decode_with(eager, prompt, kNew);
      torch::Tensor full_e;
      {
        torch::NoGradGuard no_grad;
        compat::AutocastGuard autocast(true);
        auto seq = torch::cat({prompt, ef.tokens.narrow(1, 0, kNew - 1).to(torch::kCUDA)}, 1);
        full_e = model->forward(seq).narrow(1, kPrompt - 1, kNew).cpu();
      }
      EXPECT_LT(max_diff(ef.logits, full_e), kLogitTol) << what;
      EXPECT_GE(expect_greedy_agrees(ef.tokens, full_e, kTieTol, what + " eager vs forward"), n * 9 / 10);
    }
  }
}

// The Mamba decode step fused (conv + x_proj, dt_proj + state update: kernels/decode/
// mamba_step.h) and unfused (the four ops) give the same logits on the eager engine, fed the
// same tokens: bf16 autocast (logits within bf16 noise, greedy tokens agree but for near-ties)
// and fp32 (the projections' sums differ only in order), all-M and hybrid, batch 1, 3 and 8.
TEST_F(Gpu, FusedMambaDecodeMatchesUnfused) {
  if (!ops::have_cuda_kernels()) GTEST_SKIP() << "this build has no CUDA kernels";
  constexpr int64_t kPrompt = 9, kNew = 16;
  for (const bool autocast : {true, false}) {
    const double tol = autocast ? 0.1 : 1e-3;
    for (const std::string pattern : {"MMMM", "TMMT"}) {
      GPT model = perturbed(tiny_config(pattern, {{"max_seq_len", "64"}}), 21);
      model->to(torch::kCUDA);
      model->eval();
      auto set_fused = [&](bool on) {
        for (int i = 0; i < model->config().n_layer; ++i) model->block(i)->mixer().set_fused_decode(on);
      };
      for (int64_t B : {1, 3, 8}) {
        const std::string what = pattern + " B=" + std::to_string(B) + (autocast ? " bf16" : " fp32");
        auto prompt = torch::randint(100, {B, kPrompt}, torch::kLong).to(torch::kCUDA);
        Decoder eager(*model, DecoderOptions{autocast, /*cuda_graphs=*/false});
        set_fused(true);
        const Decoded f = decode_with(eager, prompt, kNew);
        set_fused(false);
        const Decoded u = decode_with(eager, prompt, kNew, f.tokens);
        set_fused(true);
        EXPECT_LT(max_diff(f.logits, u.logits), tol) << what;
        EXPECT_GE(expect_greedy_agrees(f.tokens, u.logits, tol, what + " fused vs unfused"),
                  B * kNew * 9 / 10);
      }
    }
  }
}

// The bf16 cache CUDA autocast gets is what the accounting says, and what the graph path holds.
TEST_F(Gpu, CachesAreBf16UnderAutocast) {
  GPT model = perturbed(tiny_config("TMTM"), 12);
  model->to(torch::kCUDA);
  compat::AutocastGuard autocast(true);
  EXPECT_EQ(model->compute_dtype(), torch::kBFloat16);
  auto cache = model->make_cache(2, 50);
  EXPECT_EQ(cache.layers[0].k.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(cache.layers[1].conv_state.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(cache.layers[1].ssm_state.scalar_type(), torch::kFloat);
  EXPECT_EQ(cache.bytes(), 2 * cache_bytes_per_sequence(model->config(), 50, 2));
  Decoder dec(*model, DecoderOptions{true, true});
  dec.reset(2, 50);
  EXPECT_EQ(dec.cache().bytes(), cache.bytes());
}

// N samples of one prompt decoded as a batch on the graph path: greedy rows are identical,
// sampled ones differ.
TEST_F(Gpu, GenerateSamplesMatchesSingleSamples) {
  GPT model = perturbed(tiny_config("TMMT"), 13);
  model->to(torch::kCUDA);
  SampleOptions opts;
  opts.max_tokens = 12;
  opts.temperature = 0;  // greedy: every sample the same, and equal to generate()
  opts.autocast = true;
  opts.cuda_graphs = true;
  Decoder dec(*model, DecoderOptions{true, true});
  const auto many = generate_samples(dec, {3, 4, 5}, opts, 4);
  ASSERT_EQ(many.size(), 4u);
  EXPECT_EQ(many[0].size(), 12u);
  for (const auto& s : many) EXPECT_EQ(s, many[0]);  // one batch: rows computed alike
  opts.temperature = 50;  // flat: samples differ
  const auto hot = generate_samples(dec, {3, 4, 5}, opts, 3);
  EXPECT_NE(hot[0], hot[1]);
}

}  // namespace
}  // namespace hylab
