// `hylab generate`: text from a checkpoint. Loads the model its meta.json describes, the run's
// sentencepiece tokenizer, then prefills the prompt (BOS + its tokens, as documents look in
// training) and decodes token by token through the inference engine (model/decoder.h: CUDA
// graphs on a GPU), printing text as it comes. --num_samples N decodes N continuations of
// the prompt as one batch and prints each when all are done.
#include <torch/torch.h>

#include <sys/stat.h>

#include <cstdio>
#include <string>

#include "cli/command.h"
#include "common/check.h"
#include "model/checkpoint.h"
#include "model/generate.h"
#include "trainer/tokenizer.h"

namespace hylab::cli {
namespace {

struct GenerateArgs {
  std::string checkpoint, prompt, tokenizer, device = "auto";
  int64_t max_tokens = 128;
  double temperature = 0.8;
  int64_t top_k = 50;
  uint64_t seed = 0;
  int64_t num_samples = 1;
  bool quiet = false;
  bool no_cuda_graphs = false;
};

// The tokenizer next to a checkpoint: DIR/tokenizer.model, else the run dir's
// (DIR/../../tokenizer.model, as the trainer lays out <run_dir>/checkpoints/step_N/).
// (POSIX stat, not std::filesystem: a pip LibTorch interposes its own copy of the latter.)
std::string find_tokenizer(const std::string& ckpt_dir, const std::string& run_path) {
  for (const std::string& p : {ckpt_dir + "/tokenizer.model", ckpt_dir + "/../../tokenizer.model",
                               run_path + "/tokenizer.model"}) {
    struct stat st;
    if (::stat(p.c_str(), &st) == 0) return p;
  }
  HYLAB_FAIL("no tokenizer.model in {} or its run directory {}/../..; pass --tokenizer PATH",
             ckpt_dir, ckpt_dir);
}

torch::Device pick_device(const std::string& name) {
  if (name == "cpu") return torch::kCPU;
  if (name == "cuda") {
    if (!torch::cuda::is_available()) {
      throw ConfigError("--device cuda: this build or machine has no CUDA device; use --device cpu");
    }
    return torch::kCUDA;
  }
  if (name == "auto") return torch::cuda::is_available() ? torch::kCUDA : torch::kCPU;
  throw ConfigError("--device = \"" + name + "\": expected one of auto, cpu, cuda");
}

void run(const GenerateArgs& a) {
  const std::string dir = resolve_checkpoint_dir(a.checkpoint);
  const std::string tok_path = a.tokenizer.empty() ? find_tokenizer(dir, a.checkpoint) : a.tokenizer;
  auto tok = trainer::Tokenizer::load(tok_path);
  const torch::Device device = pick_device(a.device);

  Checkpoint info;
  GPT model = load_model(dir, device, &info);
  model->eval();
  const RunConfig& cfg = info.config;
  if (cfg.kernels() == "reference") model->set_use_kernels(false);
  HYLAB_CHECK(tok.vocab_size() <= model->config().vocab_size,
              "tokenizer {} has {} tokens but the model's vocab_size is {}", tok_path,
              tok.vocab_size(), model->config().vocab_size);

  std::vector<int64_t> prompt;
  if (tok.bos_id() >= 0) prompt.push_back(tok.bos_id());
  for (int id : tok.encode(a.prompt)) prompt.push_back(id);

  SampleOptions opts;
  opts.max_tokens = a.max_tokens;
  opts.temperature = a.temperature;
  opts.top_k = a.top_k;
  opts.seed = a.seed;
  opts.stop_token = tok.bos_id();  // a new document begins: stop
  opts.autocast = device.is_cuda() && cfg.dtype() != "fp32";
  Decoder decoder(*model, DecoderOptions{opts.autocast, !a.no_cuda_graphs});

  if (!a.quiet) {
    std::fprintf(stderr, "hylab generate: %s (%s, step %s) on %s\n", dir.c_str(),
                 compact_block_pattern(model->config().block_pattern).c_str(),
                 info.meta.contains("step") ? info.meta["step"].dump().c_str() : "?",
                 device.str().c_str());
  }
  if (a.num_samples > 1) {
    const auto samples = generate_samples(decoder, prompt, opts, a.num_samples);
    for (size_t r = 0; r < samples.size(); ++r) {
      std::vector<int> ids;
      for (int64_t id : samples[r]) {
        if (id != opts.stop_token && id < tok.vocab_size()) ids.push_back(static_cast<int>(id));
      }
      std::printf("--- sample %zu\n%s%s\n", r, a.prompt.c_str(), tok.decode(ids).c_str());
    }
    return;
  }
  std::printf("%s", a.prompt.c_str());
  std::fflush(stdout);
  // Decode the whole continuation each time and print what is new: byte-fallback pieces only
  // form valid UTF-8 together.
  std::vector<int> ids;
  size_t printed = 0;
  generate_samples(decoder, prompt, opts, 1, [&](int64_t, int64_t id) {
    if (id == opts.stop_token) return false;
    ids.push_back(static_cast<int>(id));
    const std::string text = tok.decode(ids);
    if (text.size() > printed) {
      std::fwrite(text.data() + printed, 1, text.size() - printed, stdout);
      std::fflush(stdout);
      printed = text.size();
    }
    return true;
  });
  std::printf("\n");
}

void setup(CLI::App& root) {
  auto a = std::make_shared<GenerateArgs>();
  CLI::App* cmd = root.add_subcommand("generate", "Sample text from a checkpoint (prefill + cached decode)");
  cmd->add_option("--checkpoint", a->checkpoint,
                  "Checkpoint directory, or a run directory (its newest checkpoint)")
      ->required();
  cmd->add_option("--prompt", a->prompt, "Text to continue")->required();
  cmd->add_option(flag("max_tokens"), a->max_tokens, "New tokens at most")->capture_default_str();
  cmd->add_option("--temperature", a->temperature, "0 = greedy")->capture_default_str();
  cmd->add_option(flag("top_k"), a->top_k, "Sample from the k most likely tokens; 0 = all")
      ->capture_default_str();
  cmd->add_option("--seed", a->seed, "Sampler seed")->capture_default_str();
  cmd->add_option("--device", a->device, "auto, cpu or cuda")->capture_default_str();
  cmd->add_option("--tokenizer", a->tokenizer,
                  "sentencepiece model (default: the checkpoint's or its run directory's)");
  cmd->add_option(flag("num_samples"), a->num_samples,
                  "Continuations of the prompt, decoded together as one batch (sample r uses "
                  "seed + r)")
      ->capture_default_str();
  cmd->add_flag(flag("no_cuda_graphs"), a->no_cuda_graphs, "Decode eagerly on CUDA (no graph capture)");
  cmd->add_flag("--quiet", a->quiet, "No header line on stderr");
  cmd->callback([a] {
    if (a->max_tokens < 0) throw ConfigError("--max_tokens must be >= 0");
    if (a->temperature < 0) throw ConfigError("--temperature must be >= 0");
    if (a->top_k < 0) throw ConfigError("--top_k must be >= 0");
    if (a->num_samples < 1) {
      throw ConfigError("--num_samples = " + std::to_string(a->num_samples) + ": must be >= 1");
    }
    run(*a);
  });
}

HYLAB_REGISTER_COMMAND("generate", 40, setup);

}  // namespace
}  // namespace hylab::cli
