// Data path without torch: shards, loader, tokenizer (via the hylab-spm helper), data
// prepare with its error messages, and the pure arithmetic of schedule.h.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "common/check.h"
#include "tests/trainer/test_text.h"
#include "trainer/data_prepare.h"
#include "trainer/loader.h"
#include "trainer/schedule.h"
#include "trainer/shard.h"
#include "trainer/tokenizer.h"

namespace hylab::trainer {
namespace {
namespace fs = std::filesystem;

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "hylab_data_test_XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { fs::remove_all(path); }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// ---------------------------------------------------------------- shards

TEST(Shard, RoundTripPicksTokenWidthFromVocab) {
  TempDir dir;
  std::vector<uint32_t> small = {0, 1, 2, 65535, 42};
  write_shard(dir / "a.bin", small, 65536);
  ShardReader a(dir / "a.bin");
  EXPECT_EQ(a.header().token_bytes, 2u);
  EXPECT_EQ(a.header().vocab_size, 65536u);
  ASSERT_EQ(a.size(), 5);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(a.at(i), small[i]);
  EXPECT_EQ(fs::file_size(dir / "a.bin"), kShardHeaderBytes + 5 * 2);

  std::vector<uint32_t> big = {70000, 3, 100000};
  write_shard(dir / "b.bin", big, 100001);
  ShardReader b(dir / "b.bin");
  EXPECT_EQ(b.header().token_bytes, 4u);
  std::vector<int64_t> out(3);
  b.read(0, 3, out.data());
  EXPECT_EQ(out, (std::vector<int64_t>{70000, 3, 100000}));
  EXPECT_EQ(read_shard_header(dir / "b.bin").count, 3u);
}

TEST(Shard, RejectsBadFilesWithReasons) {
  TempDir dir;
  EXPECT_NE(error_of([&] { write_shard(dir / "x.bin", {5, 9}, 8); }).find("token 9 at position 1 is >= vocab_size 8"),
            std::string::npos);
  write_text(dir / "junk.bin", std::string(2000, 'x'));
  EXPECT_NE(error_of([&] { ShardReader r(dir / "junk.bin"); }).find("not a hylab token shard"),
            std::string::npos);
  write_text(dir / "short.bin", "abc");
  EXPECT_NE(error_of([&] { ShardReader r(dir / "short.bin"); }).find("shorter than the 1024-byte"),
            std::string::npos);
  write_shard(dir / "t.bin", {1, 2, 3, 4}, 10);
  fs::resize_file(dir / "t.bin", kShardHeaderBytes + 5);  // truncated: 4 tokens promised
  EXPECT_NE(error_of([&] { ShardReader r(dir / "t.bin"); }).find("truncated or corrupt"),
            std::string::npos);
  EXPECT_NE(error_of([&] { list_shards(dir / "nope", "train"); }).find("does not exist"),
            std::string::npos);
  EXPECT_NE(error_of([&] { list_shards(dir.path.string(), "train"); }).find("no train_*.bin"),
            std::string::npos);
}

// ---------------------------------------------------------------- loader

// Two train shards of 50 and 30 tokens, token i = its global index (vocab 1000).
void write_counting_shards(const TempDir& dir) {
  std::vector<uint32_t> a(50), b(30);
  for (int i = 0; i < 50; ++i) a[i] = i;
  for (int i = 0; i < 30; ++i) b[i] = 500 + i;
  write_shard(dir / "train_000000.bin", a, 1000);
  write_shard(dir / "train_000001.bin", b, 1000);
}

TEST(Loader, ChunksAreShiftedRowsWithinShardsAndWrap) {
  TempDir dir;
  write_counting_shards(dir);
  // B=2, T=4: chunk = 8 tokens + 1. Shard 0: (50-1)/8 = 6 chunks; shard 1: (30-1)/8 = 3.
  DataLoader dl(dir.path.string(), "train", 2, 4);
  EXPECT_EQ(dl.chunks_per_epoch(), 9);
  std::vector<int64_t> x, y;
  dl.next(&x, &y);
  EXPECT_EQ(x, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(y, (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8}));
  for (int i = 1; i < 6; ++i) dl.next(&x, &y);
  EXPECT_EQ(x.front(), 40);  // 6th chunk of shard 0
  dl.next(&x, &y);           // first chunk of shard 1: never straddles shards
  EXPECT_EQ(x.front(), 500);
  EXPECT_EQ(y.back(), 508);
  dl.next(&x, &y);
  dl.next(&x, &y);
  EXPECT_EQ(dl.epoch(), 1);
  dl.next(&x, &y);  // wrapped around
  EXPECT_EQ(x.front(), 0);
}

TEST(Loader, DeterministicRestorableAndShardedByRank) {
  TempDir dir;
  write_counting_shards(dir);
  DataLoader one(dir.path.string(), "train", 1, 4);
  std::vector<std::vector<int64_t>> seq;
  std::vector<int64_t> x, y;
  for (int i = 0; i < 20; ++i) {
    one.next(&x, &y);
    seq.push_back(x);
  }
  // Same again from a fresh loader.
  DataLoader again(dir.path.string(), "train", 1, 4);
  for (int i = 0; i < 20; ++i) {
    again.next(&x, &y);
    EXPECT_EQ(x, seq[i]) << i;
  }
  // Position restore: a new loader continues where position() said.
  DataLoader first(dir.path.string(), "train", 1, 4);
  for (int i = 0; i < 7; ++i) first.next(&x, &y);
  DataLoader resumed(dir.path.string(), "train", 1, 4);
  resumed.set_position(first.position());
  for (int i = 7; i < 20; ++i) {
    resumed.next(&x, &y);
    EXPECT_EQ(x, seq[i]) << i;
  }
  // Two ranks: rank r's k-th batch is the 1-rank run's batch 2k + r.
  DataLoader r0(dir.path.string(), "train", 1, 4, 0, 2), r1(dir.path.string(), "train", 1, 4, 1, 2);
  for (int k = 0; k < 10; ++k) {
    r0.next(&x, &y);
    EXPECT_EQ(x, seq[2 * k]);
    r1.next(&x, &y);
    EXPECT_EQ(x, seq[2 * k + 1]);
  }
  EXPECT_EQ(r0.position(), 20);
  // A 1-rank position restores on 2 ranks when the world size divides it.
  DataLoader r1b(dir.path.string(), "train", 1, 4, 1, 2);
  r1b.set_position(8);
  r1b.next(&x, &y);
  EXPECT_EQ(x, seq[9]);
  EXPECT_NE(error_of([&] { r1b.set_position(7); }).find("multiple of the world size"),
            std::string::npos);
}

TEST(Loader, TooLittleDataSaysWhatToChange) {
  TempDir dir;
  write_counting_shards(dir);
  const std::string err = error_of([&] { DataLoader dl(dir.path.string(), "train", 8, 16); });
  EXPECT_NE(err.find("fewer than one micro-batch needs"), std::string::npos) << err;
  EXPECT_NE(err.find("device_batch_size 8 x max_seq_len 16"), std::string::npos) << err;
}

// ---------------------------------------------------------------- tokenizer + prepare

TEST(Tokenizer, TrainsByteFallbackBpeThatRoundTripsAnyUtf8) {
  TempDir dir;
  const std::string text = testing::generated_text(400);
  std::istringstream in(text);
  TokenizerTrainOptions opt;
  opt.vocab_size = 512;
  train_tokenizer(
      [&](std::string* line) {
        while (std::getline(in, *line)) {
          if (!line->empty()) return true;
        }
        return false;
      },
      opt, dir / "tok.model");
  const Tokenizer tok = Tokenizer::load(dir / "tok.model");
  EXPECT_EQ(tok.vocab_size(), 512);
  EXPECT_EQ(tok.bos_id(), 1);
  // Characters never seen in training (Ω, an emoji, a tab) still round-trip via byte pieces.
  const std::string probe = "The café über 日本 model, 1234 Ω 🙂\tend.\nNew line  two spaces.";
  const std::vector<int> ids = tok.encode(probe);
  EXPECT_EQ(tok.decode(ids), probe);
  bool has_byte_piece = false;
  int64_t bytes = 0;
  const auto tb = tok.token_bytes();
  for (int id : ids) {
    has_byte_piece |= tok.piece(id).type == Tokenizer::PieceType::kByte;
    bytes += tb[id];
  }
  EXPECT_TRUE(has_byte_piece);
  EXPECT_EQ(bytes, static_cast<int64_t>(probe.size()));  // byte lengths add up exactly
  EXPECT_EQ(tb[tok.bos_id()], 0);
  EXPECT_EQ(tok.decode({tok.bos_id()}), "");
  EXPECT_NE(error_of([&] { tok.decode({5000}); }).find("outside the tokenizer's vocabulary"),
            std::string::npos);
}

TEST(Tokenizer, VocabTooSmallForTheCharactersIsExplained) {
  TempDir dir;
  std::string text;  // 400 distinct CJK characters: more than 512 - 256 - 3
  for (int i = 0; i < 400; ++i) {
    const uint32_t cp = 0x4E00 + i;
    text += static_cast<char>(0xE0 | (cp >> 12));
    text += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    text += static_cast<char>(0x80 | (cp & 0x3F));
    if (i % 20 == 19) text += "\n";
  }
  std::istringstream in(text);
  TokenizerTrainOptions opt;
  opt.vocab_size = 300;
  const std::string err = error_of([&] {
    train_tokenizer([&](std::string* l) { return static_cast<bool>(std::getline(in, *l)); }, opt,
                    dir / "t.model");
  });
  EXPECT_NE(err.find("raise --vocab_size"), std::string::npos) << err;
}

TEST(Prepare, WritesShardsTokenizerAndMetaFromTxtAndJsonl) {
  TempDir dir;
  fs::create_directories(dir / "raw/sub");
  write_text(dir / "raw/a.txt", testing::generated_text(150, 1));
  std::string jsonl;
  for (int i = 0; i < 60; ++i) {
    jsonl += "{\"text\": \"Sentence number " + std::to_string(i) + " about the river, \\u00e9t\\u00e9.\"}\n";
  }
  write_text(dir / "raw/sub/b.jsonl", jsonl);
  write_text(dir / "raw/ignored.csv", "not,text\n");
  PrepareOptions opt;
  opt.inputs = {dir / "raw"};
  opt.out_dir = dir / "data";
  opt.vocab_size = 512;
  opt.val_fraction = 0.1;
  opt.shard_tokens = 4096;  // several train shards
  std::vector<std::string> progress;
  const PrepareResult r = prepare_data(opt, [&](const std::string& s) { progress.push_back(s); });
  EXPECT_FALSE(progress.empty());
  EXPECT_EQ(r.vocab_size, 512);
  EXPECT_EQ(r.train_documents + r.val_documents, 150 + 60);
  EXPECT_GT(r.val_documents, 10);
  EXPECT_GT(r.train_shards, 1);
  const DataMeta meta = read_data_meta(opt.out_dir);
  EXPECT_EQ(meta.vocab_size, 512);
  EXPECT_EQ(meta.train_tokens, r.train_tokens);
  // Shards hold exactly the counted tokens; every document starts with BOS.
  int64_t total = 0, bos = 0;
  for (const auto& p : list_shards(opt.out_dir, "train")) {
    ShardReader s(p);
    total += s.size();
    for (int64_t i = 0; i < s.size(); ++i) bos += s.at(i) == 1;
  }
  EXPECT_EQ(total, r.train_tokens);
  EXPECT_EQ(bos, r.train_documents);
  // Decoding the val shard gives back the held-out text byte for byte.
  const Tokenizer tok = Tokenizer::load(opt.out_dir + "/tokenizer.model");
  ShardReader val(list_shards(opt.out_dir, "val").front());
  std::vector<int> ids;
  for (int64_t i = 0; i < val.size(); ++i) ids.push_back(static_cast<int>(val.at(i)));
  EXPECT_EQ(static_cast<int64_t>(tok.decode(ids).size()), r.val_bytes);
  EXPECT_FALSE(fs::exists(opt.out_dir + ".partial"));
  // Running again replaces the folder (stale shards disappear).
  opt.shard_tokens = 1 << 20;
  const PrepareResult r2 = prepare_data(opt, {});
  EXPECT_EQ(r2.train_shards, 1);
  EXPECT_EQ(list_shards(opt.out_dir, "train").size(), 1u);
}

TEST(Prepare, BadInputGivesClearErrors) {
  TempDir dir;
  PrepareOptions opt;
  opt.out_dir = dir / "out";
  opt.vocab_size = 512;
  auto err = [&](std::vector<std::string> inputs) {
    opt.inputs = std::move(inputs);
    return error_of([&] { prepare_data(opt, {}); });
  };
  EXPECT_NE(err({dir / "missing.txt"}).find("does not exist"), std::string::npos);
  write_text(dir / "empty.txt", "  \n\n");
  EXPECT_NE(err({dir / "empty.txt"}).find("is empty"), std::string::npos);
  write_text(dir / "latin1.txt", "caf\xe9 au lait\n");
  const std::string e = err({dir / "latin1.txt"});
  EXPECT_NE(e.find("not valid UTF-8: byte 3 (line 1) is 0xe9"), std::string::npos) << e;
  write_text(dir / "bad.jsonl", "{\"text\": \"ok\"}\n{\"txt\": 1}\n");
  EXPECT_NE(err({dir / "bad.jsonl"}).find("bad.jsonl:2: expected an object with a string field"),
            std::string::npos);
  write_text(dir / "x.csv", "a,b\n");
  EXPECT_NE(err({dir / "x.csv"}).find("unsupported file type \".csv\""), std::string::npos);
  fs::create_directories(dir / "notdata");
  write_text(dir / "notdata/keep.txt", "precious");
  write_text(dir / "ok.txt", testing::generated_text(40));
  opt.out_dir = dir / "notdata";
  EXPECT_NE(err({dir / "ok.txt"}).find("is not a hylab data folder"), std::string::npos);
  EXPECT_TRUE(fs::exists(dir / "notdata/keep.txt"));
  EXPECT_FALSE(fs::exists(dir / "notdata.partial"));  // a failed prepare cleans up after itself
  EXPECT_NE(error_of([&] { read_data_meta(dir / "nowhere"); }).find("hylab data prepare"),
            std::string::npos);
}

TEST(Utf8, ValidatorAcceptsValidAndFindsFirstBadByte) {
  EXPECT_EQ(utf8_error_offset("plain ascii"), -1);
  EXPECT_EQ(utf8_error_offset("caf\xc3\xa9 \xe6\x97\xa5 \xf0\x9f\x99\x82"), -1);
  EXPECT_EQ(utf8_error_offset("ab\xc3"), 2);               // truncated sequence
  EXPECT_EQ(utf8_error_offset("a\xc0\xaf"), 1);            // overlong '/'
  EXPECT_EQ(utf8_error_offset("a\xed\xa0\x80"), 1);        // surrogate
  EXPECT_EQ(utf8_error_offset("\x80"), 0);                 // lone continuation byte
}

// ---------------------------------------------------------------- schedule arithmetic

TEST(Schedule, LrMultiplierMatchesNanochat) {
  // n = 100, warmup 10%, warmdown 20%, final 0.1.
  EXPECT_DOUBLE_EQ(lr_multiplier(0, 100, 0.1, 0.2, 0.1), 0.1);
  EXPECT_DOUBLE_EQ(lr_multiplier(9, 100, 0.1, 0.2, 0.1), 1.0);
  EXPECT_DOUBLE_EQ(lr_multiplier(50, 100, 0.1, 0.2, 0.1), 1.0);
  EXPECT_DOUBLE_EQ(lr_multiplier(80, 100, 0.1, 0.2, 0.1), 1.0);
  EXPECT_DOUBLE_EQ(lr_multiplier(90, 100, 0.1, 0.2, 0.1), 0.5 + 0.5 * 0.1);
  EXPECT_DOUBLE_EQ(lr_multiplier(100, 100, 0.1, 0.2, 0.1), 0.1);
  EXPECT_DOUBLE_EQ(lr_multiplier(99, 100, 0.0, 0.2, 0.0), 1.0 / 20);
  EXPECT_DOUBLE_EQ(lr_multiplier(5, 100, 0.0, 0.0, 0.0), 1.0);
}

TEST(Schedule, MuonMomentumWarmsUpOver300Steps) {
  EXPECT_DOUBLE_EQ(muon_momentum(0), 0.85);
  EXPECT_NEAR(muon_momentum(150), 0.90, 1e-12);
  EXPECT_DOUBLE_EQ(muon_momentum(300), 0.95);
  EXPECT_DOUBLE_EQ(muon_momentum(1000), 0.95);
}

TEST(Schedule, HorizonAndGradAccumulation) {
  RunConfig c;
  c.set_device_batch_size(4);
  c.set_max_seq_len(32);
  c.set_total_batch_size(512);
  c = resolve_config(c);
  Horizon h = compute_horizon(c, 1000, 1);
  EXPECT_EQ(h.grad_accum_steps, 4);  // 512 / (4*32)
  EXPECT_EQ(h.num_iterations, 20 * 1000 / 512);  // Chinchilla default: 39
  EXPECT_EQ(h.horizon_source, "target_param_data_ratio");
  EXPECT_EQ(compute_horizon(c, 1000, 2).grad_accum_steps, 2);
  EXPECT_EQ(compute_horizon(c, 1000, 4).grad_accum_steps, 1);
  try {
    compute_horizon(c, 1000, 3);
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("not a multiple of device_batch_size * max_seq_len * ranks"),
              std::string::npos);
  }
  c.set_total_batch_size(-1);
  c.set_num_iterations(7);
  h = compute_horizon(c, 1000, 3);
  EXPECT_EQ(h.grad_accum_steps, 1);
  EXPECT_EQ(h.total_batch_size, 4 * 32 * 3);
  EXPECT_EQ(h.num_iterations, 7);
}

TEST(Schedule, HorizonFromAFlopsOrTokensBudget) {
  RunConfig c;
  c.set_depth(2);
  c.set_device_batch_size(4);
  c.set_max_seq_len(32);
  c.set_total_batch_size(256);
  c.set_target_flops(1e12);
  c = resolve_config(c);
  // steps = round(1e12 / (3e6 * 256)) = round(1302.08) = 1302; its FLOPs within half a step.
  Horizon h = compute_horizon(c, 1000, 1, 3e6);
  EXPECT_EQ(h.num_iterations, 1302);
  EXPECT_EQ(h.horizon_source, "target_flops");
  EXPECT_LE(std::fabs(h.num_iterations * 3e6 * 256 - 1e12), 0.5 * 3e6 * 256);
  // A model with twice the FLOPs per token gets half the steps.
  EXPECT_EQ(compute_horizon(c, 1000, 1, 6e6).num_iterations, 651);
  EXPECT_THROW(compute_horizon(c, 1000, 1), Error);  // target_flops needs FLOPs per token
  c.set_target_flops(-1);
  c.set_target_tokens(256 * 10 + 100);
  h = compute_horizon(c, 1000, 1);
  EXPECT_EQ(h.num_iterations, 10);
  EXPECT_EQ(h.horizon_source, "target_tokens");
  c.set_target_tokens(1);  // less than one step: still one step
  EXPECT_EQ(compute_horizon(c, 1000, 1).num_iterations, 1);
}

TEST(Schedule, BitsPerByteAndMfu) {
  // 4 tokens with loss ln(2) each over 4 bytes = exactly 1 bit per byte.
  EXPECT_DOUBLE_EQ(bits_per_byte(4 * std::log(2.0), 4), 1.0);
  EXPECT_NEAR(bits_per_byte(10.0, 7), 10.0 / (std::log(2.0) * 7), 1e-15);
  EXPECT_TRUE(std::isnan(bits_per_byte(1.0, 0)));
  EXPECT_DOUBLE_EQ(adamw_lr_scale(768), 1.0);
  EXPECT_DOUBLE_EQ(adamw_lr_scale(192), 2.0);
  EXPECT_EQ(peak_flops_for_device("NVIDIA H200"), 989e12);
  EXPECT_EQ(peak_flops_for_device("NVIDIA H100 80GB HBM3"), 989e12);
  EXPECT_EQ(peak_flops_for_device("cpu"), 0.0);
  EXPECT_DOUBLE_EQ(mfu(1e9, 989.0, 989e12, 1), 1e-3);
  EXPECT_DOUBLE_EQ(mfu(1e9, 2 * 989.0, 989e12, 2), 1e-3);
  EXPECT_EQ(mfu(1e9, 1e6, 0.0, 1), 0.0);
}

}  // namespace
}  // namespace hylab::trainer
