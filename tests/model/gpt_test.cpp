// The GPT on CPU: patterns build the right blocks, forward/loss shapes and semantics,
// gradients, parameter groups, initialisation rules, pattern errors (the seed's suite and more).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <array>
#include <limits>
#include <map>
#include <set>
#include <string>

#include "common/check.h"
#include "model/compat.h"
#include "model/gpt.h"
#include "model/mamba.h"
#include "tests/model/test_util.h"

namespace hylab {
namespace {

using testing::example_patterns;
using testing::tiny_config;
using testing::tiny_run_config;

std::string pattern_of(GPT& model) {
  std::string s;
  for (int i = 0; i < model->config().n_layer; ++i) s += block_type_letter(model->block(i)->type());
  return s;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(GPTConfigTest, DefaultIsAllTransformer) {
  RunConfig c;
  c.set_depth(2);
  GPTConfig g = gpt_config(resolve_config(c));
  ASSERT_EQ(g.block_pattern.size(), 2u);
  GPT model(g);
  EXPECT_EQ(pattern_of(model), "TT");
  EXPECT_TRUE(model->block(0)->mixer_as<CausalSelfAttentionImpl>());
  EXPECT_FALSE(model->block(0)->mixer_as<MambaMixerImpl>());
}

TEST(GPTConfigTest, PatternsBuildTheRightBlocks) {
  for (const auto& [pattern, expected] : std::map<std::string, std::string>{
           {"TTTT", "TTTT"}, {"T,T,M,M", "TTMM"}, {"(T,M)*2", "TMTM"}, {"t, mamba, Transformer, M", "TMTM"},
           {"T*3,M", "TTTM"}, {"MMMM", "MMMM"}}) {
    GPT model(tiny_config(pattern));
    EXPECT_EQ(pattern_of(model), expected) << pattern;
    for (int i = 0; i < 4; ++i) {
      const bool is_t = expected[i] == 'T';
      EXPECT_EQ(static_cast<bool>(model->block(i)->mixer_as<CausalSelfAttentionImpl>()), is_t)
          << pattern << " layer " << i;
      EXPECT_EQ(static_cast<bool>(model->block(i)->mixer_as<MambaMixerImpl>()), !is_t)
          << pattern << " layer " << i;
      EXPECT_EQ(static_cast<bool>(model->block(i)->mlp), is_t) << pattern << " layer " << i;
    }
  }
}

TEST(GPTConfigTest, MambaUseMlpAddsTheMlp) {
  GPT model(tiny_config("TM", {{"mamba_use_mlp", "true"}}));
  EXPECT_TRUE(model->block(1)->mixer_as<MambaMixerImpl>());
  EXPECT_TRUE(model->block(1)->mlp);
  auto logits = model->forward(torch::randint(100, {2, 8}, torch::kLong));
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 8, 100}));
}

TEST(GPTConfigTest, FactoryAcceptsAliasesAndRejectsBadTypes) {
  GPTConfig g = tiny_config("T");
  for (const char* t : {"T", "t", "transformer", "Transformer", "TRANSFORMER"}) {
    EXPECT_EQ(create_block(t, g, 0)->type(), BlockType::kTransformer) << t;
  }
  for (const char* t : {"M", "m", "mamba", "Mamba", "MAMBA"}) {
    EXPECT_EQ(create_block(t, g, 0)->type(), BlockType::kMamba) << t;
  }
  EXPECT_THROW(create_block("X", g, 3), ConfigError);
  EXPECT_EQ(error_of([&] { create_block("attention", g, 3); }),
            "block type \"attention\" (layer 3): expected T/transformer, M/mamba or M2/mamba2");
}

TEST(GPTConfigTest, InvalidPatternsGiveTheDocumentedErrors) {
  EXPECT_EQ(error_of([] { tiny_config("", {{"block_pattern", "[T, T, M, X]"}}); }),
            "block_pattern[3] = \"X\": expected T/transformer, M/mamba or M2/mamba2");
  EXPECT_EQ(error_of([] { tiny_config("TTM", {{"n_layer", "4"}}); }),
            "block_pattern has 3 entries (T*2,M) but n_layer is 4");
  EXPECT_NE(error_of([] { tiny_config("T*2,Q"); }).find("unknown block type \"Q\""), std::string::npos);
  EXPECT_THROW(tiny_config("", {{"n_kv_head", "3"}}), ConfigError);  // must divide n_head = 4
}

TEST(GPTForward, ShapesForEveryExamplePattern) {
  torch::manual_seed(0);
  for (const auto& pattern : example_patterns()) {
    GPT model(tiny_config(pattern));
    auto idx = torch::randint(100, {2, 16}, torch::kLong);
    auto logits = model->forward(idx);
    EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 16, 100})) << pattern;  // cropped to V
    EXPECT_EQ(logits.scalar_type(), torch::kFloat);
    EXPECT_TRUE(torch::isfinite(logits).all().item<bool>()) << pattern;
    EXPECT_EQ(model->wte->weight.size(0), 128) << "vocab padded to a multiple of 64";
  }
}

// Zero-initialised lm_head gives all-zero logits; train it a little so that the logits
// depend on the input, then check causality: changing a later token changes no earlier logit.
TEST(GPTForward, IsCausalForEveryPattern) {
  torch::manual_seed(1);
  for (const auto& pattern : example_patterns()) {
    GPT model(tiny_config(pattern));
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) p.add_(torch::randn_like(p) * 0.05);
    auto idx = torch::randint(100, {1, 12}, torch::kLong);
    auto idx2 = idx.clone();
    idx2[0][7] = (idx[0][7].item<int64_t>() + 1) % 100;
    auto a = model->forward(idx), b = model->forward(idx2);
    EXPECT_TRUE(torch::allclose(a.narrow(1, 0, 7), b.narrow(1, 0, 7), 1e-5, 1e-6)) << pattern;
    EXPECT_FALSE(torch::allclose(a.narrow(1, 7, 5), b.narrow(1, 7, 5), 1e-5, 1e-6))
        << pattern << ": later positions must see the change";
  }
}

TEST(GPTForward, SoftcapBoundsLogits) {
  GPT model(tiny_config("TM", {{"logit_softcap", "2"}}));
  torch::NoGradGuard no_grad;
  model->lm_head->weight.normal_(0, 10);
  auto logits = model->forward(torch::randint(100, {2, 8}, torch::kLong));
  EXPECT_LE(logits.abs().max().item<float>(), 2.0f);
  EXPECT_GT(logits.abs().max().item<float>(), 1.9f);
}

TEST(GPTLoss, MeanIgnoresMinusOneAndMatchesPerToken) {
  torch::manual_seed(2);
  GPT model(tiny_config("TMTM"));
  {
    torch::NoGradGuard no_grad;
    model->lm_head->weight.normal_(0, 0.1);
  }
  auto idx = torch::randint(100, {2, 10}, torch::kLong);
  auto targets = torch::randint(100, {2, 10}, torch::kLong);
  targets[0][3] = -1;
  targets[1][9] = -1;
  auto per_token = model->loss(idx, targets, /*per_token=*/true);
  EXPECT_EQ(per_token.sizes(), (std::vector<int64_t>{2, 10}));
  EXPECT_EQ(per_token[0][3].item<float>(), 0.0f);
  auto mask = targets.ne(-1);
  auto mean = model->loss(idx, targets);
  EXPECT_NEAR(mean.item<float>(), (per_token.sum() / mask.sum()).item<float>(), 1e-5);
  // Against log-softmax of the logits by hand.
  auto logp = torch::log_softmax(model->forward(idx), -1);
  EXPECT_NEAR(per_token[1][4].item<float>(), -logp[1][4][targets[1][4].item<int64_t>()].item<float>(), 1e-5);
  // A zero lm_head (fresh init) predicts uniformly: loss = log(V).
  GPT fresh(tiny_config("TM"));
  EXPECT_NEAR(fresh->loss(idx, targets).item<float>(), std::log(100.0f), 1e-5);
}

TEST(GPTBackward, FiniteNonZeroGradientsForEveryParameter) {
  torch::manual_seed(3);
  for (const auto& pattern : {std::string("TMTM"), std::string("MTTM")}) {
    GPT model(tiny_config(pattern, {{"mamba_use_mlp", "true"}}));
    {
      // Move off the zero init (c_proj, out_proj, lm_head) so every parameter gets a gradient.
      torch::NoGradGuard no_grad;
      for (auto& p : model->parameters()) {
        if (p.abs().max().item<float>() == 0) p.normal_(0, 0.02);
      }
    }
    auto idx = torch::randint(100, {2, 12}, torch::kLong);
    auto targets = torch::randint(100, {2, 12}, torch::kLong);
    model->loss(idx, targets).backward();
    for (const auto& item : model->named_parameters()) {
      const auto& g = item.value().grad();
      ASSERT_TRUE(g.defined()) << pattern << " " << item.key();
      EXPECT_TRUE(torch::isfinite(g).all().item<bool>()) << pattern << " " << item.key();
      EXPECT_GT(g.abs().max().item<float>(), 0.0f) << pattern << " " << item.key();
    }
  }
}

TEST(GPTParams, EveryParameterInExactlyOneGroup) {
  GPT model(tiny_config("TMTM", {{"mamba_use_mlp", "true"}}));
  auto g = model->param_groups();
  std::map<const void*, int> seen;
  for (auto* group : {&g.matrix, &g.embedding, &g.lm_head, &g.scalar}) {
    for (const auto& p : *group) seen[p.unsafeGetTensorImpl()]++;
  }
  std::map<std::string, std::string> group_of;
  auto named = model->named_parameters();
  EXPECT_EQ(seen.size(), named.size());
  for (const auto& item : named) {
    EXPECT_EQ(seen[item.value().unsafeGetTensorImpl()], 1) << item.key();
  }
  ASSERT_EQ(g.embedding.size(), 1u);
  EXPECT_TRUE(g.embedding[0].is_same(model->wte->weight));
  ASSERT_EQ(g.lm_head.size(), 1u);
  EXPECT_TRUE(g.lm_head[0].is_same(model->lm_head->weight));
  for (const auto& p : g.matrix) EXPECT_EQ(p.dim(), 2);
  // 2 Mamba layers x (A_log, D, dt_proj.bias, conv1d_weight, conv1d_bias).
  EXPECT_EQ(g.scalar.size(), 10u);
  auto m = model->block(1)->mixer_as<MambaMixerImpl>();
  std::set<const void*> scalars;
  for (const auto& p : g.scalar) scalars.insert(p.unsafeGetTensorImpl());
  for (const auto& p : {m->A_log, m->D, m->dt_proj->bias, m->conv1d_weight, m->conv1d_bias}) {
    EXPECT_TRUE(scalars.count(p.unsafeGetTensorImpl()));
  }
  // Matrices: 2 T layers x (c_q, c_k, c_v, c_proj, c_fc, c_proj) + 2 M layers x
  // (in_proj, x_proj, dt_proj.weight, out_proj, mlp c_fc, mlp c_proj).
  EXPECT_EQ(g.matrix.size(), 24u);
}

// Mamba's own initialisation survives the generic init (the seed's Python fork lost it).
void expect_mamba_init(const std::shared_ptr<MambaMixerImpl>& m, const GPTConfig& cfg) {
  ASSERT_TRUE(m);
  const int64_t E = cfg.d_inner(), N = cfg.mamba_d_state;
  auto expected_A_log = torch::log(torch::arange(1, N + 1, torch::kFloat)).expand({E, N});
  EXPECT_TRUE(torch::equal(m->A_log, expected_A_log));
  EXPECT_TRUE(torch::equal(m->D, torch::ones({E})));
  auto dt = torch::nn::functional::softplus(m->dt_proj->bias);
  EXPECT_GE(dt.min().item<float>(), cfg.mamba_dt_min * 0.999);
  EXPECT_LE(dt.max().item<float>(), cfg.mamba_dt_max * 1.001);
  const double bound = 1.0 / std::sqrt(static_cast<double>(cfg.mamba_dt_rank));
  EXPECT_LE(m->dt_proj->weight.abs().max().item<float>(), bound);
  // Uniform on [-b, b] has std b/sqrt(3); a fan-in normal would have std 1/sqrt(R) = b.
  const double std = m->dt_proj->weight.std().item<float>();
  EXPECT_NEAR(std, bound / std::sqrt(3.0), 0.15 * bound);
  EXPECT_LE(m->conv1d_weight.abs().max().item<float>(), 1.0 / std::sqrt(cfg.mamba_d_conv));
  EXPECT_EQ(m->out_proj->weight.abs().max().item<float>(), 0.0f);
}

TEST(GPTInit, MambaInitIsNotOverwrittenByTheGenericInit) {
  torch::manual_seed(4);
  GPTConfig cfg = tiny_config("TMMT", {{"n_embd", "128"}});  // E = 256: enough samples for stds
  GPT model(cfg);
  expect_mamba_init(model->block(1)->mixer_as<MambaMixerImpl>(), cfg);
  model->init_weights();  // again, as a trainer that re-seeds would
  expect_mamba_init(model->block(1)->mixer_as<MambaMixerImpl>(), cfg);
  expect_mamba_init(model->block(2)->mixer_as<MambaMixerImpl>(), cfg);
  // And the generic rules hold for everything else.
  EXPECT_EQ(model->lm_head->weight.abs().max().item<float>(), 0.0f);
  EXPECT_EQ(model->block(0)->mixer_as<CausalSelfAttentionImpl>()->c_proj->weight.abs().max().item<float>(), 0.0f);
  EXPECT_EQ(model->block(0)->mlp->c_proj->weight.abs().max().item<float>(), 0.0f);
  EXPECT_NEAR(model->wte->weight.std().item<float>(), 1.0, 0.05);
  // c_q (C, C): std 1/sqrt(C); c_fc (4C, C): min(1, sqrt(4)) / sqrt(C) = 1/sqrt(C);
  // in_proj (2E, C): 1/sqrt(C); x_proj (R+2N, E): sqrt((R+2N)/E)/sqrt(E).
  const double C = 128, E = 256, R2N = cfg.mamba_dt_rank + 2 * cfg.mamba_d_state;
  EXPECT_NEAR(model->block(0)->mixer_as<CausalSelfAttentionImpl>()->c_q->weight.std().item<float>(), 1 / std::sqrt(C), 0.05 / std::sqrt(C));
  EXPECT_NEAR(model->block(0)->mlp->c_fc->weight.std().item<float>(), 1 / std::sqrt(C), 0.05 / std::sqrt(C));
  EXPECT_NEAR(model->block(1)->mixer_as<MambaMixerImpl>()->in_proj->weight.std().item<float>(), 1 / std::sqrt(C), 0.05 / std::sqrt(C));
  const double x_std = std::sqrt(R2N / E) / std::sqrt(E);
  EXPECT_NEAR(model->block(1)->mixer_as<MambaMixerImpl>()->x_proj->weight.std().item<float>(), x_std, 0.1 * x_std);
}

TEST(GPTInit, SameSeedSameModel) {
  torch::manual_seed(11);
  GPT a(tiny_config("TM"));
  torch::manual_seed(11);
  GPT b(tiny_config("TM"));
  auto pa = a->parameters(), pb = b->parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::equal(pa[i], pb[i]));
}

TEST(GPTForward, ReferenceAndKernelSwitchAgreeOnCpu) {
  // On CPU both settings run the reference ops: the switch must not change results.
  torch::manual_seed(5);
  GPT model(tiny_config("MTMM"));
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) p.add_(torch::randn_like(p) * 0.02);
  }
  auto idx = torch::randint(100, {2, 8}, torch::kLong);
  model->set_use_kernels(false);
  auto a = model->forward(idx);
  model->set_use_kernels(true);
  EXPECT_TRUE(torch::equal(a, model->forward(idx)));
}

TEST(GPTForward, RejectsBadInput) {
  GPT model(tiny_config("TM"));
  EXPECT_THROW(model->forward(torch::zeros({2, 4}, torch::kInt)), Error);
  // Past the rotary tables' 10 * sequence_len = 320 positions the tables extend (the 4x length
  // eval, long prompts) instead of refusing: model_generate_test checks the values.
  EXPECT_EQ(model->forward(torch::zeros({1, 321}, torch::kLong)).size(1), 321);
  EXPECT_GE(model->max_positions(), 321);
}

TEST(Compat, CausalAttentionMatchesTheDefinition) {
  torch::manual_seed(12);
  // (H, Hkv, Tq, Tk): training (Tq == Tk), one decode query, a chunk after a prefix; MHA/GQA/MQA.
  for (auto [H, Hkv, Tq, Tk] : std::vector<std::array<int64_t, 4>>{
           {4, 4, 7, 7}, {4, 2, 7, 7}, {4, 1, 1, 9}, {4, 2, 3, 10}, {2, 2, 5, 5}}) {
    auto q = torch::randn({2, H, Tq, 8}), k = torch::randn({2, Hkv, Tk, 8}), v = torch::randn({2, Hkv, Tk, 8});
    auto got = compat::causal_attention(q, k, v, Tk - Tq);
    auto want = testing::naive_attention(q, k, v, Tk - Tq);
    EXPECT_TRUE(torch::allclose(got.to(torch::kDouble), want, 1e-5, 1e-5))
        << "H=" << H << " Hkv=" << Hkv << " Tq=" << Tq << " Tk=" << Tk;
  }
}

TEST(Compat, RmsNormIsNanochats) {
  auto x = torch::randn({3, 5, 16});
  auto want = x / torch::sqrt(x.pow(2).mean(-1, true) + std::numeric_limits<float>::epsilon());
  EXPECT_TRUE(torch::allclose(compat::rms_norm(x), want, 1e-6, 1e-6));
  auto xb = x.to(torch::kBFloat16);
  EXPECT_EQ(compat::rms_norm(xb).scalar_type(), torch::kBFloat16);
}

}  // namespace
}  // namespace hylab
