// Incremental decoding equals the full forward pass, for every pattern; the sampling loop.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "common/check.h"
#include "model/generate.h"
#include "model/gpt.h"
#include "tests/model/test_util.h"

namespace hylab {
namespace {

using testing::example_patterns;
using testing::tiny_config;

// A model whose logits depend on the input everywhere: the init zeroes c_proj/out_proj/lm_head.
GPT perturbed_model(const GPTConfig& cfg, int seed) {
  torch::manual_seed(seed);
  GPT model(cfg);
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.add_(torch::randn_like(p) * 0.05);
  return model;
}

void expect_close(const torch::Tensor& a, const torch::Tensor& b, const std::string& what) {
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  const double err = (a - b).abs().max().item<double>();
  EXPECT_LT(err, 2e-5) << what << ": max abs difference " << err;
}

// Prefill `chunks[0]` tokens, then feed the remaining chunks; the logits of every position
// must equal one forward() over the whole sequence.
void check_incremental(const std::string& pattern, const std::vector<int64_t>& chunks,
                       const std::vector<std::pair<std::string, std::string>>& overrides = {}) {
  GPT model = perturbed_model(tiny_config(pattern, overrides), 7);
  int64_t T = 0;
  for (int64_t c : chunks) T += c;
  const int64_t B = 2;
  auto idx = torch::randint(100, {B, T}, torch::kLong);
  torch::Tensor full;
  {
    torch::NoGradGuard no_grad;
    full = model->forward(idx);  // (B, T, V)
  }
  auto cache = model->make_cache(B, T + 3);
  std::vector<torch::Tensor> parts;
  int64_t pos = 0;
  for (int64_t c : chunks) {
    parts.push_back(model->forward_step(idx.narrow(1, pos, c), cache));
    pos += c;
    EXPECT_EQ(cache.pos, pos);
  }
  std::string what = pattern;
  for (int64_t c : chunks) what += " " + std::to_string(c);
  expect_close(torch::cat(parts, 1), full, what);
}

TEST(Decode, PrefillThenDecodeEqualsForwardForEveryPattern) {
  for (const auto& pattern : example_patterns()) {
    check_incremental(pattern, {5, 1, 1, 1, 1, 1, 1, 1});
  }
}

TEST(Decode, TokenByTokenFromEmpty) {
  for (const auto& pattern : {"TMTM", "MTTM"}) check_incremental(pattern, std::vector<int64_t>(9, 1));
}

TEST(Decode, ChunksAfterPrefillUseTheOffsetMask) {
  for (const auto& pattern : example_patterns()) check_incremental(pattern, {4, 3, 1, 5, 2});
}

TEST(Decode, PromptShorterThanTheConvWidth) {
  check_incremental("MTMM", {2, 1, 1, 3});  // K = 4 > 2: the conv state is zero-padded
}

TEST(Decode, MambaMlpAndMqa) {
  check_incremental("TMMT", {6, 1, 1, 2}, {{"mamba_use_mlp", "true"}, {"n_kv_head", "1"}});
}

TEST(Decode, CacheLimitsAreChecked) {
  GPT model(tiny_config("TM"));
  auto cache = model->make_cache(1, 4);
  model->forward_step(torch::zeros({1, 3}, torch::kLong), cache);
  EXPECT_THROW(model->forward_step(torch::zeros({1, 2}, torch::kLong), cache), Error);
  EXPECT_THROW(model->forward_step(torch::zeros({2, 1}, torch::kLong), cache), Error);  // batch
  EXPECT_THROW(model->make_cache(0, 4), Error);
  cache.reset();
  EXPECT_EQ(cache.pos, 0);
  EXPECT_EQ(cache.layers[1].ssm_state.abs().max().item<float>(), 0.0f);
}

// The rotary tables (10 * sequence_len = 320 positions here) grow for longer contexts, as the
// 4x length eval and long prompts need: the first positions' logits do not change, and
// decoding past the old end equals the full forward pass.
TEST(Decode, RotaryTablesExtendPastTenTimesSequenceLen) {
  GPT model = perturbed_model(tiny_config("TM"), 11);
  const int64_t old_len = model->max_positions();
  ASSERT_EQ(old_len, 320);
  auto idx = torch::randint(100, {1, old_len + 40}, torch::kLong);
  torch::NoGradGuard no_grad;
  const torch::Tensor short_logits = model->forward(idx.narrow(1, 0, 64));  // (1, 64, V)
  const torch::Tensor long_logits = model->forward(idx);                  // (1, 360, V)
  EXPECT_GE(model->max_positions(), old_len + 40);
  expect_close(long_logits.narrow(1, 0, 64), short_logits, "first 64 positions after extending");
  GPT fresh = perturbed_model(tiny_config("TM"), 11);  // tables extended by make_cache
  auto cache = fresh->make_cache(1, old_len + 40);
  torch::Tensor parts = fresh->forward_step(idx.narrow(1, 0, old_len + 30), cache);
  torch::Tensor rest = fresh->forward_step(idx.narrow(1, old_len + 30, 10), cache);
  expect_close(torch::cat({parts, rest}, 1), long_logits, "incremental past the old table end");
}

TEST(Generate, GreedyEqualsArgmaxOfFullForward) {
  for (const auto& pattern : {"TTMM", "MTTM"}) {
    GPT model = perturbed_model(tiny_config(pattern), 8);
    std::vector<int64_t> prompt = {3, 14, 15, 92, 65};
    SampleOptions opts;
    opts.temperature = 0;
    opts.max_tokens = 10;
    auto got = generate(*model, prompt, opts);
    // Independent: re-run the whole sequence through forward() for every new token.
    std::vector<int64_t> seq = prompt, expected;
    torch::NoGradGuard no_grad;
    for (int i = 0; i < 10; ++i) {
      auto logits = model->forward(torch::tensor(seq, torch::kLong).unsqueeze(0));
      const int64_t next = logits[0][-1].argmax().item<int64_t>();
      expected.push_back(next);
      seq.push_back(next);
    }
    EXPECT_EQ(got, expected) << pattern;
  }
}

TEST(Generate, SeededSamplingIsReproducibleAndTopKRestricts) {
  GPT model = perturbed_model(tiny_config("TMTM"), 9);
  SampleOptions opts;
  opts.max_tokens = 12;
  opts.temperature = 1.0;
  opts.seed = 42;
  auto a = generate(*model, {1, 2, 3}, opts);
  auto b = generate(*model, {1, 2, 3}, opts);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a.size(), 12u);
  opts.seed = 43;
  EXPECT_NE(generate(*model, {1, 2, 3}, opts), a);
  opts.top_k = 1;  // top-1 sampling is greedy
  auto top1 = generate(*model, {1, 2, 3}, opts);
  opts.temperature = 0;
  opts.top_k = 0;
  EXPECT_EQ(top1, generate(*model, {1, 2, 3}, opts));
}

TEST(Generate, SampleTokenRespectsTopK) {
  at::Generator gen = at::detail::createCPUGenerator(0);
  auto logits = torch::tensor({0.0f, 5.0f, 4.9f, -1.0f, 4.8f});
  for (int i = 0; i < 200; ++i) {
    const int64_t t = sample_token(logits, 2.0, 2, gen);
    ASSERT_TRUE(t == 1 || t == 2) << t;
  }
  EXPECT_EQ(sample_token(logits, 0.0, 0, gen), 1);
}

TEST(Generate, StopsAtStopTokenAndCallback) {
  GPT model = perturbed_model(tiny_config("TM"), 10);
  SampleOptions opts;
  opts.temperature = 0;
  opts.max_tokens = 8;
  auto greedy = generate(*model, {5, 6}, opts);
  opts.stop_token = greedy[2];
  auto stopped = generate(*model, {5, 6}, opts);
  EXPECT_EQ(stopped.size(), static_cast<size_t>(std::find(greedy.begin(), greedy.end(), greedy[2]) - greedy.begin() + 1));
  opts.stop_token = -1;
  int calls = 0;
  auto two = generate(*model, {5, 6}, opts, [&](int64_t) { return ++calls < 2; });
  EXPECT_EQ(two.size(), 2u);
  EXPECT_THROW(generate(*model, {}, opts), Error);
  EXPECT_THROW(generate(*model, {100}, opts), Error);  // vocab_size is 100
}


// N samples of one prompt as one batch (the engine's CPU path, eager): sample r equals a
// single generate() with seed + r, a stopped sample ends alone, and decode_step (the static
// step CUDA graphs capture) gives forward_step's logits on CPU too.
TEST(Generate, SamplesOfOnePromptAreABatchOfSingleSamples) {
  GPT model = perturbed_model(tiny_config("TMMT"), 11);
  SampleOptions opts;
  opts.max_tokens = 9;
  opts.temperature = 1.5;
  opts.seed = 7;
  Decoder dec(*model, DecoderOptions{/*autocast=*/false, /*cuda_graphs=*/true});
  EXPECT_FALSE(dec.uses_graphs());  // CPU: eager
  const auto many = generate_samples(dec, {4, 8, 15}, opts, 3);
  ASSERT_EQ(many.size(), 3u);
  for (int64_t r = 0; r < 3; ++r) {
    SampleOptions one = opts;
    one.seed = opts.seed + static_cast<uint64_t>(r);
    EXPECT_EQ(many[r], generate(*model, {4, 8, 15}, one)) << r;
  }
  EXPECT_NE(many[0], many[1]);
  // on_token ends sample 1 after its first token; the others run on.
  const auto cut = generate_samples(dec, {4, 8, 15}, opts, 3, [](int64_t r, int64_t) { return r != 1; });
  EXPECT_EQ(cut[1].size(), 1u);
  EXPECT_EQ(cut[0], many[0]);
  EXPECT_EQ(cut[2].size(), 9u);
  EXPECT_THROW(generate_samples(dec, {4}, opts, 0), Error);

  torch::NoGradGuard no_grad;
  auto idx = torch::randint(100, {2, 7}, torch::kLong);
  auto a = model->make_cache(2, 7), b = model->make_cache(2, 7);
  model->forward_step(idx.narrow(1, 0, 4), a);
  model->forward_step(idx.narrow(1, 0, 4), b);
  for (int64_t t = 4; t < 7; ++t) {
    auto want = model->forward_step(idx.narrow(1, t, 1), a).select(1, 0);  // (2, V)
    auto got = model->decode_step(idx.narrow(1, t, 1), torch::tensor({t}, torch::kLong), b);
    EXPECT_LT((got - want).abs().max().item<double>(), 1e-4) << t;
  }
}

}  // namespace
}  // namespace hylab
