// The accounting formulas against built models (parameters, cache bytes) and against
// nanochat's FLOPs estimate; `hylab model info` end to end.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "model/accounting.h"
#include "model/gpt.h"
#include "tests/model/test_util.h"

namespace hylab {
namespace {

using testing::example_patterns;
using testing::tiny_config;

// Counted from a model, grouped by parameter name.
ParamCounts counted(GPT& model) {
  ParamCounts c;
  for (const auto& item : model->named_parameters()) {
    const std::string& n = item.key();
    const int64_t k = item.value().numel();
    if (n == "wte.weight") c.embedding += k;
    else if (n == "lm_head.weight") c.lm_head += k;
    else if (n.find(".attn.") != std::string::npos) c.attention += k;
    else if (n.find(".mlp.") != std::string::npos) c.mlp += k;
    else if (n.find(".mamba.") != std::string::npos) c.mamba += k;
    else ADD_FAILURE() << "parameter in no group: " << n;
    c.total += k;
  }
  return c;
}

void expect_counts_equal(const ParamCounts& a, const ParamCounts& b, const std::string& what) {
  EXPECT_EQ(a.embedding, b.embedding) << what;
  EXPECT_EQ(a.lm_head, b.lm_head) << what;
  EXPECT_EQ(a.attention, b.attention) << what;
  EXPECT_EQ(a.mlp, b.mlp) << what;
  EXPECT_EQ(a.mamba, b.mamba) << what;
  EXPECT_EQ(a.total, b.total) << what;
}

TEST(Accounting, ParamCountEqualsFormulaForEveryPattern) {
  const std::vector<std::vector<std::pair<std::string, std::string>>> variants = {
      {},
      {{"mamba_use_mlp", "true"}},
      {{"n_kv_head", "1"}, {"mamba_expand", "1"}, {"mamba_d_conv", "3"}},
      {{"mamba_dt_rank", "7"}, {"mamba_d_state", "5"}, {"vocab_size", "130"}},
  };
  for (const auto& pattern : example_patterns()) {
    for (const auto& v : variants) {
      GPTConfig cfg = tiny_config(pattern, v);
      GPT model(cfg);
      std::string what = pattern;
      for (const auto& [k, val] : v) what += " " + k + "=" + val;
      expect_counts_equal(count_params(cfg), counted(model), what);
    }
  }
}

TEST(Accounting, TheLargestConfigThatResolvesCountsWithoutOverflow) {
  // resolve_config bounds every size (n_embd, vocab, dt_rank, sequence); at those bounds
  // every count stays positive (it used to overflow to negative for n_embd 10^8).
  for (const char* pattern : {"T*1024", "M*1024"}) {
    RunConfig c;
    for (const auto& [k, v] : std::vector<std::pair<std::string, std::string>>{
             {"block_pattern", pattern}, {"n_embd", "1048576"}, {"n_head", "2"}, {"n_kv_head", "2"},
             {"vocab_size", "268435456"}, {"max_seq_len", "16777216"}, {"mamba_expand", "16"},
             {"mamba_d_state", "256"}, {"mamba_dt_rank", "1048576"}, {"mamba_use_mlp", "true"}}) {
      apply_override(&c, k, v);
    }
    const GPTConfig g = gpt_config(resolve_config(c));
    const ParamCounts p = count_params(g);
    for (int64_t n : {p.embedding, p.lm_head, p.attention, p.mlp, p.mamba}) EXPECT_GE(n, 0) << pattern;
    EXPECT_GT(p.total, p.embedding) << pattern;
    EXPECT_GT(flops_per_token(g, 16777216), 0) << pattern;
    EXPECT_GT(cache_bytes_per_sequence(g, 16777216, 4), 0) << pattern;
  }
}

TEST(Accounting, D20TransformerHasTheSeeds561MParameters) {
  RunConfig c;
  c.set_depth(20);
  c.set_vocab_size(65536);
  GPTConfig g = gpt_config(resolve_config(c));
  const ParamCounts p = count_params(g);
  // 2 * 65536 * 1280 + 20 * 12 * 1280^2
  EXPECT_EQ(p.total, 560988160);
  EXPECT_EQ(p.embedding, 65536 * 1280);
  EXPECT_EQ(p.attention + p.mlp, 20LL * 12 * 1280 * 1280);
  EXPECT_EQ(p.mamba, 0);
}

TEST(Accounting, FlopsMatchNanochatForTransformers) {
  GPTConfig g = tiny_config("TTTT");
  GPT model(g);
  int64_t nparams = 0;
  for (const auto& p : model->parameters()) nparams += p.numel();
  const int64_t T = 32;
  const double nanochat = 6.0 * static_cast<double>(nparams - model->wte->weight.numel()) +
                          12.0 * g.n_layer * g.n_head * g.head_dim() * T;
  EXPECT_DOUBLE_EQ(flops_per_token(g, T), nanochat);
}

TEST(Accounting, FlopsAddTheScanForMambaLayers) {
  GPTConfig g = tiny_config("TMMT");
  const FlopsPerToken f = flops_breakdown(g, 32);
  const ParamCounts p = count_params(g);
  EXPECT_DOUBLE_EQ(f.matmul, 6.0 * static_cast<double>(p.total - p.embedding));
  EXPECT_DOUBLE_EQ(f.attention, 12.0 * 2 * 4 * 16 * 32);  // 2 T layers, H=4, Dh=16
  // 2 M layers, E=128, N=8: 3 * (9*E*N + 2*E) each.
  EXPECT_DOUBLE_EQ(f.mamba_scan, 2 * 3.0 * (9 * 128 * 8 + 2 * 128));
  EXPECT_DOUBLE_EQ(f.total, f.matmul + f.attention + f.mamba_scan);
  // The attention term grows with T, the scan term does not.
  EXPECT_DOUBLE_EQ(flops_breakdown(g, 64).attention, 2 * f.attention);
  EXPECT_DOUBLE_EQ(flops_breakdown(g, 64).mamba_scan, f.mamba_scan);
}

TEST(Accounting, CacheBytesEqualAnAllocatedCache) {
  for (const auto& pattern : example_patterns()) {
    GPTConfig g = tiny_config(pattern);
    GPT model(g);
    // The default cache (the parameters' dtype off autocast) and the bf16 one CUDA autocast
    // gets: the accounting must equal the bytes of the tensors make_cache allocates.
    auto cache = model->make_cache(/*batch=*/1, /*max_len=*/g.sequence_len);
    EXPECT_EQ(model->compute_dtype(), torch::kFloat) << pattern;
    EXPECT_EQ(cache_bytes_per_sequence(g, g.sequence_len, /*fp32=*/4), cache.bytes()) << pattern;
    for (auto [dtype, act] : {std::pair<torch::Dtype, int64_t>{torch::kFloat, 4}, {torch::kBFloat16, 2}}) {
      int64_t allocated = 0;
      auto c = model->make_cache(/*batch=*/3, /*max_len=*/37, dtype);
      for (const auto& l : c.layers) {
        for (const auto* t : {&l.k, &l.v, &l.conv_state, &l.ssm_state}) {
          if (!t->defined()) continue;
          EXPECT_EQ(t->scalar_type(), t == &l.ssm_state ? torch::kFloat : dtype) << pattern;
          allocated += t->numel() * static_cast<int64_t>(t->element_size());
        }
      }
      EXPECT_EQ(3 * cache_bytes_per_sequence(g, 37, act), allocated) << pattern << " " << act;
      EXPECT_EQ(c.bytes(), allocated) << pattern;
    }
  }
  GPTConfig g = tiny_config("TMMT");
  const CacheBytes c = cache_bytes(g, 100, 2);
  EXPECT_EQ(c.attention_per_layer, 2 * 2 * 16 * 100 * 2);  // K and V, Hkv=2, Dh=16, bf16
  EXPECT_EQ(c.mamba_per_layer, 128 * 4 * 2 + 128 * 8 * 4);  // conv (bf16) + ssm (fp32)
  EXPECT_EQ(c.total, 2 * c.attention_per_layer + 2 * c.mamba_per_layer);
}

// ---- `hylab model info` ----

struct CmdResult {
  int status;
  std::string out;
};

CmdResult run_hylab(const std::string& args) {
  const char* bin = std::getenv("HYLAB_BIN");
  if (bin == nullptr) return {-1, "HYLAB_BIN not set"};
  std::string cmd = std::string(bin) + " " + args + " 2>&1";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), pclose);
  std::string out;
  std::array<char, 4096> buf;
  while (fgets(buf.data(), buf.size(), pipe.get()) != nullptr) out += buf.data();
  const int rc = pclose(pipe.release());
  return {WEXITSTATUS(rc), out};
}

TEST(ModelInfo, JsonMatchesTheFormulas) {
  if (std::getenv("HYLAB_BIN") == nullptr) GTEST_SKIP() << "HYLAB_BIN not set (run through ctest)";
  CmdResult r = run_hylab("model info --depth=20 --vocab_size=65536 --block_pattern='T*12,M*8' --format json");
  ASSERT_EQ(r.status, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  RunConfig c;
  c.set_depth(20);
  c.set_vocab_size(65536);
  apply_override(&c, "block_pattern", "T*12,M*8");
  GPTConfig g = gpt_config(resolve_config(c));
  EXPECT_EQ(j["params_total"].get<int64_t>(), count_params(g).total);
  EXPECT_EQ(j["params"]["mamba"].get<int64_t>(), count_params(g).mamba);
  EXPECT_DOUBLE_EQ(j["flops_per_token"].get<double>(), flops_per_token(g, g.sequence_len));
  // In the dtype the trainer's cache would have here: bf16 with a GPU, fp32 without.
  const int64_t act = torch::cuda::is_available() ? 2 : 4;
  EXPECT_EQ(j["cache_bytes"].get<int64_t>(), cache_bytes_per_sequence(g, g.sequence_len, act));
  EXPECT_EQ(j["block_pattern"], "T*12,M*8");
  EXPECT_EQ(j["config"]["n_layer"], 20);
}

TEST(ModelInfo, TableAndConfigFile) {
  if (std::getenv("HYLAB_BIN") == nullptr) GTEST_SKIP() << "HYLAB_BIN not set (run through ctest)";
  CmdResult r = run_hylab("model info --config configs/d4_alternating.yaml");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("parameters"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("T,M,T,M"), std::string::npos) << r.out;
}

TEST(ModelInfo, InvalidConfigExitsNonZeroWithTheError) {
  if (std::getenv("HYLAB_BIN") == nullptr) GTEST_SKIP() << "HYLAB_BIN not set (run through ctest)";
  CmdResult r = run_hylab("model info --n_layer=4 --block_pattern='T,T,X,M'");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("block_pattern = \"T,T,X,M\""), std::string::npos) << r.out;
  r = run_hylab("model info --n_layer=3 --block_pattern=TTMM");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("block_pattern has 4 entries (T*2,M*2) but n_layer is 3"), std::string::npos) << r.out;
  r = run_hylab("model info --no_such_key=1");
  EXPECT_NE(r.status, 0);
}

}  // namespace
}  // namespace hylab
