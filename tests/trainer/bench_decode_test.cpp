// `hylab bench decode` end to end on CPU through the real binary (env HYLAB_BIN): a tiny
// model, two batch sizes x two prompt lengths; the JSON's records are complete and
// consistent (tok/s from the step time, MBU from the bytes and the measured bandwidth, the
// cache bytes from the accounting formula), and bad flags are named.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

namespace hylab::trainer {
namespace {

struct CliResult {
  int status = -1;
  std::string out;
};

CliResult hylab(const std::string& args) {
  const char* bin = std::getenv("HYLAB_BIN");
  if (bin == nullptr) return {-1, "HYLAB_BIN not set"};
  const std::string cmd = std::string(bin) + " " + args + " 2>&1";
  CliResult r;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) r.out.append(buf, n);
  r.status = pclose(pipe);
  return r;
}

constexpr const char* kTiny =
    " --device=cpu --n_embd=64 --n_head=4 --n_kv_head=2 --vocab_size=100 --max_seq_len=32"
    " --mamba_d_state=8";

TEST(BenchDecode, CpuJsonIsCompleteAndConsistent) {
  const std::string json_path = ::testing::TempDir() + "/bench_decode_test.json";
  std::remove(json_path.c_str());
  const CliResult r =
      hylab("bench decode --batch_sizes 1,3 --prompt-lens 8,20 --new_tokens 6 --json " + json_path +
            " --block_pattern=T,M,M,T" + kTiny);
  ASSERT_EQ(r.status, 0) << r.out;
  std::ifstream in(json_path);
  ASSERT_TRUE(in.good()) << "no " << json_path << "\n" << r.out;
  const auto j = nlohmann::json::parse(in);
  for (const char* k : {"commit", "date", "gpu", "results"}) EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_EQ(j["gpu"], "cpu");
  EXPECT_EQ(j["dtype"], "fp32");
  EXPECT_FALSE(j["cuda_graphs"].get<bool>());  // CPU decodes eagerly
  const double bw = j["copy_bandwidth_gb_per_s"].get<double>() * 1e9;
  EXPECT_GT(bw, 1e8);
  ASSERT_EQ(j["results"].size(), 4u);
  // Per sequence at 26 positions, fp32: 2 T layers x K,V (Hkv 2 x Dh 16) + 2 M layers x
  // (conv E=128 x K=4 + ssm 128 x N=8 x 4 bytes).
  const int64_t per_seq_26 = 2 * (2 * 2 * 16 * 26 * 4) + 2 * (128 * 4 * 4 + 128 * 8 * 4);
  const int64_t per_seq_14 = 2 * (2 * 2 * 16 * 14 * 4) + 2 * (128 * 4 * 4 + 128 * 8 * 4);
  int i = 0;
  for (int64_t prompt : {8, 20}) {
    for (int64_t batch : {1, 3}) {
      const auto& rec = j["results"][i++];
      for (const char* k : {"n_layer", "block_pattern", "vocab_size", "batch", "prompt", "new",
                            "prefill_ms", "decode_ms_per_step", "tok_per_s", "bytes_per_step",
                            "mbu", "cache_bytes", "peak_mem_gib"}) {
        ASSERT_TRUE(rec.contains(k)) << k << " in " << rec.dump();
      }
      EXPECT_EQ(rec["n_layer"], 4);
      EXPECT_EQ(rec["block_pattern"], "T,M*2,T");
      EXPECT_EQ(rec["vocab_size"], 100);
      EXPECT_EQ(rec["batch"], batch);
      EXPECT_EQ(rec["prompt"], prompt);
      EXPECT_EQ(rec["new"], 6);
      EXPECT_EQ(rec["cache_bytes"].get<int64_t>(), batch * (prompt == 8 ? per_seq_14 : per_seq_26));
      const double ms = rec["decode_ms_per_step"].get<double>();
      EXPECT_GT(ms, 0);
      EXPECT_GT(rec["prefill_ms"].get<double>(), 0);
      EXPECT_NEAR(rec["tok_per_s"].get<double>(), batch * 1e3 / ms, 1e-6 * batch * 1e3 / ms);
      const double bytes = rec["bytes_per_step"].get<double>();
      EXPECT_GT(bytes, 4.0 * 128 * 64);  // at least the lm_head, fp32
      EXPECT_NEAR(rec["mbu"].get<double>(), bytes / (ms * 1e-3) / bw, 1e-6);
    }
  }
  // The larger context reads more cache per step.
  EXPECT_GT(j["results"][3]["cache_read_bytes_per_step"].get<double>(),
            j["results"][1]["cache_read_bytes_per_step"].get<double>());
}

TEST(BenchDecode, BadFlagsAreNamed) {
  CliResult r = hylab(std::string("bench decode --batch_sizes 1,x --new_tokens 2") + kTiny);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("--batch_sizes"), std::string::npos) << r.out;
  r = hylab(std::string("bench decode --prompt_lens 400 --new_tokens 2") + kTiny);  // > 10 * 32
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("--prompt_lens 400"), std::string::npos) << r.out;
  r = hylab(std::string("bench decode --new_tokens 0") + kTiny);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("--new_tokens"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace hylab::trainer
