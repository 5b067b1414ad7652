// Torch side of the trainer on tiny problems: Newton-Schulz, Muon and AdamW (loss falls,
// exact update rules, state round trip), clipping, parameter groups of a hybrid model,
// gradient bucketing, and validation bits per byte against a hand computation.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>

#include "common/check.h"
#include "common/run_config.h"
#include "model/gpt.h"
#include "trainer/dist.h"
#include "trainer/evaluate.h"
#include "trainer/optim.h"
#include "trainer/schedule.h"
#include "trainer/shard.h"

namespace hylab::trainer {
namespace {
namespace fs = std::filesystem;

RunConfig tiny_config(const std::string& pattern) {
  RunConfig c;
  c.set_n_embd(64);
  c.set_n_head(4);
  c.set_n_kv_head(2);
  c.set_vocab_size(100);
  c.set_max_seq_len(16);
  c.set_mamba_d_state(8);
  c.set_device("cpu");
  apply_override(&c, "block_pattern", pattern);
  return resolve_config(c);
}

TEST(NewtonSchulz, OrthogonalisesTallAndWideMatrices) {
  torch::manual_seed(0);
  for (auto shape : {std::vector<int64_t>{16, 48}, std::vector<int64_t>{48, 16}}) {
    const torch::Tensor G = torch::randn(shape);
    const torch::Tensor X = zeropower_via_newtonschulz5(G, 5, /*bf16=*/false);
    ASSERT_EQ(X.sizes(), G.sizes());
    // The quintic iteration maps every singular value into roughly [0.68, 1.13] (it trades
    // exactness for speed); the singular vectors are G's.
    const torch::Tensor s = std::get<1>(torch::svd(X));
    EXPECT_GT(s.min().item<double>(), 0.6);
    EXPECT_LT(s.max().item<double>(), 1.2);
    // Same direction as G: <X, G> > 0 and well aligned with U V^T.
    auto usv = torch::svd(G);
    const torch::Tensor uvt = torch::matmul(std::get<0>(usv), std::get<2>(usv).t());
    const double cos = (X * uvt).sum().item<double>() / (X.norm() * uvt.norm()).item<double>();
    EXPECT_GT(cos, 0.98);
  }
}

TEST(NewtonSchulz, AStackIsOrthogonalisedMatrixByMatrix) {
  torch::manual_seed(3);
  const torch::Tensor G = torch::randn({3, 24, 40}) * torch::tensor({1.0, 10.0, 0.1}).view({3, 1, 1});
  const torch::Tensor X = zeropower_via_newtonschulz5(G, 5, /*bf16=*/false);
  for (int64_t k = 0; k < 3; ++k) {
    EXPECT_TRUE(torch::allclose(X[k], zeropower_via_newtonschulz5(G[k], 5, false), 1e-5, 1e-6)) << k;
  }
  const torch::Tensor Xt = zeropower_via_newtonschulz5(G.transpose(1, 2), 5, false);  // tall
  EXPECT_TRUE(torch::allclose(Xt, X.transpose(1, 2), 1e-5, 1e-6));
}

// Matrices of one shape share a batched step; the result is that of one Muon per matrix.
TEST(Muon, SameShapeMatricesStepAsIfAlone) {
  torch::manual_seed(4);
  const std::vector<std::vector<int64_t>> shapes = {{8, 4}, {6, 10}, {8, 4}, {8, 4}};
  std::vector<torch::Tensor> together, alone;
  for (const auto& s : shapes) {
    together.push_back(torch::randn(s).requires_grad_(true));
    alone.push_back(together.back().detach().clone().requires_grad_(true));
  }
  Muon muon(together, 0.05, false);
  std::vector<std::unique_ptr<Muon>> singles;
  for (auto& p : alone) singles.push_back(std::make_unique<Muon>(std::vector<torch::Tensor>{p}, 0.05, false));
  for (int step = 0; step < 3; ++step) {
    for (size_t i = 0; i < shapes.size(); ++i) {
      const torch::Tensor g = torch::randn(shapes[i]);
      together[i].mutable_grad() = g.clone();
      alone[i].mutable_grad() = g.clone();
    }
    together[1].mutable_grad() = torch::Tensor();  // no gradient: skipped, like the others do
    alone[1].mutable_grad() = torch::Tensor();
    if (step == 1) {  // part of a shape group without a gradient
      together[2].mutable_grad() = torch::Tensor();
      alone[2].mutable_grad() = torch::Tensor();
    }
    muon.step();
    for (auto& m : singles) m->step();
  }
  for (size_t i = 0; i < shapes.size(); ++i) {
    EXPECT_TRUE(torch::allclose(together[i], alone[i], 1e-5, 1e-6)) << i;
  }
}

TEST(Muon, FitsALinearMap) {
  torch::manual_seed(1);
  const torch::Tensor X = torch::randn({32, 256});             // (in, samples)
  const torch::Tensor W_true = torch::randn({24, 32}) * 0.2;   // (out, in)
  const torch::Tensor Y = torch::matmul(W_true, X);
  torch::Tensor W = torch::zeros({24, 32}, torch::requires_grad());
  Muon muon({W}, /*lr=*/0.02, /*bf16=*/false);
  auto loss_of = [&] { return (torch::matmul(W, X) - Y).pow(2).mean(); };
  const double start = loss_of().item<double>();
  for (int i = 0; i < 200; ++i) {
    W.mutable_grad() = torch::Tensor();
    loss_of().backward();
    muon.set_momentum(muon_momentum(i));
    muon.step();
  }
  EXPECT_LT(loss_of().item<double>(), 0.05 * start);
}

TEST(Muon, FirstStepIsScaledOrthogonalisedGradient) {
  torch::manual_seed(2);
  torch::Tensor W = torch::zeros({8, 4}, torch::requires_grad());  // tall: scale sqrt(8/4)
  const torch::Tensor g = torch::randn({8, 4});
  W.mutable_grad() = g.clone();
  Muon muon({W}, 0.1, false);
  muon.set_momentum(0.9);
  muon.step();
  // buf = 0.1 g; nesterov: g' = lerp(g, buf, 0.9) = 0.19 g; NS is scale-invariant.
  const torch::Tensor expected = -0.1 * std::sqrt(2.0) * zeropower_via_newtonschulz5(0.19 * g, 5, false);
  EXPECT_TRUE(torch::allclose(W.detach(), expected, 1e-5, 1e-6));
}

TEST(AdamW, FirstStepMovesByLrAndDecaysWeights) {
  torch::Tensor p = torch::tensor({1.0f, -2.0f, 3.0f}, torch::requires_grad());
  torch::Tensor q = torch::tensor({4.0f}, torch::requires_grad());
  p.mutable_grad() = torch::tensor({0.5f, -0.1f, 2.0f});
  q.mutable_grad() = torch::zeros({1});
  AdamW opt({{"a", {p}, 0.01, 0.01, 0.0}, {"b", {q}, 0.1, 0.1, 0.5}}, 0.8, 0.95);
  opt.step();
  // Bias-corrected first step: m/sqrt(v) = sign(g), so p moves by lr per element.
  EXPECT_TRUE(torch::allclose(p.detach(), torch::tensor({0.99f, -1.99f, 2.99f}), 0, 1e-6));
  // Zero gradient: only decoupled weight decay, p *= 1 - lr * wd.
  EXPECT_FLOAT_EQ(q.item<float>(), 4.0f * (1 - 0.1 * 0.5));
}

TEST(AdamW, MinimisesAQuadratic) {
  torch::Tensor p = torch::full({10}, 5.0, torch::requires_grad());
  AdamW opt({{"p", {p}, 0.1, 0.1, 0.0}}, 0.9, 0.99);
  for (int i = 0; i < 300; ++i) {
    p.mutable_grad() = torch::Tensor();
    (p - 1.0).pow(2).sum().backward();
    opt.step();
  }
  EXPECT_TRUE(torch::allclose(p.detach(), torch::ones({10}), 0, 0.05));
}

TEST(Clip, GlobalNormIsCappedAndReported) {
  torch::Tensor a = torch::zeros({3}, torch::requires_grad());
  torch::Tensor b = torch::zeros({1}, torch::requires_grad());
  a.mutable_grad() = torch::tensor({3.0f, 0.0f, 0.0f});
  b.mutable_grad() = torch::tensor({4.0f});
  EXPECT_NEAR(clip_grad_norm({a, b}, 1.0), 5.0, 1e-6);
  EXPECT_NEAR(torch::cat({a.grad(), b.grad()}).norm().item<double>(), 1.0, 1e-5);
  EXPECT_NEAR(clip_grad_norm({a, b}, 10.0), 1.0, 1e-5);  // under the cap: unchanged
  EXPECT_NEAR(torch::cat({a.grad(), b.grad()}).norm().item<double>(), 1.0, 1e-5);
}

TEST(Optimizers, EveryParameterInOneGroupWithScaledLrs) {
  const RunConfig cfg = tiny_config("TM");
  torch::manual_seed(0);
  GPT model(gpt_config(cfg));
  Optimizers opt(*model, cfg, /*cuda=*/false);
  const auto named = model->named_parameters();
  EXPECT_EQ(opt.all_params().size(), named.size());
  std::set<const void*> seen;
  for (const auto& p : opt.all_params()) EXPECT_TRUE(seen.insert(p.unsafeGetTensorImpl()).second);
  for (const auto& p : opt.muon().params()) EXPECT_EQ(p.dim(), 2);
  const double scale = std::pow(64.0 / 768.0, -0.5);
  std::map<std::string, double> lr;
  for (const auto& g : opt.adamw().groups()) lr[g.name] = g.initial_lr;
  EXPECT_DOUBLE_EQ(lr.at("embedding"), cfg.embedding_lr() * scale);
  EXPECT_DOUBLE_EQ(lr.at("lm_head"), cfg.unembedding_lr() * scale);
  EXPECT_DOUBLE_EQ(lr.at("scalar"), cfg.scalar_lr() * scale);  // Mamba's A_log, D, ...
  opt.set_schedule(0.5, 0.9);
  EXPECT_DOUBLE_EQ(opt.muon().lr(), cfg.matrix_lr() * 0.5);
  for (const auto& g : opt.adamw().groups()) EXPECT_DOUBLE_EQ(g.lr, g.initial_lr * 0.5);
}

// Steps a model on a fixed batch; returns the loss before the step.
double train_step(GPTImpl& model, Optimizers& opt, const torch::Tensor& x, const torch::Tensor& y, int it) {
  opt.zero_grad();
  torch::Tensor loss = model.loss(x, y);
  loss.backward();
  clip_grad_norm(opt.all_params(), 1.0);
  opt.set_schedule(1.0, muon_momentum(it));
  opt.step();
  return loss.item<double>();
}

TEST(Optimizers, TinyHybridLossFallsAndStateRoundTripsBitExactly) {
  const RunConfig cfg = tiny_config("TMT");
  torch::manual_seed(0);
  GPT a(gpt_config(cfg));
  const torch::Tensor x = torch::randint(100, {4, 16}, torch::kLong);
  const torch::Tensor y = torch::roll(x, -1, 1);
  Optimizers oa(*a, cfg, false);
  double first = 0, last = 0;
  for (int i = 0; i < 15; ++i) {
    last = train_step(*a, oa, x, y, i);
    if (i == 0) first = last;
  }
  EXPECT_LT(last, 0.5 * first);  // memorising one batch

  // Copy weights and optimiser state into a second model; the next steps must agree bit for bit.
  torch::manual_seed(123);
  GPT b(gpt_config(cfg));
  {
    torch::NoGradGuard ng;
    auto pa = a->named_parameters();
    for (auto& kv : b->named_parameters()) kv.value().copy_(pa[kv.key()]);
  }
  Optimizers ob(*b, cfg, false);
  ob.load_state(oa.state());
  for (int i = 15; i < 18; ++i) {
    EXPECT_EQ(train_step(*a, oa, x, y, i), train_step(*b, ob, x, y, i)) << i;
  }
  auto pb = b->named_parameters();
  for (auto& kv : a->named_parameters()) EXPECT_TRUE(torch::equal(kv.value(), pb[kv.key()])) << kv.key();
  // A state from another model shape is refused with the parameter named.
  GPT other(gpt_config(tiny_config("TT")));
  Optimizers oo(*other, tiny_config("TT"), false);
  EXPECT_THROW(oo.load_state(oa.state()), Error);
}

TEST(Dist, GradientBucketsCoverEveryGradientOnce) {
  std::vector<torch::Tensor> params = {
      torch::zeros({3, 2}, torch::requires_grad()), torch::zeros({5}, torch::requires_grad()),
      torch::zeros({2}, torch::dtype(torch::kDouble).requires_grad(true)),
      torch::zeros({4}, torch::requires_grad()), torch::zeros({1}, torch::requires_grad())};
  for (size_t i = 0; i < params.size(); ++i) {
    params[i].mutable_grad() = torch::full_like(params[i], static_cast<double>(i + 1));
  }
  params[4].mutable_grad() = torch::Tensor();  // no gradient: skipped
  int buckets = 0;
  for_each_gradient_bucket(params, /*bucket_bytes=*/32, [&](torch::Tensor& flat) {
    ++buckets;
    flat.mul_(10);
  });
  EXPECT_GE(buckets, 3);  // the dtype change and the byte limit split the buckets
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_TRUE(torch::allclose(params[i].grad(), torch::full_like(params[i], 10.0 * (i + 1)))) << i;
  }
  EXPECT_FALSE(params[4].grad().defined());
}

TEST(Evaluate, BitsPerByteMatchesAHandComputation) {
  const fs::path dir = fs::temp_directory_path() / ("hylab_eval_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::vector<uint32_t> val(4 * 16 * 2 + 1);
  for (size_t i = 0; i < val.size(); ++i) val[i] = (i % 17 == 0) ? 1 : static_cast<uint32_t>(3 + (i * 7) % 90);
  write_shard((dir / "val_000000.bin").string(), val, 100);
  const RunConfig cfg = tiny_config("TM");
  torch::manual_seed(0);
  GPT model(gpt_config(cfg));
  // Token byte lengths: BOS (1) has 0 bytes, others 1 + id % 4.
  torch::Tensor token_bytes = torch::arange(100, torch::kLong) % 4 + 1;
  token_bytes[1] = 0;
  const EvalResult r = evaluate_bpb(*model, dir.string(), 4, 16, 1 << 20, token_bytes,
                                    torch::Device(torch::kCPU), false);
  // By hand over both chunks.
  double sum_loss = 0;
  int64_t sum_bytes = 0, count = 0;
  for (int c = 0; c < 2; ++c) {
    std::vector<int64_t> xs, ys;
    for (int i = 0; i < 64; ++i) {
      xs.push_back(val[c * 64 + i]);
      ys.push_back(val[c * 64 + i + 1]);
    }
    const torch::Tensor x = torch::tensor(xs).view({4, 16}), y = torch::tensor(ys).view({4, 16});
    torch::NoGradGuard ng;
    const torch::Tensor l = model->loss(x, y, true);
    for (int i = 0; i < 64; ++i) {
      const int64_t b = token_bytes[ys[i]].item<int64_t>();
      if (b == 0) continue;
      sum_loss += l.view({-1})[i].item<double>();
      sum_bytes += b;
      ++count;
    }
  }
  EXPECT_EQ(r.tokens, count);
  EXPECT_EQ(r.bytes, sum_bytes);
  EXPECT_NEAR(r.bpb, sum_loss / (std::log(2.0) * sum_bytes), 1e-9);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace hylab::trainer
