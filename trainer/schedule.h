// The numbers of a run that are pure arithmetic (nanochat's scripts/base_train.py):
// gradient accumulation, horizon, learning-rate and momentum schedules, bits per byte, MFU.
// Torch-free, so tests check them on known values.
#pragma once

#include <cstdint>
#include <string>

#include "common/run_config.h"

namespace hylab::trainer {

struct Horizon {
  int64_t tokens_per_micro_step = 0;  // device_batch_size * max_seq_len (one rank)
  int64_t total_batch_size = 0;       // tokens per optimizer step, all ranks
  int64_t grad_accum_steps = 0;       // micro-steps per optimizer step on each rank
  int64_t num_iterations = 0;         // optimizer steps of the run
  std::string horizon_source;         // num_iterations, target_flops, target_tokens or target_param_data_ratio
};

// grad_accum = total_batch_size / (device_batch_size * max_seq_len * world), which must divide
// exactly (total_batch_size = -1: one micro-step per rank). Horizon (at least 1 step):
// num_iterations if >= 0; else round(target_flops / (flops_per_token * total_batch_size))
// (nanochat's equal-FLOPs horizon: each model's steps follow from its own FLOPs per token, so
// models of one budget differ by less than one step's FLOPs); else
// round(target_tokens / total_batch_size); else target_param_data_ratio * num_params /
// total_batch_size (Chinchilla). flops_per_token: model/accounting.h's flops_per_token at
// max_seq_len, needed only for target_flops.
// Throws hylab::ConfigError naming the fields when the batch sizes do not divide.
Horizon compute_horizon(const RunConfig& resolved, int64_t num_params, int world,
                        double flops_per_token = 0);

// LR multiplier at step `it` (0-based): linear warmup over round(warmup_ratio * n) steps,
// constant, then linear warmdown over the last round(warmdown_ratio * n) steps towards
// final_lr_frac.
double lr_multiplier(int64_t it, int64_t num_iterations, double warmup_ratio, double warmdown_ratio,
                     double final_lr_frac);

// Muon momentum: 0.85 -> 0.95 linearly over the first 300 steps.
double muon_momentum(int64_t it);

// nanochat's width scaling of the AdamW learning rates: (n_embd / 768) ^ -0.5.
double adamw_lr_scale(int n_embd);

// Bits per byte: sum of per-token losses in nats / (ln 2 * sum of the target tokens' bytes).
// Returns NaN if sum_bytes is 0.
double bits_per_byte(double sum_loss_nats, int64_t sum_bytes);

// Peak dense bf16 FLOP/s of a device by name (H100/H200: 989e12); 0 if unknown (CPU).
double peak_flops_for_device(const std::string& device_name);

// Model FLOPs utilisation: flops_per_token * tokens_per_s / (peak * world); 0 if peak is 0.
double mfu(double flops_per_token, double tokens_per_s, double peak_flops_per_device, int world);

}  // namespace hylab::trainer
