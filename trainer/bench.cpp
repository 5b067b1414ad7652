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
#include "trainer/dist.h"
#include "trainer/grad_reducer.h"
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

  // Several ranks when launched as such (RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT, as
  // torchrun sets them): the training step's data parallel, rank 0 prints.
  const DistEnv denv = dist_env_from_environment();
  const torch::Device device = pick_device(cfg, denv.local_rank);
  const bool autocast = use_bf16_autocast(cfg, device);
  std::unique_ptr<Dist> dist = make_dist(denv, device);
  const GPTConfig gcfg = gpt_config(cfg);
  torch::manual_seed(static_cast<uint64_t>(cfg.seed()));
  GPT model(gcfg);
  model->to(device);
  model->set_use_kernels(cfg.kernels() != "reference");
  const ParamCounts counts = count_params(gcfg);
  const Horizon h = compute_horizon(cfg, counts.total, denv.world, flops_per_token(gcfg, cfg.max_seq_len()));
  {  // every rank starts from rank 0's weights
    torch::NoGradGuard ng;
    for (auto& p : model->parameters()) dist->broadcast(p, 0);
  }
  Optimizers optim(*model, cfg, device.is_cuda(), dist.get());
  std::unique_ptr<GradReducer> reducer;
  if (denv.world > 1 && cfg.ddp_overlap()) {
    reducer = std::make_unique<GradReducer>(*dist, model->parameters(),
                                            static_cast<int64_t>(cfg.ddp_bucket_mb() * (1 << 20)));
  }
  const int64_t B = cfg.device_batch_size(), T = cfg.max_seq_len();
  // Random tokens, drawn once on the device (the data path is not what is measured).
  auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(cfg.seed()) + static_cast<uint64_t>(denv.rank));
  const torch::Tensor tokens = torch::randint(gcfg.vocab_size, {B, T + 1}, gen, torch::kLong).to(device);
  const torch::Tensor x = tokens.slice(1, 0, T), y = tokens.slice(1, 1, T + 1);  // (B, T) each

  // One optimiser step's micro-steps and gradient averaging; with a timer, each forward,
  // backward and the communication after backward are laps of their phase.
  enum Phase { kForward, kBackward, kCommunication, kOptimizer };
  auto micro_steps = [&](PhaseTimer* timer) {
    for (int64_t m = 0; m < h.grad_accum_steps; ++m) {
      torch::Tensor loss;
      {
        compat::AutocastGuard guard(autocast);
        loss = model->loss(x, y);
      }
      if (timer) timer->lap(kForward);
      if (reducer && m + 1 == h.grad_accum_steps) reducer->arm();
      (loss / static_cast<double>(h.grad_accum_steps)).backward();
      if (timer) timer->lap(kBackward);
    }
    if (denv.world == 1) return;  // nothing to communicate: communication_ms stays 0
    if (reducer) {
      reducer->finish();
    } else {
      dist->average_gradients(optim.all_params());
    }
    if (timer) timer->lap(kCommunication);
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
    micro_steps(nullptr);
    optimizer_step(i);
  }
  synchronize(device);
  reset_peak_memory(device);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < opt.steps; ++i) {
    micro_steps(nullptr);
    optimizer_step(opt.warmup + i);
  }
  synchronize(device);
  const double dt = seconds_since(t0);

  // One more step timed in parts (CUDA events on the GPU, the wall clock on CPU): where the
  // step's time goes. Sharded Muon's all-gather is part of the optimizer phase.
  PhaseTimer timer(device, 4);
  timer.mark();
  micro_steps(&timer);
  optimizer_step(opt.warmup + opt.steps);
  timer.lap(kOptimizer);
  const std::vector<double> part_ms = timer.ms();
  synchronize(device);
  nlohmann::ordered_json profile;
  if (!opt.profile_path.empty()) {
    profile = profile_gpu_work(
        [&] {
          micro_steps(nullptr);
          optimizer_step(opt.warmup + opt.steps + 1);
          synchronize(device);
        },
        opt.profile_path);
  }

  const double tok_per_s = static_cast<double>(h.total_batch_size) * opt.steps / dt;  // all ranks
  const double fpt = flops_per_token(gcfg, T);
  const double peak = peak_flops_for_device(device_name(device));
  const MemoryStats mem = peak_memory(device);
  dist->barrier();
  if (denv.rank != 0) return nullptr;
  return {
      {"tok_per_s", tok_per_s},
      {"mfu", peak > 0 ? nlohmann::ordered_json(mfu(fpt, tok_per_s, peak, denv.world)) : nlohmann::ordered_json()},
      {"step_ms", 1e3 * dt / opt.steps},
      {"micro_step_ms", (part_ms[kForward] + part_ms[kBackward]) / static_cast<double>(h.grad_accum_steps)},
      {"optimizer_ms", part_ms[kOptimizer]},
      {"breakdown", {{"forward_ms", part_ms[kForward]},
                     {"backward_ms", part_ms[kBackward]},
                     {"optimizer_ms", part_ms[kOptimizer]},
                     {"communication_ms", part_ms[kCommunication]}}},
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
      {"total_batch_size", h.total_batch_size},
      {"tokens_per_step", h.total_batch_size},
      {"world_size", denv.world},
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
    const nlohmann::ordered_json out = bench(opt);
    if (!out.is_null()) std::printf("%s\n", out.dump(2).c_str());  // rank 0 only
    return proto::TRAINER_EXIT_OK;
  } catch (...) {
    return exit_status_of_current_exception("hylab bench train");
  }
}

}  // namespace hylab::trainer
