// End to end on a tiny real task: `hylab data prepare` a small corpus, train tiny hybrid
// models on it for a few dozen Adam steps (the loss must fall), save a checkpoint into a run
// directory laid out as the trainer does, then `hylab generate --checkpoint RUN_DIR` must print
// exactly what the in-process sampler gives.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <random>

#include "model/checkpoint.h"
#include "model/generate.h"
#include "model/gpt.h"
#include "tests/model/test_files.h"
#include "tests/model/test_util.h"
#include "trainer/tokenizer.h"

namespace hylab {
namespace {

struct CmdResult {
  int status;
  std::string out;
};

CmdResult run_cmd(const std::string& cmd) {
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), pclose);
  std::string out;
  std::array<char, 4096> buf;
  while (fgets(buf.data(), buf.size(), pipe.get()) != nullptr) out += buf.data();
  const int rc = pclose(pipe.release());
  return {WEXITSTATUS(rc), out};
}

class GenerateCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const char* bin = std::getenv("HYLAB_BIN");
    if (bin == nullptr) return;
    bin_ = bin;
    root_ = testing::make_temp_dir("generate_cli");
    testing::make_dirs(testing::join(root_, "in"));
    // Documents of 40 words from a 17-word vocabulary.
    const std::vector<std::string> words = {"the", "quick", "brown", "fox", "jumps", "over",
                                            "lazy", "dog", "and", "cat", "sat", "on",
                                            "mat", "while", "birds", "sing", "trees"};
    std::mt19937 rng(0);
    std::ofstream f(testing::join(root_, "in/a.txt"));
    for (int d = 0; d < 150; ++d) {
      for (int w = 0; w < 40; ++w) f << (w ? " " : "") << words[rng() % words.size()];
      f << "\n\n";
    }
    f.close();
    CmdResult r = run_cmd(bin_ + " data prepare --input " + testing::join(root_, "in") + " --out " +
                          testing::join(root_, "data") + " --vocab_size 300 2>&1");
    ASSERT_EQ(r.status, 0) << r.out;
  }
  static void TearDownTestSuite() {
    if (!root_.empty()) testing::remove_tree(root_);
  }
  void SetUp() override {
    if (bin_.empty()) GTEST_SKIP() << "HYLAB_BIN not set (run through ctest)";
  }

  static std::string bin_;
  static std::string root_;
};
std::string GenerateCli::bin_;
std::string GenerateCli::root_;

TEST_F(GenerateCli, TrainTinyModelThenGenerateFromTheRunDir) {
  auto tok = trainer::Tokenizer::load(testing::join(root_, "data/tokenizer.model"));
  const std::string text = testing::read_text(testing::join(root_, "in/a.txt"));
  std::vector<int64_t> ids = {tok.bos_id()};
  for (int id : tok.encode(text.substr(0, 6000))) ids.push_back(id);
  auto data = torch::tensor(ids, torch::kLong);  // (n)

  for (const std::string pattern : {"TM", "MT"}) {
    RunConfig r = testing::tiny_run_config(pattern, {{"vocab_size", std::to_string(tok.vocab_size())},
                                                     {"max_seq_len", "32"}});
    torch::manual_seed(0);
    GPT model(gpt_config(r));
    torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(3e-3));
    const int64_t B = 8, T = 32;
    float first = 0, last = 0;
    for (int step = 0; step < 60; ++step) {
      auto starts = torch::randint(data.size(0) - T - 1, {B}, torch::kLong);
      std::vector<torch::Tensor> xs, ys;
      for (int64_t b = 0; b < B; ++b) {
        const int64_t s = starts[b].item<int64_t>();
        xs.push_back(data.narrow(0, s, T));
        ys.push_back(data.narrow(0, s + 1, T));
      }
      auto loss = model->loss(torch::stack(xs), torch::stack(ys));
      opt.zero_grad();
      loss.backward();
      opt.step();
      if (step == 0) first = loss.item<float>();
      last = loss.item<float>();
    }
    EXPECT_NEAR(first, std::log(static_cast<float>(tok.vocab_size())), 0.01) << pattern;  // zero lm_head
    EXPECT_LT(last, first - 2.0f) << pattern << ": the loss did not fall";

    const std::string run_dir = testing::join(root_, "run_" + pattern);
    save_checkpoint(testing::join(run_dir, "checkpoints/step_000060"), *model, {},
                    {{"config", nlohmann::json::parse(config_to_json(r))}, {"step", 60}});
    testing::write_text(testing::join(run_dir, "tokenizer.model"),
                        testing::read_text(testing::join(root_, "data/tokenizer.model")));

    CmdResult out = run_cmd(bin_ + " generate --checkpoint " + run_dir +
                            " --prompt 'the quick' --max_tokens 20 --temperature 0 --device cpu --quiet");
    ASSERT_EQ(out.status, 0) << out.out;

    // The same in process: BOS + prompt, greedy, stop at BOS.
    std::vector<int64_t> prompt = {tok.bos_id()};
    for (int id : tok.encode("the quick")) prompt.push_back(id);
    SampleOptions opts;
    opts.temperature = 0;
    opts.max_tokens = 20;
    opts.stop_token = tok.bos_id();
    std::vector<int> gen_ids;
    for (int64_t id : generate(*model, prompt, opts)) {
      if (id != tok.bos_id()) gen_ids.push_back(static_cast<int>(id));
    }
    const std::string expected = "the quick" + tok.decode(gen_ids) + "\n";
    EXPECT_EQ(out.out, expected) << pattern;
    std::printf("%s after %d steps (loss %.2f -> %.2f): %s", pattern.c_str(), 60, first, last, out.out.c_str());
    EXPECT_GT(gen_ids.size(), 5u) << pattern;
  }
}

TEST_F(GenerateCli, ErrorsNameTheProblem) {
  CmdResult r = run_cmd(bin_ + " generate --checkpoint " + testing::join(root_, "nope") + " --prompt x 2>&1");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("no checkpoint at"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace hylab
