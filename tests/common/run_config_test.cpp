#include "common/run_config.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

#include "common/check.h"

namespace hylab {
namespace {

std::string pattern_string(const RunConfig& c) {
  std::string s;
  for (const auto& p : c.block_pattern()) s += p;
  return s;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(RunConfig, DefaultIsAllTransformer) {
  RunConfig c = resolve_config(RunConfig());
  EXPECT_EQ(c.n_layer(), 12);
  EXPECT_EQ(pattern_string(c), std::string(12, 'T'));
  EXPECT_EQ(c.sequence_len(), c.max_seq_len());
  EXPECT_EQ(c.mamba_dt_rank(), 48);  // ceil(768/16)
}

TEST(RunConfig, DepthDerivesWidthsAsNanochat) {
  RunConfig c;
  c.set_depth(20);
  c = resolve_config(c);
  EXPECT_EQ(c.n_layer(), 20);
  EXPECT_EQ(c.n_embd(), 1280);
  EXPECT_EQ(c.n_head(), 10);
  EXPECT_EQ(c.n_kv_head(), 10);
  c.Clear();
  c.set_depth(1);
  c = resolve_config(c);
  EXPECT_EQ(c.n_head(), 1);  // max(1, ceil(64/128))
}

TEST(RunConfig, CompactPatterns) {
  auto p = parse_block_pattern("T*12,M*8");
  ASSERT_EQ(p.size(), 20u);
  EXPECT_EQ(compact_block_pattern(p), "T*12,M*8");
  EXPECT_EQ(compact_block_pattern(parse_block_pattern("(T,M)*3")), "T,M,T,M,T,M");
  EXPECT_EQ(compact_block_pattern(parse_block_pattern("TTMM")), "T*2,M*2");
  EXPECT_EQ(compact_block_pattern(parse_block_pattern("transformer, Mamba*2")), "T,M*2");
  EXPECT_EQ(compact_block_pattern(parse_block_pattern("T*2,(M*2,T)*2")), "T*2,M*2,T,M*2,T");
}

TEST(RunConfig, PatternSizesAreCheckedBeforeExpansion) {
  auto error = [](const std::string& text) {
    try {
      parse_block_pattern(text);
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  // Nested repeats used to be expanded before any limit: this allocated 10^15 entries.
  EXPECT_NE(error("((((T*1000)*1000)*1000)*1000)*1000").find("more than 1024 layers"), std::string::npos);
  EXPECT_NE(error("T*1000,M*1000").find("more than 1024 layers"), std::string::npos);
  EXPECT_EQ(parse_block_pattern("(T,M*3)*256").size(), 1024u);  // the limit itself is fine
  // A repeat count past long's range used to throw std::out_of_range ("stol").
  EXPECT_NE(error("T*99999999999999999999").find("repeat count 99999999999999999999 out of range"),
            std::string::npos);
  // Deep nesting used to recurse once per parenthesis.
  EXPECT_NE(error(std::string(100000, '(') + "T" + std::string(100000, ')')).find("nested parentheses"),
            std::string::npos);
}

TEST(RunConfig, HugeSizesAreAClearErrorNotAnOverflow) {
  // n_embd 10^8 used to resolve, and the parameter accounting then overflowed int64 to a
  // negative count (8*C*C per MLP layer); every size that enters a product is bounded.
  auto error = [](const std::string& key, const std::string& value) {
    RunConfig c;
    c.set_depth(2);
    apply_override(&c, key, value);
    try {
      resolve_config(c);
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_NE(error("n_embd", "100000000").find("n_embd = 100000000: expected 1..1048576"), std::string::npos)
      << error("n_embd", "100000000");
  EXPECT_NE(error("vocab_size", "2147483647").find("vocab_size = 2147483647: expected 2..268435456"),
            std::string::npos);
  EXPECT_NE(error("max_seq_len", "2000000000").find("max_seq_len = 2000000000: expected 1..16777216"),
            std::string::npos);
  EXPECT_NE(error("mamba_dt_rank", "2000000000").find("mamba_dt_rank = 2000000000"), std::string::npos);
  EXPECT_NE(error("device_batch_size", "2000000000").find("device_batch_size = 2000000000"), std::string::npos);
  EXPECT_EQ(error("n_embd", "1048576"), "accepted");
}

TEST(RunConfig, ListPatternWithAliasesAndCase) {
  RunConfig c;
  for (const char* s : {"T", "transformer", "MAMBA", "m"}) c.add_block_pattern(s);
  c = resolve_config(c);
  EXPECT_EQ(c.n_layer(), 4);  // taken from the pattern when nothing else sets it
  EXPECT_EQ(pattern_string(c), "TTMM");
}

TEST(RunConfig, BadEntryNamesPosition) {
  RunConfig c;
  for (const char* s : {"T", "T", "M", "X"}) c.add_block_pattern(s);
  EXPECT_EQ(error_of([&] { resolve_config(c); }),
            "block_pattern[3] = \"X\": expected T/transformer, M/mamba or M2/mamba2");
  EXPECT_NE(error_of([] { parse_block_pattern("T*2,Q"); }).find("block_pattern[2] = \"Q\""),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_block_pattern("(T,M"); }).find("missing ')'"), std::string::npos);
}

// The compact form names the layer, as the list form does (not a character position).
TEST(RunConfig, CompactPatternErrorNamesTheLayerIndex) {
  RunConfig c;
  c.add_block_pattern("T,T,X,T");
  const std::string e = error_of([&] { resolve_config(c); });
  EXPECT_EQ(e.find("block_pattern[2] = \"X\": unknown block type \"X\" in block_pattern = \"T,T,X,T\""), 0u) << e;
  EXPECT_EQ(e.find("position"), std::string::npos) << e;
  EXPECT_EQ(error_of([] { parse_block_pattern("TTXM"); }).find("block_pattern[2] = \"X\""), 0u);
  EXPECT_EQ(error_of([] { parse_block_pattern("(T,M)*2,mambo"); }).find("block_pattern[4] = \"mambo\""), 0u);
  EXPECT_EQ(error_of([] { parse_block_pattern("T*3,(M,Z)"); }).find("block_pattern[4] = \"Z\""), 0u);
  // Syntax errors have no layer: they name the character, counted from 1.
  EXPECT_NE(error_of([] { parse_block_pattern("T*"); }).find("at character 3"), std::string::npos);
}

TEST(RunConfig, UnknownKeySuggestsTheNearest) {
  RunConfig c;
  const std::string e = error_of([&] { apply_override(&c, "num_iteration", "5"); });
  EXPECT_NE(e.find("unknown config key \"num_iteration\"; did you mean \"num_iterations\"?"), std::string::npos) << e;
  EXPECT_NE(e.find("hylab config keys"), std::string::npos) << e;
  const std::string far = error_of([&] { apply_override(&c, "zebra", "5"); });
  EXPECT_EQ(far.find("did you mean"), std::string::npos) << far;
}

TEST(RunConfig, DisplayJsonWritesInt64AsNumbers) {
  RunConfig c;
  c.set_total_batch_size(1048576);
  c.set_seed(int64_t{1} << 40);
  const std::string text = config_to_display_json(resolve_config(c));
  const auto j = nlohmann::json::parse(text);
  ASSERT_TRUE(j["total_batch_size"].is_number_integer()) << text;
  EXPECT_EQ(j["total_batch_size"].get<int64_t>(), 1048576);
  EXPECT_EQ(j["seed"].get<int64_t>(), int64_t{1} << 40);
  EXPECT_TRUE(j["eval_tokens"].is_number_integer());
  EXPECT_EQ(text.find("\"depth\""), text.find("{") + 4) << "field order kept";
  // It reads back to the same config.
  EXPECT_EQ(config_to_json(config_from_json(text)), config_to_json(resolve_config(c)));
}

// A setting a trial uses is a config key, so a sweep can vary it (probe_steps was a flag).
TEST(RunConfig, ProbeStepsIsAConfigKey) {
  RunConfig c;
  EXPECT_EQ(resolve_config(c).probe_steps(), 32);
  apply_override(&c, "probe_steps", "0");
  EXPECT_EQ(resolve_config(c).probe_steps(), 0);
  apply_override(&c, "probe-steps", "-1");
  EXPECT_NE(error_of([&] { resolve_config(c); }).find("probe_steps = -1"), std::string::npos);
}

TEST(RunConfig, LengthMismatchSaysBothNumbers) {
  RunConfig c;
  c.set_n_layer(12);
  c.add_block_pattern("T*10");
  const std::string e = error_of([&] { resolve_config(c); });
  EXPECT_NE(e.find("10 entries"), std::string::npos) << e;
  EXPECT_NE(e.find("n_layer is 12"), std::string::npos) << e;
}

TEST(RunConfig, RangeChecksNameTheField) {
  RunConfig c;
  c.set_mamba_dt_min(0.5);
  c.set_mamba_dt_max(0.1);
  EXPECT_NE(error_of([&] { resolve_config(c); }).find("mamba_dt_min"), std::string::npos);
  c.Clear();
  c.set_n_embd(768);
  c.set_n_head(5);
  EXPECT_NE(error_of([&] { resolve_config(c); }).find("n_head = 5"), std::string::npos);
  c.Clear();
  c.set_n_kv_head(4);
  EXPECT_NE(error_of([&] { resolve_config(c); }).find("n_kv_head = 4 must divide"), std::string::npos);
  c.Clear();
  c.set_mamba_d_conv(7);
  EXPECT_NE(error_of([&] { resolve_config(c); }).find("mamba_d_conv = 7"), std::string::npos);
}

TEST(RunConfig, OverridesAcceptHyphensAndLists) {
  RunConfig c;
  auto rest = apply_override_args(
      &c, {"--device-batch-size=16", "--max_seq_len", "1024", "--block_pattern=[T, M]",
           "--mamba_use_mlp", "--not_a_key=3", "positional"});
  EXPECT_EQ(c.device_batch_size(), 16);
  EXPECT_EQ(c.max_seq_len(), 1024);
  EXPECT_EQ(c.block_pattern_size(), 2);
  EXPECT_TRUE(c.mamba_use_mlp());
  ASSERT_EQ(rest.size(), 2u);
  EXPECT_EQ(rest[0], "--not_a_key=3");
  EXPECT_NE(error_of([&] { apply_override(&c, "depth", "four"); }).find("depth = \"four\": expected an integer"),
            std::string::npos);
}

TEST(RunConfig, YamlFileAndJsonRoundTrip) {
  const std::string path = ::testing::TempDir() + "/cfg.yaml";
  {
    std::ofstream f(path);
    f << "depth: 4\nblock_pattern: [T, M, T, M]\nmamba_d_state: 32\nmax_seq_len: 128\n";
  }
  RunConfig r = resolve_config(load_config_file(path));
  EXPECT_EQ(r.n_embd(), 256);
  EXPECT_EQ(pattern_string(r), "TMTM");
  const std::string json = config_to_json(r);
  RunConfig back = config_from_json(json);
  EXPECT_EQ(config_to_json(back), json);
  EXPECT_EQ(config_hash(back), config_hash(r));
  EXPECT_EQ(config_to_json(resolve_config(back)), json);  // resolving is idempotent

  {
    std::ofstream f(path);
    f << "depth: 4\nmamba_d_sate: 32\n";
  }
  EXPECT_NE(error_of([&] { load_config_file(path); }).find("unknown config key \"mamba_d_sate\""),
            std::string::npos);
}

TEST(RunConfig, ResolvedConfigWithoutDepthResolvesToItself) {
  RunConfig c;
  c.set_n_layer(3);
  c.set_n_embd(128);
  c.set_n_head(2);
  RunConfig r = resolve_config(c);
  EXPECT_EQ(r.depth(), 0);
  EXPECT_EQ(config_to_json(resolve_config(r)), config_to_json(r));
}

TEST(RunConfig, BudgetsAndCheckpointKeep) {
  RunConfig c;
  apply_override(&c, "target-flops", "1e18");
  apply_override(&c, "checkpoint_keep", "{last: 2, best: 0}");
  c = resolve_config(c);
  EXPECT_EQ(c.target_flops(), 1e18);
  EXPECT_EQ(c.target_tokens(), -1);
  EXPECT_EQ(c.checkpoint_keep_last(), 2);
  EXPECT_EQ(c.checkpoint_keep_best(), 0);
  EXPECT_EQ(resolve_config(RunConfig()).checkpoint_keep_last(), 1);  // default: last and best
  EXPECT_EQ(resolve_config(RunConfig()).checkpoint_keep_best(), 1);
  EXPECT_TRUE(is_config_key("checkpoint_keep"));
  // The flag form: --checkpoint_keep_last=-1 keeps every checkpoint.
  RunConfig f;
  EXPECT_TRUE(apply_override_args(&f, {"--checkpoint-keep-last=-1", "--target_tokens", "5e8"}).empty());
  EXPECT_EQ(resolve_config(f).checkpoint_keep_last(), -1);
  EXPECT_EQ(f.target_tokens(), 5e8);

  auto bad = [](const std::string& key, const std::string& value) {
    return error_of([&] {
      RunConfig x;
      apply_override(&x, key, value);
      resolve_config(x);
    });
  };
  EXPECT_NE(bad("checkpoint_keep", "{last: 1, newest: 2}").find("checkpoint_keep.newest: unknown key; allowed: last, best"),
            std::string::npos);
  EXPECT_NE(bad("checkpoint_keep", "3").find("checkpoint_keep: expected a map"), std::string::npos);
  EXPECT_NE(bad("checkpoint_keep", "{last: x}").find("checkpoint_keep.last = \"x\": expected an integer"),
            std::string::npos);
  EXPECT_NE(bad("checkpoint_keep_last", "0").find("checkpoint_keep_last = 0: expected >= 1"), std::string::npos);
  EXPECT_NE(bad("checkpoint_keep_best", "-2").find("checkpoint_keep_best = -2: expected >= 0"), std::string::npos);
  EXPECT_NE(bad("target_flops", "0").find("target_flops = 0: expected > 0, or -1"), std::string::npos);
  // Two horizons at once are refused, naming both.
  const std::string both = error_of([] {
    RunConfig x;
    x.set_num_iterations(100);
    x.set_target_flops(1e15);
    resolve_config(x);
  });
  EXPECT_NE(both.find("num_iterations = 100 and target_flops = 1e+15 both set the horizon"), std::string::npos)
      << both;
}

TEST(RunConfig, GptConfigView) {
  RunConfig c;
  c.set_depth(4);
  c.add_block_pattern("T,M*3");
  c.set_vocab_size(1000);
  GPTConfig g = gpt_config(resolve_config(c));
  EXPECT_EQ(g.count(BlockType::kMamba), 3);
  EXPECT_EQ(g.padded_vocab_size(), 1024);
  EXPECT_EQ(g.d_inner(), 512);
  EXPECT_EQ(g.head_dim(), 128);
}

}  // namespace
}  // namespace hylab
