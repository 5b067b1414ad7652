#include "trainer/bench.h"

#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "common/check.h"
#include "common/run_config.h"
#include "model/accounting.h"
#include "model/compat.h"
#include "model/gpt.h"
#include "trainer/device.h"
#include "trainer/optim.h"
#include "trainer/profile.h"
#include "trainer/provenance.h"
#include "trainer/schedule.h"
#include "trainer/train.h"

namespace hylab::trainer {
namespace {

nlohmann::ordered_json bench(const BenchOptions& opt) {
  RunConfig cfg = opt.config_path.empty() ? RunConfig() : load_config_file(opt.config_path);
  const auto rest = apply_override_args(&cfg, opt.overrides);
  if (!rest.empty()) throw ConfigError("unknown argument \"" + rest.front() + "\"");
  cfg = resolve_config(cfg);
  if (opt.steps < 1 || opt.warmup < 0) throw ConfigError("--steps must be >= 1 and --warmup >= 0");

  const torch::Device device = pick_device(cfg, 0);
  const bool autocast = use_bf16_autocast(cfg, device);
  const GPTConfig gcfg = gpt_config(cfg);
  torch::manual_seed(static_cast<uint64_t>(cfg.seed()));
  GPT model(gcfg);
  model->to(device);
  model->set_use_kernels(cfg.kernels() != "reference");
  const ParamCounts counts = count_params(gcfg);
  const Horizon h = compute_horizon(cfg, counts.total, /*world=*/1, flops_per_token(gcfg, cfg.max_seq_len()));
  Optimizers optim(*model, cfg, device.is_cuda());
  const int64_t B = cfg.device_batch_size(), T = cfg.max_seq_len();
  // Random tokens, drawn once on the device (the data path is not what is measured).
  auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(cfg.seed()));
  const torch::Tensor tokens = torch::randint(gcfg.vocab_size, {B, T + 1}, gen, torch::kLong).to(device);
  const torch::Tensor x = tokens.slice(1, 0, T), y = tokens.slice(1, 1, T + 1);  // (B, T) each

  auto micro_steps = [&] {
    for (int64_t m = 0; m < h.grad_accum_steps; ++m) {
      torch::Tensor loss;
      {
        compat::AutocastGuard guard(autocast);
        loss = model->loss(x, y);
      }
      (loss / static_cast<double>(h.grad_accum_steps)).backward();
    }
  };
  auto optimizer_step = [&](int64_t it) {
    clip_grad_norm(optim.all_params(), cfg.grad_clip());
    optim.set_schedule(1.0, muon_momentum(it));
    optim.step();
    optim.zero_grad();
  };
  auto seconds_since = [](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  };
  for (int i = 0; i < opt.warmup; ++i) {
    micro_steps();
    optimizer_step(i);
  }
  synchronize(device);
  reset_peak_memory(device);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < opt.steps; ++i) {
    micro_steps();
    optimizer_step(opt.warmup + i);
  }
  synchronize(device);
  const double dt = seconds_since(t0);

  // One more step, synchronised between its parts: where the step's time goes.
  auto t1 = std::chrono::steady_clock::now();
  micro_steps();
  synchronize(device);
  const double fwd_bwd_s = seconds_since(t1);
  t1 = std::chrono::steady_clock::now();
  optimizer_step(opt.warmup + opt.steps);
  synchronize(device);
  const double optim_s = seconds_since(t1);
  nlohmann::ordered_json profile;
  if (!opt.profile_path.empty()) {
    profile = profile_gpu_work(
        [&] {
          micro_steps();
          optimizer_step(opt.warmup + opt.steps + 1);
          synchronize(device);
        },
        opt.profile_path);
  }

  const double tok_per_s = static_cast<double>(h.total_batch_size) * opt.steps / dt;
  const double fpt = flops_per_token(gcfg, T);
  const double peak = peak_flops_for_device(device_name(device));
  const MemoryStats mem = peak_memory(device);
  return {
      {"tok_per_s", tok_per_s},
      {"mfu", peak > 0 ? nlohmann::ordered_json(mfu(fpt, tok_per_s, peak, 1)) : nlohmann::ordered_json()},
      {"step_ms", 1e3 * dt / opt.steps},
      {"micro_step_ms", 1e3 * fwd_bwd_s / static_cast<double>(h.grad_accum_steps)},
      {"optimizer_ms", 1e3 * optim_s},
      {"peak_mem_gib", mem.peak_allocated_gib},
      {"peak_reserved_gib", mem.peak_reserved_gib},
      {"params_total", counts.total},
      {"params", {{"embedding", counts.embedding}, {"lm_head", counts.lm_head},
                  {"attention", counts.attention}, {"mlp", counts.mlp}, {"mamba", counts.mamba},
                  {"mamba2", counts.mamba2}}},
      {"flops_per_token", fpt},
      {"device", device.str()},
      {"device_name", device_name(device)},
      {"dtype", autocast ? "bf16" : "fp32"},
      {"tokens_per_step", h.total_batch_size},
      {"grad_accum_steps", h.grad_accum_steps},
      {"steps", opt.steps},
      {"warmup_steps", opt.warmup},
      {"torch_version", TORCH_VERSION},
      {"provenance", collect_provenance(device)},  // commit, CUDA, NCCL, driver, GPU, host
      {"config", nlohmann::ordered_json::parse(config_to_json(cfg, false))},
      {"profile", profile},
  };
}

}  // namespace

int run_bench_train(const BenchOptions& opt) {
  try {
    std::printf("%s\n", bench(opt).dump(2).c_str());
    return kExitOk;
  } catch (...) {
    return exit_status_of_current_exception("hylab bench train");
  }
}

}  // namespace hylab::trainer
