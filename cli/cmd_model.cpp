// `hylab model info`: a config's model shape, parameters by group, training FLOPs per token
// and inference cache bytes per sequence, all from the formulas in model/accounting.h
// (no model is built, so d20-sized configs answer instantly).
#include <nlohmann/json.hpp>
#include <torch/cuda.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "cli/command.h"
#include "common/check.h"
#include "common/run_config.h"
#include "model/accounting.h"
#include "trainer/data_prepare.h"

namespace hylab::cli {
namespace {

// The trainer takes vocab_size from the data folder's tokenizer when the config does not set
// it (trainer/train.cpp); so does model info, or its parameter count is the schema default's
// (32768 tokens: 19.23M instead of 6.64M for configs/d4_alternating.yaml). Returns where the
// vocabulary came from.
std::string apply_data_vocab(RunConfig* cfg) {
  if (cfg->has_vocab_size()) return "set in the config";
  const std::filesystem::path meta = std::filesystem::path(cfg->data()) / "meta.json";
  if (!std::filesystem::exists(meta)) {
    return fmt::format("schema default: data = \"{}\" has no meta.json; the trainer takes the vocabulary "
                       "from there (prepare it, pass --data or set vocab_size)", cfg->data());
  }
  cfg->set_vocab_size(trainer::read_data_meta(cfg->data()).vocab_size);
  return "from " + meta.string();
}

// The KV cache / conv state dtype of the trainer's inference cache: its compute dtype on the
// device the trainer would pick on this machine (trainer/device.h: `device: auto` is CUDA when
// a GPU is visible; `dtype: auto` is bf16 there and fp32 on the CPU).
int64_t activation_bytes_of(const RunConfig& r) {
  const bool cuda = r.device() == "cuda" || (r.device() == "auto" && torch::cuda::is_available());
  return cuda && r.dtype() != "fp32" ? 2 : 4;
}

std::string human(double v) {
  const char* units[] = {"", "K", "M", "G", "T", "P"};
  int u = 0;
  while (v >= 1000 && u < 5) {
    v /= 1000;
    ++u;
  }
  return fmt::format("{:.2f}{}", v, units[u]);
}

std::string human_bytes(int64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", b) : fmt::format("{:.2f} {}", v, units[u]);
}

nlohmann::json info_json(const RunConfig& r, const std::string& vocab_source) {
  const GPTConfig g = gpt_config(r);
  const ParamCounts p = count_params(g);
  const FlopsPerToken f = flops_breakdown(g, g.sequence_len);
  const int64_t act = activation_bytes_of(r);
  const CacheBytes c = cache_bytes(g, g.sequence_len, act);
  nlohmann::json j;
  j["config"] = nlohmann::json::parse(config_to_json(r, false));
  j["block_pattern"] = compact_block_pattern(g.block_pattern);
  j["n_transformer_layers"] = g.count(BlockType::kTransformer);
  j["n_mamba_layers"] = g.count(BlockType::kMamba);
  j["n_mamba2_layers"] = g.count(BlockType::kMamba2);
  j["padded_vocab_size"] = g.padded_vocab_size();
  j["vocab_source"] = vocab_source;
  j["params"] = {{"embedding", p.embedding}, {"lm_head", p.lm_head}, {"attention", p.attention},
                 {"mlp", p.mlp}, {"mamba", p.mamba}, {"mamba2", p.mamba2}, {"total", p.total}};
  j["params_total"] = p.total;
  j["flops_per_token"] = f.total;
  j["flops"] = {{"sequence_len", g.sequence_len}, {"matmul", f.matmul},
                {"attention", f.attention}, {"mamba_scan", f.mamba_scan},
                {"mamba2_ssd", f.mamba2_ssd}, {"total", f.total}};
  j["cache_bytes"] = c.total;
  j["cache"] = {{"sequence_len", g.sequence_len},
                {"activation_bytes", act},
                {"attention_per_layer", c.attention_per_layer},
                {"mamba_per_layer", c.mamba_per_layer},
                {"mamba2_per_layer", c.mamba2_per_layer},
                {"attention", c.attention},
                {"mamba", c.mamba},
                {"mamba2", c.mamba2},
                {"total", c.total}};
  return j;
}

void print_table(const RunConfig& r, const std::string& vocab_source) {
  const GPTConfig g = gpt_config(r);
  const ParamCounts p = count_params(g);
  const FlopsPerToken f = flops_breakdown(g, g.sequence_len);
  const int64_t act = activation_bytes_of(r);
  const CacheBytes c = cache_bytes(g, g.sequence_len, act);
  const int L_T = g.count(BlockType::kTransformer), L_M = g.count(BlockType::kMamba),
            L_M2 = g.count(BlockType::kMamba2);
  std::printf("model\n");
  std::printf("  %-16s %s (%d T, %d M, %d M2)\n", "block_pattern",
              compact_block_pattern(g.block_pattern).c_str(), L_T, L_M, L_M2);
  std::printf("  %-16s %d\n", "n_layer", g.n_layer);
  std::printf("  %-16s %d\n", "n_embd", g.n_embd);
  std::printf("  %-16s %d (kv %d, head_dim %d)\n", "n_head", g.n_head, g.n_kv_head, g.head_dim());
  std::printf("  %-16s %d (padded %d; %s)\n", "vocab_size", g.vocab_size, g.padded_vocab_size(),
              vocab_source.c_str());
  std::printf("  %-16s %d\n", "sequence_len", g.sequence_len);
  if (L_M > 0) {
    std::printf("  %-16s d_inner %d, d_state %d, d_conv %d, dt_rank %d, mlp %s\n", "mamba",
                g.d_inner(), g.mamba_d_state, g.mamba_d_conv, g.mamba_dt_rank,
                g.mamba_use_mlp ? "yes" : "no");
  }
  if (L_M2 > 0) {
    std::printf("  %-16s d_inner %d, heads %d x headdim %d, groups %d, d_state %d, d_conv %d, "
                "chunk %d, mlp %s\n",
                "mamba2", g.mamba2_d_inner(), g.mamba2_nheads(), g.mamba2_headdim,
                g.mamba2_ngroups, g.mamba2_d_state, g.mamba2_d_conv, g.mamba2_chunk_size,
                g.mamba2_use_mlp ? "yes" : "no");
  }
  if (L_T > 0 && !g.rope) std::printf("  %-16s off (no positional encoding)\n", "rope");
  std::printf("parameters\n");
  for (auto [name, n] : {std::pair<const char*, int64_t>{"embedding", p.embedding},
                         {"lm_head", p.lm_head},
                         {"attention", p.attention},
                         {"mlp", p.mlp},
                         {"mamba", p.mamba},
                         {"mamba2", p.mamba2},
                         {"total", p.total}}) {
    std::printf("  %-16s %14lld  %s\n", name, static_cast<long long>(n), human(static_cast<double>(n)).c_str());
  }
  std::printf("training FLOPs per token at T=%d\n", g.sequence_len);
  std::printf("  %-16s %14.4g\n  %-16s %14.4g\n  %-16s %14.4g\n  %-16s %14.4g\n  %-16s %14.4g  %s\n",
              "matmul", f.matmul, "attention", f.attention, "mamba_scan", f.mamba_scan,
              "mamba2_ssd", f.mamba2_ssd, "total", f.total, human(f.total).c_str());
  std::printf("inference cache per sequence at T=%d (%s KV/conv, fp32 SSM state)\n", g.sequence_len,
              act == 4 ? "fp32" : "bf16");
  std::printf("  %-16s %s per layer x %d = %s\n", "attention (KV)", human_bytes(c.attention_per_layer).c_str(),
              L_T, human_bytes(c.attention).c_str());
  std::printf("  %-16s %s per layer x %d = %s\n", "mamba (state)", human_bytes(c.mamba_per_layer).c_str(),
              L_M, human_bytes(c.mamba).c_str());
  std::printf("  %-16s %s per layer x %d = %s\n", "mamba2 (state)",
              human_bytes(c.mamba2_per_layer).c_str(), L_M2, human_bytes(c.mamba2).c_str());
  std::printf("  %-16s %s (%lld bytes)\n", "total", human_bytes(c.total).c_str(),
              static_cast<long long>(c.total));
}

void setup(CLI::App& root) {
  CLI::App* model = group(root, "model", "Inspect model configurations");
  CLI::App* info = model->add_subcommand(
      "info", "Parameters by group, FLOPs per token and inference cache bytes of a config");
  auto path = std::make_shared<std::string>();
  auto format = std::make_shared<std::string>("table");
  info->add_option("--config,config", *path, "Config file (YAML)");
  info->add_option(flag("format"), *format, "table or json")->check(CLI::IsMember({"table", "json"}));
  info->allow_extras();
  info->footer("Any config key may follow as --key=value, e.g. --depth=20 --block_pattern='T*12,M*8'.\n"
               "vocab_size: as the trainer, from the data folder's meta.json (--data) unless set.");
  info->callback([info, path, format] {
    RunConfig cfg = path->empty() ? RunConfig() : load_config_file(*path);
    auto rest = apply_override_args(&cfg, info->remaining());
    if (!rest.empty()) throw ConfigError("unknown argument: " + rest.front());
    const std::string vocab_source = apply_data_vocab(&cfg);
    const RunConfig r = resolve_config(cfg);
    if (*format == "json") {
      std::printf("%s\n", info_json(r, vocab_source).dump(2).c_str());
    } else {
      print_table(r, vocab_source);
    }
  });
}

HYLAB_REGISTER_COMMAND("model", 60, setup);

}  // namespace
}  // namespace hylab::cli
