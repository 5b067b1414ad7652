// `hylab bench decode`: the inference engine's prefill and decode speed, bytes per step and
// memory-bandwidth utilisation over batch sizes and prompt lengths, as JSON
// (trainer/bench_decode.h).
#include <memory>
#include <sstream>

#include "cli/command.h"
#include "common/check.h"
#include "trainer/bench_decode.h"

namespace hylab::cli {
namespace {

// "1,8,32" -> {1, 8, 32}; names the flag and the bad item otherwise.
std::vector<int64_t> parse_list(const std::string& flag_name, const std::string& text) {
  std::vector<int64_t> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      const long long v = std::stoll(item, &used);
      if (used != item.size() || v < 1) throw std::invalid_argument(item);
      out.push_back(v);
    } catch (const std::exception&) {
      throw ConfigError("--" + flag_name + " = \"" + text + "\": \"" + item +
                        "\" is not a positive integer (expected a list such as 1,8,32)");
    }
  }
  if (out.empty())
    throw ConfigError("--" + flag_name + " is empty (expected a list such as 1,8,32)");
  return out;
}

// "1x512+128,32x512+64" -> points; names the flag and the bad item otherwise.
std::vector<trainer::DecodePoint> parse_points(const std::string& text) {
  std::vector<trainer::DecodePoint> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    trainer::DecodePoint p;
    long long b = 0, t = 0, n = 0;
    char x = 0, plus = 0, extra = 0;
    if (std::sscanf(item.c_str(), "%lld%c%lld%c%lld%c", &b, &x, &t, &plus, &n, &extra) != 5 ||
        x != 'x' || plus != '+' || b < 1 || t < 1 || n < 1) {
      throw ConfigError("--points = \"" + text + "\": \"" + item +
                        "\" is not BATCHxPROMPT+NEW with positive numbers (e.g. 8x16384+16)");
    }
    p.batch = b, p.prompt = t, p.new_tokens = n;
    out.push_back(p);
  }
  if (out.empty()) throw ConfigError("--points is empty (expected e.g. 1x512+128,8x16384+16)");
  return out;
}

void setup(CLI::App& root) {
  auto* bench = group(root, "bench", "Benchmarks that print JSON");
  auto o = std::make_shared<trainer::DecodeBenchOptions>();
  auto batches = std::make_shared<std::string>("1,8,32,64");
  auto prompts = std::make_shared<std::string>("512,8192");
  auto eager = std::make_shared<bool>(false);
  auto points = std::make_shared<std::string>();
  auto new_tokens = std::make_shared<int64_t>(128);
  auto* cmd = bench->add_subcommand(
      "decode",
      "Inference speed: prefill ms, decode ms/step, tok/s, bytes/step, MBU, cache bytes, "
      "peak memory over batch sizes and prompt lengths (random prompts)");
  cmd->add_option("--config", o->config_path, "Config file (YAML)");
  cmd->add_option("--checkpoint", o->checkpoint,
                  "Measure this checkpoint (or run directory) instead of random weights");
  cmd->add_option(flag("batch_sizes"), *batches, "Comma-separated batch sizes")
      ->capture_default_str();
  cmd->add_option(flag("prompt_lens"), *prompts, "Comma-separated prompt lengths")
      ->capture_default_str();
  cmd->add_option(flag("new_tokens"), *new_tokens, "Tokens decoded per sequence at each point")
      ->capture_default_str();
  cmd->add_option("--points", *points,
                  "Explicit points BATCHxPROMPT+NEW, comma-separated (e.g. 1x512+128,8x16384+16); "
                  "replaces --batch_sizes/--prompt_lens/--new_tokens");
  cmd->add_option("--json", o->json_path, "Also write the JSON to this file");
  cmd->add_option("--profile", o->profile_path,
                  "Profile 8 decode steps of the last point: chrome trace to this file, GPU time "
                  "by kernel in its record");
  cmd->add_flag(flag("no_cuda_graphs"), *eager, "Decode eagerly (no CUDA graph capture)");
  cmd->allow_extras();
  cmd->footer(
      "Any config key may follow as --key=value, e.g. --block_pattern='T*20' "
      "--vocab_size=32768 --max_seq_len=2048 (positions are limited to 10 * max_seq_len).");
  cmd->callback([cmd, o, batches, prompts, eager, points, new_tokens] {
    trainer::DecodeBenchOptions opt = *o;
    if (!points->empty()) {
      opt.points = parse_points(*points);
    } else {
      if (*new_tokens < 1) {
        throw ConfigError("--new_tokens = " + std::to_string(*new_tokens) + ": must be >= 1");
      }
      for (int64_t p : parse_list("prompt_lens", *prompts)) {
        for (int64_t b : parse_list("batch_sizes", *batches))
          opt.points.push_back({b, p, *new_tokens});
      }
    }
    opt.cuda_graphs = !*eager;
    opt.overrides = cmd->remaining();
    exit_status() = trainer::run_bench_decode(opt);
  });
}

HYLAB_REGISTER_COMMAND("bench decode", 81, setup);

}  // namespace
}  // namespace hylab::cli
