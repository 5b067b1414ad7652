// Checkpoint directories: round trip (bit-identical logits), extra tensors and meta,
// old checkpoints without block_pattern, mismatches, atomic replacement, newest lookup.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
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
    for (const char* f : {"model.safetensors", "extra.safetensors", "meta.json"}) {
      EXPECT_TRUE(testing::exists(testing::join(dir, f))) << f;
    }
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
  // Tampered weights: a tensor missing from model.safetensors.
  {
    auto tensors = load_safetensors(testing::join(dir, "model.safetensors"));
    tensors.erase("h.1.mamba.A_log");
    save_safetensors(testing::join(dir, "model.safetensors"), tensors);
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
  const std::string path = testing::join(dir, "model.safetensors");
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

// The exact bytes the safetensors format prescribes for two small tensors, written out by
// hand from the spec (https://github.com/huggingface/safetensors#format): u64 little-endian
// header size, the JSON header (padded with spaces to a multiple of 8), the raw bytes.
TEST_F(CheckpointTest, SafetensorsBytesAreTheSpecsByteForByte) {
  const std::string path = testing::join(root_, "two.safetensors");
  save_safetensors(path, {{"a", torch::tensor({1.5f, -2.0f})}, {"b", torch::tensor({int64_t{7}})}});
  std::string header =
      "{\"__metadata__\":{\"format\":\"pt\"},"
      "\"a\":{\"data_offsets\":[0,8],\"dtype\":\"F32\",\"shape\":[2]},"
      "\"b\":{\"data_offsets\":[8,16],\"dtype\":\"I64\",\"shape\":[1]}}";
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string want;
  for (int i = 0; i < 8; ++i) want.push_back(static_cast<char>((header.size() >> (8 * i)) & 0xff));
  want += header;
  const unsigned char data[] = {0x00, 0x00, 0xc0, 0x3f,   // 1.5f
                                0x00, 0x00, 0x00, 0xc0,   // -2.0f
                                0x07, 0, 0, 0, 0, 0, 0, 0};  // int64 7
  want.append(reinterpret_cast<const char*>(data), sizeof(data));
  EXPECT_EQ(testing::read_text(path), want);
}

// A minimal safetensors reader written from the spec, independent of load_safetensors, as
// Python's safetensors would check a file: header size, JSON object, known dtypes, shapes
// that match the byte ranges, ranges contiguous from 0 covering the whole data section,
// __metadata__ a map of strings. Returns name -> (dtype, shape, bytes).
struct SpecTensor {
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};
std::map<std::string, SpecTensor> read_by_the_spec(const std::string& file, std::string* why) {
  static const std::map<std::string, int64_t> kDtypeBytes = {
      {"BOOL", 1}, {"U8", 1}, {"I8", 1}, {"I16", 2}, {"U16", 2}, {"F16", 2}, {"BF16", 2}, {"I32", 4},
      {"U32", 4},  {"F32", 4}, {"F64", 8}, {"I64", 8}, {"U64", 8}};
  std::map<std::string, SpecTensor> out;
  auto bad = [&](const std::string& w) {
    *why = w;
    return std::map<std::string, SpecTensor>{};
  };
  if (file.size() < 8) return bad("shorter than 8 bytes");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(file[i])) << (8 * i);
  if (n > 100000000 || 8 + n > file.size()) return bad("header size out of range");
  const std::string text = file.substr(8, n);
  if (text.empty() || text[0] != '{') return bad("header does not start with '{'");
  const size_t end = text.find_last_not_of(' ');
  if (text[end] != '}') return bad("header padding is not spaces after '}'");
  nlohmann::json h = nlohmann::json::parse(text, nullptr, false);
  if (h.is_discarded() || !h.is_object()) return bad("header is not a JSON object");
  const std::string data = file.substr(8 + n);
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (auto it = h.begin(); it != h.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it.value().is_object()) return bad("__metadata__ is not an object");
      for (auto m = it.value().begin(); m != it.value().end(); ++m) {
        if (!m.value().is_string()) return bad("__metadata__." + m.key() + " is not a string");
      }
      continue;
    }
    const nlohmann::json& e = it.value();
    if (!e.is_object() || e.size() != 3 || !e.contains("dtype") || !e.contains("shape") ||
        !e.contains("data_offsets")) {
      return bad(it.key() + ": expected exactly dtype, shape, data_offsets");
    }
    SpecTensor t;
    t.dtype = e["dtype"].get<std::string>();
    if (!kDtypeBytes.count(t.dtype)) return bad(it.key() + ": unknown dtype " + t.dtype);
    int64_t numel = 1;
    for (const auto& d : e["shape"]) {
      if (!d.is_number_unsigned()) return bad(it.key() + ": shape entries must be >= 0 integers");
      t.shape.push_back(d.get<int64_t>());
      numel *= t.shape.back();
    }
    const auto& off = e["data_offsets"];
    if (!off.is_array() || off.size() != 2) return bad(it.key() + ": data_offsets is not [begin, end]");
    const int64_t b = off[0].get<int64_t>(), en = off[1].get<int64_t>();
    if (b > en || en > static_cast<int64_t>(data.size())) return bad(it.key() + ": data_offsets out of range");
    if (en - b != numel * kDtypeBytes.at(t.dtype)) return bad(it.key() + ": byte range does not match shape");
    t.bytes = data.substr(b, en - b);
    ranges.push_back({b, en});
    out[it.key()] = t;
  }
  std::sort(ranges.begin(), ranges.end());
  int64_t at = 0;
  for (const auto& [b, en] : ranges) {
    if (b != at) return bad("data section has a hole or an overlap");
    at = en;
  }
  if (at != static_cast<int64_t>(data.size())) return bad("data section has bytes no tensor owns");
  return out;
}

TEST_F(CheckpointTest, CheckpointTensorFilesAreSafetensorsByTheSpec) {
  RunConfig r = tiny_run_config("TM", {{"mamba_use_mlp", "true"}});
  GPT model = trained_looking_model(r, 3);
  const std::string dir = testing::join(root_, "spec");
  save_checkpoint(dir, *model, {{"rng", torch::randint(255, {16}, torch::kUInt8)},
                                {"half", torch::randn({3, 5}).to(torch::kBFloat16)},
                                {"step", torch::tensor({int64_t{42}})}},
                  meta_for(r));
  std::string why;
  const auto weights = read_by_the_spec(testing::read_text(testing::join(dir, "model.safetensors")), &why);
  ASSERT_TRUE(why.empty()) << why;
  size_t n_params = 0;
  for (const auto& item : model->named_parameters(/*recurse=*/true)) {
    ++n_params;
    ASSERT_TRUE(weights.count(item.key())) << item.key();
    const SpecTensor& t = weights.at(item.key());
    EXPECT_EQ(t.dtype, "F32") << item.key();
    EXPECT_EQ(t.shape, item.value().sizes().vec()) << item.key();
    const torch::Tensor v = item.value().detach().contiguous();
    ASSERT_EQ(t.bytes.size(), v.numel() * sizeof(float));
    EXPECT_EQ(std::memcmp(t.bytes.data(), v.data_ptr(), t.bytes.size()), 0) << item.key() << " differs";
  }
  EXPECT_GE(weights.size(), n_params);  // + buffers
  const auto extra = read_by_the_spec(testing::read_text(testing::join(dir, "extra.safetensors")), &why);
  ASSERT_TRUE(why.empty()) << why;
  EXPECT_EQ(extra.at("half").dtype, "BF16");
  EXPECT_EQ(extra.at("half").shape, (std::vector<int64_t>{3, 5}));
  EXPECT_EQ(extra.at("rng").dtype, "U8");
  int64_t step = 0;
  std::memcpy(&step, extra.at("step").bytes.data(), 8);
  EXPECT_EQ(step, 42);

  // The reader rejects what the spec forbids (so a pass above means something).
  std::string file = testing::read_text(testing::join(dir, "extra.safetensors"));
  read_by_the_spec(file + "x", &why);
  EXPECT_EQ(why, "data section has bytes no tensor owns");
  why.clear();
  read_by_the_spec(file.substr(0, 8) + "[" + file.substr(9), &why);
  EXPECT_EQ(why, "header does not start with '{'");
}

// Checkpoints written before the rename (model.pt / extra.pt, the same layout) still load.
TEST_F(CheckpointTest, ReadsCheckpointsWithTheOldPtNames) {
  RunConfig r = tiny_run_config("MT");
  GPT model = trained_looking_model(r, 5);
  const std::string dir = testing::join(root_, "old");
  save_checkpoint(dir, *model, {{"x", torch::tensor({3.0f})}}, meta_for(r));
  for (const char* stem : {"model", "extra"}) {
    const std::string from = testing::join(dir, std::string(stem) + ".safetensors");
    ASSERT_EQ(std::rename(from.c_str(), testing::join(dir, std::string(stem) + ".pt").c_str()), 0);
  }
  Checkpoint info;
  GPT loaded = load_model(dir, torch::kCPU, &info);
  EXPECT_EQ(info.extra.at("x").item<float>(), 3.0f);
  for (const auto& item : model->named_parameters(true)) {
    EXPECT_TRUE(torch::equal(item.value(), loaded->named_parameters(true)[item.key()])) << item.key();
  }
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
