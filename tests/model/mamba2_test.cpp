// The Mamba-2 (M2) block on CPU: the chunked SSD against a step-by-step recurrence in fp64
// (odd lengths, several chunks, groups, an initial state), the whole mixer and every gradient
// against its definition written token by token, decode == forward, hybrids with M2 that
// train and round-trip through a checkpoint, config parsing and validation, accounting,
// and `rope: false`.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "common/check.h"
#include "model/accounting.h"
#include "model/checkpoint.h"
#include "model/decoder.h"
#include "model/gpt.h"
#include "model/mamba2.h"
#include "tests/model/mamba2_oracle.h"
#include "tests/model/test_files.h"
#include "tests/model/test_util.h"

namespace hylab {
namespace {

using testing::mamba2_by_definition;
using testing::ssd_recurrence;
using testing::tiny_config;
using testing::tiny_run_config;

// Small M2 sizes: E = 128, P = 16 -> H = 8 heads in 2 groups, N = 64, chunks of 16.
const std::vector<std::pair<std::string, std::string>> kM2 = {{"mamba2_headdim", "16"},
                                                              {"mamba2_ngroups", "2"},
                                                              {"mamba2_d_state", "64"},
                                                              {"mamba2_chunk_size", "16"}};

std::vector<std::pair<std::string, std::string>> with(
    std::vector<std::pair<std::string, std::string>> a,
    const std::vector<std::pair<std::string, std::string>>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

// Every parameter moved off its init (out_proj starts at zero, which would hide everything).
void perturb(torch::nn::Module& m, double scale = 0.1) {
  torch::NoGradGuard no_grad;
  for (auto& p : m.parameters()) p.add_(torch::randn_like(p) * scale);
}

TEST(Mamba2Ssd, ChunkedEqualsTheRecurrenceFp64) {
  torch::manual_seed(1);
  const int64_t B = 2, H = 4, P = 3, G = 2, N = 5;
  auto dbl = torch::kDouble;
  for (int64_t T : {1, 7, 16, 37}) {
    for (bool with_state : {false, true}) {
      auto x = torch::randn({B, T, H, P}, dbl);
      auto dt = torch::rand({B, T, H}, dbl) * 0.5 + 0.01;
      auto A = -torch::rand({H}, dbl) * 4 - 0.5;
      auto Bm = torch::randn({B, T, G, N}, dbl), Cm = torch::randn({B, T, G, N}, dbl);
      auto S0 = with_state ? torch::randn({B, H, P, N}, dbl) : torch::zeros({B, H, P, N}, dbl);
      auto [y_ref, S_ref] = ssd_recurrence(x, dt, A, Bm, Cm, S0);
      // bf16 activations with an fp32 dt (what autocast hands it), no autocast: runs, close.
      auto bf = [](const torch::Tensor& t) { return t.to(torch::kBFloat16); };
      auto [yb, Sb] = ssd_chunked(bf(x), dt.to(torch::kFloat), A.to(torch::kFloat), bf(Bm), bf(Cm),
                                  16, with_state ? S0.to(torch::kFloat) : torch::Tensor());
      EXPECT_EQ(Sb.scalar_type(), torch::kFloat);
      EXPECT_LT(max_abs_diff(yb, y_ref), 3e-2 * (1 + y_ref.abs().max().item<double>()))
          << "bf16 T " << T;
      for (int64_t Q : {16, 5, 1}) {
        auto [y, S] = ssd_chunked(x, dt, A, Bm, Cm, Q, with_state ? S0 : torch::Tensor());
        EXPECT_LT(max_abs_diff(y, y_ref), 1e-10)
            << "T " << T << " Q " << Q << " state " << with_state;
        EXPECT_LT(max_abs_diff(S, S_ref), 1e-10)
            << "T " << T << " Q " << Q << " state " << with_state;
      }
    }
  }
}

struct MixerCase {
  GPTConfig g;
  Mamba2Mixer m{nullptr};
};

MixerCase make_mixer(torch::Dtype dtype) {
  MixerCase c{tiny_config("M2", kM2)};
  c.m = Mamba2Mixer(c.g);
  perturb(*c.m);
  c.m->to(dtype);
  return c;
}

TEST(Mamba2Mixer, ForwardEqualsTheDefinitionFp64AndFp32) {
  torch::manual_seed(2);
  auto c = make_mixer(torch::kDouble);
  for (int64_t T : {1, 7, 37}) {
    auto u = torch::randn({2, T, c.g.n_embd}, torch::kDouble);
    auto want = mamba2_by_definition(*c.m, c.g, u);
    EXPECT_LT(max_abs_diff(c.m->forward(u), want), 1e-10) << "fp64 T " << T;
    auto m32 = make_mixer(torch::kDouble);  // same weights in fp32
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < m32.m->parameters().size(); ++i) {
      m32.m->parameters()[i].set_data(c.m->parameters()[i].to(torch::kFloat));
    }
    const double scale = want.abs().max().item<double>();
    EXPECT_LT(max_abs_diff(m32.m->forward(u.to(torch::kFloat)), want), 1e-4 * scale)
        << "fp32 T " << T;
  }
}

TEST(Mamba2Mixer, EveryGradientEqualsTheDefinitionsFp64) {
  torch::manual_seed(3);
  auto c = make_mixer(torch::kDouble);
  for (int64_t T : {1, 7, 37}) {
    auto u = torch::randn({2, T, c.g.n_embd}, torch::dtype(torch::kDouble).requires_grad(true));
    auto w = torch::randn({2, T, c.g.n_embd}, torch::kDouble);
    std::vector<torch::Tensor> inputs = c.m->parameters();
    inputs.push_back(u);
    auto got = torch::autograd::grad({(c.m->forward(u) * w).sum()}, inputs);
    auto want = torch::autograd::grad({(mamba2_by_definition(*c.m, c.g, u) * w).sum()}, inputs);
    auto names = c.m->named_parameters();
    for (size_t i = 0; i < inputs.size(); ++i) {
      const std::string name = i < names.size() ? names[i].key() : "input";
      ASSERT_TRUE(got[i].defined() && want[i].defined()) << name;
      // (At T = 1 the decay multiplies a zero state: A_log has no gradient there.)
      if (T > 1) {
        EXPECT_GT(want[i].abs().max().item<double>(), 0) << name << " has no gradient";
      }
      EXPECT_LT(max_abs_diff(got[i], want[i]), 1e-9 * (1 + want[i].abs().max().item<double>()))
          << name << " T " << T;
    }
  }
}

TEST(Mamba2Mixer, StepsAndChunksContinuingTheCacheEqualForward) {
  torch::manual_seed(4);
  auto c = make_mixer(torch::kDouble);
  const int64_t T = 37;
  auto u = torch::randn({2, T, c.g.n_embd}, torch::kDouble);
  auto want = c.m->forward(u).detach();
  // Prefill 5 (chunked, from zeros), then 19 more at once (chunked, continuing), then one at a
  // time.
  LayerCache cache = c.m->make_cache(2, torch::kCPU, torch::kDouble);
  std::vector<torch::Tensor> outs = {c.m->forward_step(u.narrow(1, 0, 5), cache),
                                     c.m->forward_step(u.narrow(1, 5, 19), cache)};
  for (int64_t t = 24; t < T; ++t)
    outs.push_back(c.m->step(u.select(1, t), cache, true).unsqueeze(1));
  EXPECT_LT(max_abs_diff(torch::cat(outs, 1), want), 1e-10);
  EXPECT_EQ(cache.ssm_state.sizes(), (std::vector<int64_t>{2, 8, 16, 64}));  // (B, H, P, N)
}

// A fp32 hybrid with every weight perturbed.
GPT hybrid(const std::string& pattern,
           const std::vector<std::pair<std::string, std::string>>& extra = {}) {
  GPT model(tiny_config(pattern, with(kM2, extra)));
  perturb(*model, 0.05);
  return model;
}

TEST(Mamba2Model, PatternsBuildM2BlocksWithTheirMlp) {
  GPT model(tiny_config("(T,M2*3)*2", kM2));
  ASSERT_EQ(model->config().n_layer, 8);
  EXPECT_TRUE(model->block(0)->mixer_as<CausalSelfAttentionImpl>());
  EXPECT_TRUE(model->block(1)->mixer_as<Mamba2MixerImpl>());
  EXPECT_TRUE(model->block(1)->mlp);  // mamba2_use_mlp defaults to true
  GPT bare(tiny_config("T,M2", with(kM2, {{"mamba2_use_mlp", "false"}})));
  EXPECT_FALSE(bare->block(1)->mlp);
  bool named = false;
  for (const auto& item : model->named_parameters()) named |= item.key() == "h.1.mamba2.A_log";
  EXPECT_TRUE(named);
}

TEST(Mamba2Model, ParamGroupsRouteTheM2Scalars) {
  GPT model(tiny_config("T,M2,M", kM2));
  auto g = model->param_groups();
  auto m = model->block(1)->mixer_as<Mamba2MixerImpl>();
  std::set<const void*> scalars, matrices;
  for (const auto& p : g.scalar) scalars.insert(p.unsafeGetTensorImpl());
  for (const auto& p : g.matrix) matrices.insert(p.unsafeGetTensorImpl());
  for (const auto& p : m->scalar_parameters()) EXPECT_TRUE(scalars.count(p.unsafeGetTensorImpl()));
  EXPECT_TRUE(matrices.count(m->in_proj->weight.unsafeGetTensorImpl()));
  EXPECT_TRUE(matrices.count(m->out_proj->weight.unsafeGetTensorImpl()));
  EXPECT_EQ(g.scalar.size(), 6u + 5u);  // M2: dt_bias A_log D conv w/b norm; M: 5
  EXPECT_EQ(g.matrix.size() + g.scalar.size() + 2, model->parameters().size());
}

TEST(Mamba2Model, InitIsMamba2sAndSurvivesTheGenericInit) {
  torch::manual_seed(5);
  GPTConfig g = tiny_config("M2,T", kM2);
  GPT model(g);
  model->init_weights();
  auto m = model->block(0)->mixer_as<Mamba2MixerImpl>();
  auto A = torch::exp(m->A_log);
  EXPECT_GE(A.min().item<float>(), 1.0f - 1e-5f);
  EXPECT_LE(A.max().item<float>(), 16.0f + 1e-4f);
  auto dt = torch::softplus(m->dt_bias);
  EXPECT_GE(dt.min().item<float>(), 0.001f * 0.999f);
  EXPECT_LE(dt.max().item<float>(), 0.1f * 1.001f);
  EXPECT_TRUE(torch::equal(m->D, torch::ones({g.mamba2_nheads()})));
  EXPECT_TRUE(torch::equal(m->norm_weight, torch::ones({g.mamba2_d_inner()})));
  EXPECT_EQ(m->out_proj->weight.abs().max().item<float>(), 0.0f);
  EXPECT_LE(m->conv1d_weight.abs().max().item<float>(), 0.5f);  // 1/sqrt(K = 4)
  const double C = g.n_embd;
  EXPECT_NEAR(m->in_proj->weight.std().item<float>(), 1 / std::sqrt(C), 0.1 / std::sqrt(C));
}

TEST(Mamba2Model, DecodeEqualsForwardInAHybrid) {
  torch::manual_seed(6);
  GPT model = hybrid("T,M2,M,M2");
  model->eval();
  const int64_t B = 2, T = 21;
  auto idx = torch::randint(100, {B, T}, torch::kLong);
  torch::NoGradGuard no_grad;
  auto want = model->forward(idx);  // (B, T, V)
  // forward_step: a prefill of 6, then one token at a time.
  InferenceCache cache = model->make_cache(B, T);
  std::vector<torch::Tensor> got = {model->forward_step(idx.narrow(1, 0, 6), cache)};
  for (int64_t t = 6; t < T; ++t) got.push_back(model->forward_step(idx.narrow(1, t, 1), cache));
  EXPECT_LT(max_abs_diff(torch::cat(got, 1), want), 2e-4);
  // decode_step (the graph-capturable path) after the same prefill.
  InferenceCache c2 = model->make_cache(B, T);
  model->forward_step(idx.narrow(1, 0, 6), c2);
  for (int64_t t = 6; t < T; ++t) {
    auto logits = model->decode_step(idx.narrow(1, t, 1), torch::full({1}, t, torch::kLong), c2);
    EXPECT_LT(max_abs_diff(logits, want.select(1, t)), 2e-4) << "t " << t;
  }
  // The Decoder engine (eager on CPU).
  Decoder dec(*model, DecoderOptions{});
  dec.reset(B, T);
  auto last = dec.prefill(idx.narrow(1, 0, 6));
  EXPECT_LT(max_abs_diff(last, want.select(1, 5)), 2e-4);
  EXPECT_EQ(cache.bytes(), B * cache_bytes_per_sequence(model->config(), T, 4));
}

TEST(Mamba2Model, HybridTrainsAndEveryM2ParameterMoves) {
  torch::manual_seed(7);
  GPT model(tiny_config("T,M2,M,M2", kM2));
  auto before = model->block(1)->mixer_as<Mamba2MixerImpl>()->A_log.clone();
  auto in_before = model->block(3)->mixer_as<Mamba2MixerImpl>()->in_proj->weight.clone();
  torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(3e-3).weight_decay(0));
  auto idx = torch::randint(100, {4, 32}, torch::kLong);
  auto targets = torch::roll(idx, -1, 1);
  double first = 0, last = 0;
  for (int step = 0; step < 25; ++step) {
    opt.zero_grad();
    auto loss = model->loss(idx, targets);
    loss.backward();
    opt.step();
    if (step == 0) first = loss.item<double>();
    last = loss.item<double>();
  }
  EXPECT_LT(last, 0.8 * first) << "first " << first << " last " << last;
  EXPECT_FALSE(torch::equal(before, model->block(1)->mixer_as<Mamba2MixerImpl>()->A_log));
  EXPECT_FALSE(
      torch::equal(in_before, model->block(3)->mixer_as<Mamba2MixerImpl>()->in_proj->weight));
}

TEST(Mamba2Model, CheckpointRoundTrip) {
  torch::manual_seed(8);
  RunConfig r = tiny_run_config("T,M2,M,M2", kM2);
  GPT model(gpt_config(r));
  perturb(*model, 0.05);
  const std::string dir = testing::join(testing::make_temp_dir("m2ckpt"), "ck");
  save_checkpoint(dir, *model, {}, {{"config", nlohmann::json::parse(config_to_json(r))}});
  GPT loaded = load_model(dir, torch::kCPU);
  auto idx = torch::randint(100, {2, 9}, torch::kLong);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(model->forward(idx), loaded->forward(idx)));
  EXPECT_EQ(loaded->config().mamba2_headdim, 16);
  testing::remove_tree(dir);
}

TEST(Mamba2Config, PatternsParseAndErrorsNameTheTypes) {
  EXPECT_EQ(compact_block_pattern(parse_block_pattern("(T,M2*3)*3")), "T,M2*3,T,M2*3,T,M2*3");
  EXPECT_EQ(compact_block_pattern(parse_block_pattern("TM2M2M")), "T,M2*2,M");
  EXPECT_EQ(compact_block_pattern(parse_block_pattern("t, mamba2, m2, M")), "T,M2*2,M");
  EXPECT_EQ(compact_block_pattern(parse_block_pattern("M2*12")), "M2*12");
  const std::string e = error_of([] { parse_block_pattern("T,M3"); });
  EXPECT_NE(e.find("block_pattern[1] = \"M3\""), std::string::npos) << e;
  EXPECT_NE(e.find("T/transformer, M/mamba or M2/mamba2"), std::string::npos) << e;
  EXPECT_NE(error_of([] { parse_block_pattern("TTX2"); }).find("block_pattern[2] = \"X2\""),
            std::string::npos);
  // The resolved config stores one letter per layer and reads back.
  RunConfig r = tiny_run_config("(T,M2)*2", kM2);
  ASSERT_EQ(r.block_pattern_size(), 4);
  EXPECT_EQ(r.block_pattern(1), "M2");
  EXPECT_EQ(resolve_config(r).block_pattern(3), "M2");
}

TEST(Mamba2Config, ValidationNamesTheField) {
  EXPECT_EQ(error_of([] {
              tiny_config("M2", {{"mamba2_d_state", "32"}});
            }),
            "mamba2_d_state = 32: expected 64..256");
  EXPECT_NE(error_of([] {
              tiny_config("M2", {{"mamba2_headdim", "48"}});
            }).find("mamba2_headdim = 48 must divide mamba2_expand * n_embd = 128"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              tiny_config("M2", with(kM2, {{"mamba2_ngroups", "3"}}));
            }).find("mamba2_ngroups = 3 must divide the M2 heads"),
            std::string::npos);
  EXPECT_NO_THROW(tiny_config("T", {{"mamba2_headdim", "48"}}));  // no M2 layer: not checked
  // M2 keys count in the identity only when an M2 layer exists.
  EXPECT_EQ(config_hash(tiny_run_config("T,M", {{"mamba2_headdim", "32"}})),
            config_hash(tiny_run_config("T,M")));
  EXPECT_NE(config_hash(tiny_run_config("T,M2", {{"mamba2_headdim", "32"}})),
            config_hash(tiny_run_config("T,M2")));
}

TEST(Mamba2Accounting, CountsMatchTheBuiltModelAndTheCache) {
  GPTConfig g = tiny_config("T,M2,M,M2", with(kM2, {{"mamba_use_mlp", "true"}}));
  GPT model(g);
  int64_t m2 = 0, total = 0;
  for (const auto& item : model->named_parameters()) {
    total += item.value().numel();
    if (item.key().find(".mamba2.") != std::string::npos) m2 += item.value().numel();
  }
  const ParamCounts p = count_params(g);
  EXPECT_EQ(p.mamba2, m2);
  EXPECT_EQ(p.mamba2, 2 * mamba2_layer_params(g));
  EXPECT_EQ(p.total, total);
  EXPECT_EQ(p.mlp, 4 * 8 * g.n_embd * g.n_embd);  // T, M (mamba_use_mlp), M2 x2
  for (int64_t bytes : {2, 4}) {
    InferenceCache c = model->make_cache(3, 17, bytes == 2 ? torch::kBFloat16 : torch::kFloat);
    EXPECT_EQ(c.bytes(), 3 * cache_bytes_per_sequence(g, 17, bytes)) << bytes;
  }
  const CacheBytes cb = cache_bytes(g, 1000, 2);
  EXPECT_EQ(cb.mamba2_per_layer, cache_bytes(g, 1, 2).mamba2_per_layer);  // constant in T
  EXPECT_GT(flops_breakdown(g, 32).mamba2_ssd, 0);
}

// One attention layer without positions sees the earlier tokens as a set: the last
// position's output cannot depend on their order. With rotary embeddings it does.
TEST(Rope, OffMakesAttentionBlindToTheOrderOfEarlierTokens) {
  torch::manual_seed(9);
  auto idx = torch::tensor({{5, 17, 42, 8, 3}}, torch::kLong);
  auto swapped = torch::tensor({{17, 5, 8, 42, 3}}, torch::kLong);
  for (bool rope : {true, false}) {
    GPT model(tiny_config("T", {{"rope", rope ? "true" : "false"}}));
    perturb(*model, 0.05);
    torch::NoGradGuard no_grad;
    const double diff =
        max_abs_diff(model->forward(idx).select(1, 4), model->forward(swapped).select(1, 4));
    if (rope) {
      EXPECT_GT(diff, 1e-4);
    } else {
      EXPECT_LT(diff, 1e-5);
    }
  }
  EXPECT_NE(error_of([] {
              tiny_config("T", {{"rope", "maybe"}});
            }).find("rope"),
            std::string::npos);
}

}  // namespace
}  // namespace hylab
