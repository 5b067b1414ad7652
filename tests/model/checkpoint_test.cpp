// Checkpoint directories: round trip (bit-identical logits), extra tensors and meta,
// old checkpoints without block_pattern, mismatches, atomic replacement, newest lookup.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "common/check.h"
#include "model/checkpoint.h"
#include "model/gpt.h"
#include "tests/model/test_util.h"

namespace hylab {
namespace {
namespace fs = std::filesystem;

using testing::tiny_run_config;

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("hylab_ckpt_test_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  static nlohmann::json meta_for(const RunConfig& r) {
    return {{"config", nlohmann::json::parse(config_to_json(r))}, {"step", 7}};
  }
  static GPT trained_looking_model(const RunConfig& r, int seed) {
    torch::manual_seed(seed);
    GPT model(gpt_config(r));
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) p.add_(torch::randn_like(p) * 0.05);
    return model;
  }
  fs::path root_;
};

TEST_F(CheckpointTest, RoundTripGivesBitIdenticalLogits) {
  for (const std::string pattern : {"TMTM", "MMTT", "TTTT"}) {
    RunConfig r = tiny_run_config(pattern, {{"mamba_use_mlp", "true"}});
    GPT model = trained_looking_model(r, 1);
    const std::string dir = (root_ / ("step_" + pattern)).string();
    std::map<std::string, torch::Tensor> extra = {
        {"optim.muon.momentum.0", torch::randn({3, 4})},
        {"rng.cpu", torch::randint(255, {16}, torch::kUInt8)},
        {"loader.position", torch::tensor({int64_t{123456789012}})},
        {"half", torch::randn({5}).to(torch::kBFloat16)}};
    save_checkpoint(dir, *model, extra, meta_for(r));
    for (const char* f : {"model.pt", "extra.pt", "meta.json"}) EXPECT_TRUE(fs::exists(fs::path(dir) / f));
    if (const char* keep = std::getenv("HYLAB_KEEP_CKPT")) {  // for cross-version checks by hand
      fs::remove_all(fs::path(keep) / pattern);
      fs::create_directories(keep);
      fs::copy(dir, fs::path(keep) / pattern, fs::copy_options::recursive);
    }

    Checkpoint info;
    GPT loaded = load_model(dir, torch::kCPU, &info);
    auto idx = torch::randint(100, {2, 12}, torch::kLong);
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(torch::equal(model->forward(idx), loaded->forward(idx))) << pattern;
    EXPECT_EQ(config_to_json(info.config), config_to_json(r));
    EXPECT_EQ(info.meta["step"], 7);
    EXPECT_EQ(info.meta["format"], 1);
    ASSERT_EQ(info.extra.size(), extra.size());
    for (const auto& [k, v] : extra) {
      ASSERT_TRUE(info.extra.count(k)) << k;
      EXPECT_EQ(info.extra[k].scalar_type(), v.scalar_type()) << k;
      EXPECT_TRUE(torch::equal(info.extra[k], v)) << k;
    }
  }
}

TEST_F(CheckpointTest, LoadIntoAnExistingModelAndReplaceAtomically) {
  RunConfig r = tiny_run_config("TM");
  GPT a = trained_looking_model(r, 2);
  GPT b = trained_looking_model(r, 3);
  const std::string dir = (root_ / "checkpoints" / "step_000010").string();
  save_checkpoint(dir, *a, {}, meta_for(r));
  save_checkpoint(dir, *b, {}, meta_for(r));  // replaces
  GPT c = trained_looking_model(r, 4);
  load_checkpoint(dir, c.get(), torch::kCPU);
  for (size_t i = 0; i < b->parameters().size(); ++i) {
    EXPECT_TRUE(torch::equal(b->parameters()[i], c->parameters()[i]));
  }
  // No temporary or old directories are left behind.
  int entries = 0;
  for (const auto& e : fs::directory_iterator(root_ / "checkpoints")) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 1);
}

TEST_F(CheckpointTest, OldCheckpointWithoutBlockPatternLoadsAsAllTransformer) {
  RunConfig r = tiny_run_config("");  // all T, n_layer 12 (the default)
  r.set_n_layer(3);
  r.clear_block_pattern();
  r.clear_depth();
  GPT model = trained_looking_model(resolve_config(r), 5);
  const std::string dir = (root_ / "old").string();
  save_checkpoint(dir, *model, {}, meta_for(resolve_config(r)));
  // Rewrite meta.json the way a pre-hybrid checkpoint looked: no block_pattern, no mamba_*.
  nlohmann::json meta;
  std::ifstream(fs::path(dir) / "meta.json") >> meta;
  for (const char* k : {"block_pattern", "mamba_d_state", "mamba_d_conv", "mamba_expand",
                        "mamba_use_mlp", "mamba_dt_rank", "depth"}) {
    meta["config"].erase(k);
  }
  std::ofstream(fs::path(dir) / "meta.json") << meta.dump(2);
  Checkpoint info;
  GPT loaded = load_model(dir, torch::kCPU, &info);
  EXPECT_EQ(compact_block_pattern(loaded->config().block_pattern), "T*3");
  auto idx = torch::randint(100, {1, 8}, torch::kLong);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(model->forward(idx), loaded->forward(idx)));
}

TEST_F(CheckpointTest, MismatchesAreNamed) {
  RunConfig r = tiny_run_config("TM");
  GPT model = trained_looking_model(r, 6);
  const std::string dir = (root_ / "ck").string();
  // Meta that does not describe the model.
  try {
    save_checkpoint(dir, *model, {}, meta_for(tiny_run_config("MT")));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("does not describe the model"), std::string::npos) << e.what();
  }
  EXPECT_THROW(save_checkpoint(dir, *model, {}, nlohmann::json{{"step", 1}}), Error);  // no config
  save_checkpoint(dir, *model, {}, meta_for(r));
  GPT other(gpt_config(tiny_run_config("TT")));
  try {
    load_checkpoint(dir, other.get(), torch::kCPU);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("block_pattern T,M"), std::string::npos) << e.what();
  }
  // Tampered weights: a tensor missing from model.pt.
  {
    auto v = torch::pickle_load([&] {
      std::ifstream in(fs::path(dir) / "model.pt", std::ios::binary);
      return std::vector<char>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    }());
    auto dict = v.toGenericDict();
    dict.erase("h.1.mamba.A_log");
    auto bytes = torch::pickle_save(dict);
    std::ofstream(fs::path(dir) / "model.pt", std::ios::binary).write(bytes.data(), bytes.size());
  }
  GPT same(gpt_config(r));
  try {
    load_checkpoint(dir, same.get(), torch::kCPU);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing [h.1.mamba.A_log]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(load_checkpoint((root_ / "nope").string(), nullptr, torch::kCPU), Error);
}

TEST_F(CheckpointTest, ResolvesTheNewestCheckpointOfARunDir) {
  RunConfig r = tiny_run_config("T");
  GPT model = trained_looking_model(r, 7);
  EXPECT_THROW(resolve_checkpoint_dir(root_.string()), Error);
  for (const char* s : {"step_000100", "step_000020", "step_001000"}) {
    save_checkpoint((root_ / "checkpoints" / s).string(), *model, {}, meta_for(r));
  }
  fs::create_directories(root_ / "checkpoints" / "step_002000.tmp.1");  // incomplete: ignored
  fs::create_directories(root_ / "checkpoints" / "step_003000");        // no meta.json: ignored
  EXPECT_EQ(resolve_checkpoint_dir(root_.string()), (root_ / "checkpoints" / "step_001000").string());
  const std::string one = (root_ / "checkpoints" / "step_000020").string();
  EXPECT_EQ(resolve_checkpoint_dir(one), one);
}

}  // namespace
}  // namespace hylab
