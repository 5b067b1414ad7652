#include "trainer/bench_decode.h"

#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/check.h"
#include "common/run_config.h"
#include "model/accounting.h"
#include "model/checkpoint.h"
#include "model/decoder.h"
#include "model/gpt.h"
#include "trainer/device.h"
#include "trainer/profile.h"
#include "trainer/train.h"

namespace hylab::trainer {
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::ordered_json;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Device-to-device copy bandwidth (bytes read + bytes written per second) of one large copy,
// the best of several: the ceiling MBU is measured against.
double copy_bandwidth(const torch::Device& device) {
  const int64_t n = device.is_cuda() ? (int64_t{1} << 29) : (int64_t{1} << 24);  // 1 GiB / 64 MiB
  auto src = torch::ones({n / 2}, torch::dtype(torch::kBFloat16).device(device));
  auto dst = torch::empty_like(src);
  dst.copy_(src);
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    synchronize(device);
    const auto t0 = Clock::now();
    constexpr int kCopies = 4;
    for (int i = 0; i < kCopies; ++i) dst.copy_(src);
    synchronize(device);
    best = std::max(best, 2.0 * static_cast<double>(n) * kCopies / seconds_since(t0));
  }
  return best;
}

// Bytes of the weights one decode step reads: every parameter but the embedding table (of
// which it gathers B rows), in the dtype the engine holds it.
double weight_bytes_per_step(GPTImpl& m, int64_t B) {
  double bytes = 0;
  for (const auto& item : m.named_parameters()) {
    const auto& p = item.value();
    if (item.key() == "wte.weight") {
      bytes += static_cast<double>(B * p.size(1)) * static_cast<double>(p.element_size());
    } else {
      bytes += static_cast<double>(p.numel()) * static_cast<double>(p.element_size());
    }
  }
  return bytes;
}

json run_point(Decoder& dec, GPTImpl& m, const DecodePoint& pt, double copy_bw,
               const torch::Device& device, const std::string& profile_path) {
  const GPTConfig& g = m.config();
  const int64_t B = pt.batch, P = pt.prompt, new_tokens = pt.new_tokens, max_len = P + new_tokens;
  json r;
  r["n_layer"] = g.n_layer;
  r["block_pattern"] = compact_block_pattern(g.block_pattern);
  r["vocab_size"] = g.vocab_size;
  r["batch"] = B;
  r["prompt"] = P;
  r["new"] = new_tokens;
  auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(1000 + B * 7 + P));
  const auto prompt = torch::randint(g.vocab_size, {B, P}, gen, torch::kLong).to(device);
  // Warm-up: a short prefill and a few steps of this shape (lazy inits, the graph capture).
  dec.reset(B, max_len);
  auto next = dec.prefill(prompt.narrow(1, 0, std::min<int64_t>(P, 16))).argmax(-1);
  for (int i = 0; i < 2 && dec.pos() < max_len; ++i) next = dec.step(next).argmax(-1);
  synchronize(device);

  reset_peak_memory(device);
  dec.reset(B, max_len);
  synchronize(device);
  auto t0 = Clock::now();
  next = dec.prefill(prompt).argmax(-1);  // (B)
  synchronize(device);
  const double prefill_s = seconds_since(t0);
  // The first quarter of the steps (at most 8) are not timed.
  const int64_t untimed = std::min<int64_t>(8, new_tokens / 4);
  for (int64_t s = 0; s < untimed; ++s) next = dec.step(next).argmax(-1);
  synchronize(device);
  const int64_t timed = new_tokens - untimed;
  t0 = Clock::now();
  for (int64_t s = 0; s < timed; ++s) next = dec.step(next).argmax(-1);  // greedy, on the device
  synchronize(device);
  const double step_s = seconds_since(t0) / static_cast<double>(std::max<int64_t>(timed, 1));
  const MemoryStats mem = peak_memory(device);

  const int64_t act = dec.cache().layers.empty() ? 4 : [&] {
    for (const auto& l : dec.cache().layers) {
      if (l.k.defined()) return static_cast<int64_t>(l.k.element_size());
      if (l.conv_state.defined()) return static_cast<int64_t>(l.conv_state.element_size());
    }
    return int64_t{4};
  }();
  const int64_t allocated = dec.cache().bytes();
  HYLAB_CHECK(allocated == B * cache_bytes_per_sequence(g, max_len, act),
              "bench decode: the allocated cache ({} bytes) differs from the accounting ({} bytes)",
              allocated, B * cache_bytes_per_sequence(g, max_len, act));
  // The KV cache a timed step reads, at the mean context of the timed steps.
  const int64_t ctx = P + untimed + (timed + 1) / 2;
  const CacheBytes read = cache_bytes(g, ctx, act);
  const double weights = weight_bytes_per_step(m, B);
  const double cache_read = static_cast<double>(B) * static_cast<double>(read.total);
  const double bytes = weights + cache_read;
  r["prefill_ms"] = 1e3 * prefill_s;
  r["decode_ms_per_step"] = 1e3 * step_s;
  r["tok_per_s"] = static_cast<double>(B) / step_s;
  r["bytes_per_step"] = bytes;
  r["weight_bytes_per_step"] = weights;
  r["cache_read_bytes_per_step"] = cache_read;
  r["floor_ms_per_step"] = 1e3 * bytes / copy_bw;
  r["mbu"] = bytes / step_s / copy_bw;
  r["cache_bytes"] = allocated;
  r["peak_mem_gib"] = mem.peak_allocated_gib;
  r["cuda_graph"] = dec.graphed();
  r["cache_dtype"] = act == 2 ? "bf16" : "fp32";
  if (!profile_path.empty()) {
    // Eight more steps under the profiler: where a step's GPU time goes.
    dec.reset(B, max_len);
    next = dec.prefill(prompt).argmax(-1);
    r["profile"] = profile_gpu_work(
        [&] {
          for (int s = 0; s < 8 && dec.pos() < max_len; ++s) next = dec.step(next).argmax(-1);
          synchronize(device);
        },
        profile_path);
  }
  return r;
}

std::string now_utc_date() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", std::gmtime(&t));
  return buf;
}

json bench(const DecodeBenchOptions& opt) {
  if (opt.points.empty()) throw ConfigError("bench decode: no points to measure");
  for (const DecodePoint& p : opt.points) {
    if (p.batch < 1 || p.prompt < 1 || p.new_tokens < 1) {
      throw ConfigError(
          fmt::format("bench decode: point {}x{}+{}: batch, prompt and new tokens "
                      "must be >= 1",
                      p.batch, p.prompt, p.new_tokens));
    }
  }
  RunConfig cfg;
  GPT model{nullptr};
  torch::Device device = torch::kCPU;
  if (!opt.checkpoint.empty()) {
    if (!opt.overrides.empty()) {
      throw ConfigError("--checkpoint takes its config from the checkpoint: drop \"" +
                        opt.overrides.front() + "\"");
    }
    const std::string dir = resolve_checkpoint_dir(opt.checkpoint);
    Checkpoint info;
    model = load_model(dir, torch::cuda::is_available() ? torch::kCUDA : torch::kCPU, &info);
    cfg = info.config;
    device = model->lm_head->weight.device();
  } else {
    cfg = opt.config_path.empty() ? RunConfig() : load_config_file(opt.config_path);
    const auto rest = apply_override_args(&cfg, opt.overrides);
    if (!rest.empty()) throw ConfigError("unknown argument \"" + rest.front() + "\"");
    cfg = resolve_config(cfg);
    device = pick_device(cfg, 0);
    torch::manual_seed(static_cast<uint64_t>(cfg.seed()));
    model = GPT(gpt_config(cfg));
    model->to(device);
  }
  model->set_use_kernels(cfg.kernels() != "reference");
  model->eval();
  const bool autocast = use_bf16_autocast(cfg, device);
  const GPTConfig& g = model->config();
  for (const DecodePoint& p : opt.points) {
    if (p.prompt + p.new_tokens > model->max_positions()) {
      throw ConfigError(
          fmt::format("--prompt_lens {} + --new_tokens {} exceeds the model's {} "
                      "positions (10 * sequence_len; raise --max_seq_len)",
                      p.prompt, p.new_tokens, model->max_positions()));
    }
  }
  const double bw = copy_bandwidth(device);
  Decoder dec(*model, DecoderOptions{autocast, opt.cuda_graphs});
  // The graph path decodes with its own bf16 copy: the fp32 model leaves the GPU, so the
  // peak memory is the engine's.
  if (dec.uses_graphs()) model->to(torch::kCPU);
  json results = json::array();
  for (size_t i = 0; i < opt.points.size(); ++i) {
    const DecodePoint& pt = opt.points[i];
    json r;
    try {
      r = run_point(dec, dec.engine_model(), pt, bw, device,
                    i + 1 == opt.points.size() ? opt.profile_path : std::string());
    } catch (const c10::OutOfMemoryError&) {
      dec.reset(1, 1);  // drop the big cache
      r = {{"n_layer", g.n_layer},       {"block_pattern", compact_block_pattern(g.block_pattern)},
           {"vocab_size", g.vocab_size}, {"batch", pt.batch},
           {"prompt", pt.prompt},        {"new", pt.new_tokens},
           {"error", "out of memory"}};
    }
    std::fprintf(
        stderr, "bench decode: %s %lldx%lld+%lld: %s\n",
        compact_block_pattern(g.block_pattern).c_str(), static_cast<long long>(pt.batch),
        static_cast<long long>(pt.prompt), static_cast<long long>(pt.new_tokens),
        r.contains("tok_per_s")
            ? fmt::format("prefill {:.1f} ms, {:.3f} ms/step, {:.0f} tok/s, MBU {:.3f}",
                          r["prefill_ms"].get<double>(), r["decode_ms_per_step"].get<double>(),
                          r["tok_per_s"].get<double>(), r["mbu"].get<double>())
                  .c_str()
            : "out of memory");
    results.push_back(r);
  }
  const char* commit = std::getenv("HYLAB_COMMIT");
  return {
      {"commit", commit != nullptr ? commit : ""},
      {"date", now_utc_date()},
      {"gpu", device_name(device)},
      {"device", device.str()},
      {"dtype", autocast ? "bf16" : "fp32"},
      {"cuda_graphs", dec.uses_graphs()},
      {"copy_bandwidth_gb_per_s", bw / 1e9},
      {"torch_version", TORCH_VERSION},
      {"config", json::parse(config_to_json(cfg, false))},
      {"results", results},
  };
}

}  // namespace

int run_bench_decode(const DecodeBenchOptions& opt) {
  try {
    const json j = bench(opt);
    const std::string text = j.dump(2);
    std::printf("%s\n", text.c_str());
    if (!opt.json_path.empty()) {
      std::ofstream out(opt.json_path);
      HYLAB_CHECK(out.good(), "bench decode: cannot write {}", opt.json_path);
      out << text << "\n";
    }
    return proto::TRAINER_EXIT_OK;
  } catch (...) {
    return exit_status_of_current_exception("hylab bench decode");
  }
}

}  // namespace hylab::trainer
