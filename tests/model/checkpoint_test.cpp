// Checkpoint directories: round trip (bit-identical logits), extra tensors and meta,
// old checkpoints without block_pattern, mismatches, atomic replacement, newest lookup.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <cstring>
#include <sys/stat.h>
#include <unistd.h>


#include "common/check.h"
#include "model/checkpoint.h"
#include "model/gpt.h"
#include "tests/model/test_files.h"
#include "tests/model/test_util.h"

namespace hylab {
namespace {

using testing::tiny_run_config;

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = testing::make_temp_dir("ckpt_test");
  }
  void TearDown() override { testing::remove_tree(root_); }

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
  std::string root_;
};

TEST_F(CheckpointTest, RoundTripGivesBitIdenticalLogits) {
  for (const std::string pattern : {"TMTM", "MMTT", "TTTT"}) {
    RunConfig r = tiny_run_config(pattern, {{"mamba_use_mlp", "true"}});
    GPT model = trained_looking_model(r, 1);
    const std::string dir = testing::join(root_, "step_" + pattern);
    std::map<std::string, torch::Tensor> extra = {
        {"optim.muon.momentum.0", torch::randn({3, 4})},
        {"rng.cpu", torch::randint(255, {16}, torch::kUInt8)},
        {"loader.position", torch::tensor({int64_t{123456789012}})},
        {"half", torch::randn({5}).to(torch::kBFloat16)}};
    save_checkpoint(dir, *model, extra, meta_for(r));
    for (const char* f : {"model.pt", "extra.pt", "meta.json"}) EXPECT_TRUE(testing::exists(testing::join(dir, f)));
    if (const char* keep = std::getenv("HYLAB_KEEP_CKPT")) {  // for cross-version checks by hand
      save_checkpoint(testing::join(keep, pattern), *model, extra, meta_for(r));
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
  const std::string dir = testing::join(root_, "checkpoints/step_000010");
  save_checkpoint(dir, *a, {}, meta_for(r));
  save_checkpoint(dir, *b, {}, meta_for(r));  // replaces
  GPT c = trained_looking_model(r, 4);
  load_checkpoint(dir, c.get(), torch::kCPU);
  for (size_t i = 0; i < b->parameters().size(); ++i) {
    EXPECT_TRUE(torch::equal(b->parameters()[i], c->parameters()[i]));
  }
  // No temporary or old directories are left behind.
  EXPECT_EQ(testing::list_dir(testing::join(root_, "checkpoints")),
            std::vector<std::string>{"step_000010"});
}

TEST_F(CheckpointTest, OldCheckpointWithoutBlockPatternLoadsAsAllTransformer) {
  RunConfig r = tiny_run_config("");  // all T, n_layer 12 (the default)
  r.set_n_layer(3);
  r.clear_block_pattern();
  r.clear_depth();
  GPT model = trained_looking_model(resolve_config(r), 5);
  const std::string dir = testing::join(root_, "old");
  save_checkpoint(dir, *model, {}, meta_for(resolve_config(r)));
  // Rewrite meta.json the way a pre-hybrid checkpoint looked: no block_pattern, no mamba_*.
  nlohmann::json meta = nlohmann::json::parse(testing::read_text(testing::join(dir, "meta.json")));
  for (const char* k : {"block_pattern", "mamba_d_state", "mamba_d_conv", "mamba_expand",
                        "mamba_use_mlp", "mamba_dt_rank", "depth"}) {
    meta["config"].erase(k);
  }
  testing::write_text(testing::join(dir, "meta.json"), meta.dump(2));
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
  const std::string dir = testing::join(root_, "ck");
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
    auto tensors = load_safetensors(testing::join(dir, "model.pt"));
    tensors.erase("h.1.mamba.A_log");
    save_safetensors(testing::join(dir, "model.pt"), tensors);
  }
  GPT same(gpt_config(r));
  try {
    load_checkpoint(dir, same.get(), torch::kCPU);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing [h.1.mamba.A_log]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(load_checkpoint(testing::join(root_, "nope"), nullptr, torch::kCPU), Error);
  // A truncated file is detected, not read past its end.
  const std::string path = testing::join(dir, "model.pt");
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  ASSERT_EQ(::truncate(path.c_str(), st.st_size - 100), 0);
  try {
    load_safetensors(path);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
}

// The file layout is safetensors: u64 header length, JSON header, raw bytes.
TEST_F(CheckpointTest, SafetensorsLayout) {
  const std::string path = testing::join(root_, "t.safetensors");
  save_safetensors(path, {{"a", torch::tensor({1.5f, -2.0f})}, {"b", torch::tensor({int64_t{7}})}});
  const std::string bytes = testing::read_text(path);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  EXPECT_EQ(n % 8, 0u);
  auto header = nlohmann::json::parse(bytes.substr(8, n));
  EXPECT_EQ(header["a"]["dtype"], "F32");
  EXPECT_EQ(header["a"]["shape"], nlohmann::json::array({2}));
  EXPECT_EQ(header["a"]["data_offsets"], nlohmann::json::array({0, 8}));
  EXPECT_EQ(header["b"]["dtype"], "I64");
  EXPECT_EQ(bytes.size(), 8 + n + 16);
  float a1;
  std::memcpy(&a1, bytes.data() + 8 + n + 4, 4);
  EXPECT_EQ(a1, -2.0f);
}

TEST_F(CheckpointTest, ResolvesTheNewestCheckpointOfARunDir) {
  RunConfig r = tiny_run_config("T");
  GPT model = trained_looking_model(r, 7);
  EXPECT_THROW(resolve_checkpoint_dir(root_), Error);
  const std::string ckpts = testing::join(root_, "checkpoints");
  for (const char* s : {"step_000100", "step_000020", "step_001000"}) {
    save_checkpoint(testing::join(ckpts, s), *model, {}, meta_for(r));
  }
  testing::make_dirs(testing::join(ckpts, "step_002000.tmp.1"));  // incomplete: ignored
  testing::make_dirs(testing::join(ckpts, "step_003000"));        // no meta.json: ignored
  EXPECT_EQ(resolve_checkpoint_dir(root_), testing::join(ckpts, "step_001000"));
  const std::string one = testing::join(ckpts, "step_000020");
  EXPECT_EQ(resolve_checkpoint_dir(one), one);
}

}  // namespace
}  // namespace hylab
