// Every configs/*.yaml loads, resolves to the documented shape, round-trips through JSON and
// builds a model whose parameter count matches the formula.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <set>

#include <nlohmann/json.hpp>

#include "model/accounting.h"
#include "model/gpt.h"
#include "tests/model/test_files.h"

namespace hylab {
namespace {

struct Expected {
  std::string pattern;  // compact
  int n_embd;
  int max_seq_len;
};

const std::map<std::string, Expected>& expected_configs() {
  static const std::map<std::string, Expected> e = {
      {"transformer_d20", {"T*20", 1280, 2048}},
      {"mamba_d20", {"M*20", 1280, 2048}},
      {"hybrid_early_t_late_m_d20", {"T*12,M*8", 1280, 2048}},
      {"hybrid_alternating_d20", {"T,M,T,M,T,M,T,M,T,M,T,M,T,M,T,M,T,M,T,M", 1280, 2048}},
      {"hybrid_strategic_d20", {"T*2,M*7,T,M*6,T,M,T*2", 1280, 2048}},
      {"rtx3070_d16", {"T*10,M*6", 1024, 1024}},
      {"d4_transformer", {"T*4", 256, 128}},
      {"d4_mamba", {"M*4", 256, 128}},
      {"d4_alternating", {"T,M,T,M", 256, 128}},
      {"d12", {"T*12", 768, 2048}},
  };
  return e;
}

TEST(Configs, EveryFileIsKnownAndEveryKnownFileExists) {
  std::set<std::string> found;
  for (const std::string& f : testing::list_dir("configs")) {
    if (f.size() > 5 && f.compare(f.size() - 5, 5, ".yaml") == 0) found.insert(f.substr(0, f.size() - 5));
  }
  for (const auto& [name, e] : expected_configs()) EXPECT_TRUE(found.count(name)) << name;
  for (const auto& name : found) EXPECT_TRUE(expected_configs().count(name)) << "untested config " << name;
}

TEST(Configs, LoadResolveRoundTripAndBuild) {
  for (const auto& [name, e] : expected_configs()) {
    const auto t0 = std::chrono::steady_clock::now();
    RunConfig r = resolve_config(load_config_file("configs/" + name + ".yaml"));
    GPTConfig g = gpt_config(r);
    EXPECT_EQ(compact_block_pattern(g.block_pattern), e.pattern) << name;
    EXPECT_EQ(g.n_embd, e.n_embd) << name;
    EXPECT_EQ(r.max_seq_len(), e.max_seq_len) << name;
    EXPECT_EQ(r.name(), name) << name;
    // The resolved config serialises and parses back identically (and resolves to itself).
    RunConfig back = config_from_json(config_to_json(r));
    EXPECT_EQ(config_to_json(back), config_to_json(r)) << name;
    EXPECT_EQ(config_hash(back), config_hash(r)) << name;

    GPT model(g);
    int64_t n = 0;
    for (const auto& p : model->parameters()) n += p.numel();
    EXPECT_EQ(n, count_params(g).total) << name;
    if (g.n_embd <= 256) {  // run the small ones
      torch::NoGradGuard no_grad;
      auto logits = model->forward(torch::randint(g.vocab_size, {1, 16}, torch::kLong));
      EXPECT_EQ(logits.size(2), g.vocab_size) << name;
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%-28s %-44s %12lld params  built in %.1f s\n", name.c_str(), e.pattern.c_str(),
                static_cast<long long>(n), s);
  }
}

// Issue 14: `hylab model info` said 19.23M params for configs/d4_alternating.yaml (the schema's
// 32768-token vocabulary) while the trainer built 6.64M (the data's). It must take the
// vocabulary from the config's data folder, as the trainer does.
TEST(Configs, ModelInfoUsesTheDataVocabularyAsTheTrainerDoes) {
  const char* bin = std::getenv("HYLAB_BIN");
  if (bin == nullptr) GTEST_SKIP() << "HYLAB_BIN not set (run through ctest)";
  const std::string dir = testing::make_temp_dir("model_info");
  {
    std::ofstream meta(testing::join(dir, "meta.json"));
    meta << R"({"vocab_size": 8192, "bos_id": 1, "train_tokens": 1000, "val_tokens": 100})";
  }
  auto info = [&](const std::string& extra) {
    const std::string cmd = std::string(bin) + " model info --config configs/d4_alternating.yaml --format json " + extra;
    std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), pclose);
    std::string out;
    char buf[4096];
    while (fgets(buf, sizeof buf, pipe.get()) != nullptr) out += buf;
    return nlohmann::json::parse(out);
  };
  RunConfig cfg = load_config_file("configs/d4_alternating.yaml");
  cfg.set_vocab_size(8192);
  const int64_t trainer_params = count_params(gpt_config(resolve_config(cfg))).total;

  const auto from_data = info("--data " + dir);
  EXPECT_EQ(from_data["config"]["vocab_size"], 8192);
  EXPECT_EQ(from_data["params_total"], trainer_params);
  EXPECT_NE(from_data["vocab_source"].get<std::string>().find("meta.json"), std::string::npos);
  // Cache bytes in the dtype the trainer's cache has on this machine (fp32 without a GPU).
  if (!torch::cuda::is_available()) {
    const GPTConfig g = gpt_config(resolve_config(cfg));
    EXPECT_EQ(from_data["cache_bytes"], cache_bytes(g, g.sequence_len, 4).total);
  }
  // A vocab_size in the config wins over the data's.
  const auto set = info("--data " + dir + " --vocab_size 300");
  EXPECT_EQ(set["config"]["vocab_size"], 300);
  // No prepared data: the schema default, and the output says why.
  const auto missing = info("--data " + testing::join(dir, "absent"));
  EXPECT_EQ(missing["config"]["vocab_size"], 32768);
  EXPECT_NE(missing["vocab_source"].get<std::string>().find("schema default"), std::string::npos);
  testing::remove_tree(dir);
}

}  // namespace
}  // namespace hylab
