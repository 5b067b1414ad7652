#include "trainer/schedule.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "common/check.h"

namespace hylab::trainer {

Horizon compute_horizon(const RunConfig& c, int64_t num_params, int world, double flops_per_token) {
  HYLAB_CHECK(world >= 1, "world size {} must be >= 1", world);
  Horizon h;
  h.tokens_per_micro_step = static_cast<int64_t>(c.device_batch_size()) * c.max_seq_len();
  const int64_t world_tokens = h.tokens_per_micro_step * world;
  if (c.total_batch_size() == -1) {
    h.total_batch_size = world_tokens;
    h.grad_accum_steps = 1;
  } else {
    h.total_batch_size = c.total_batch_size();
    if (h.total_batch_size % world_tokens != 0) {
      throw ConfigError(fmt::format(
          "total_batch_size = {} is not a multiple of device_batch_size * max_seq_len * ranks = "
          "{} * {} * {} = {}; pick a total_batch_size that is (or -1 for one micro-step per rank)",
          h.total_batch_size, c.device_batch_size(), c.max_seq_len(), world, world_tokens));
    }
    h.grad_accum_steps = h.total_batch_size / world_tokens;
  }
  if (c.num_iterations() >= 0) {
    h.num_iterations = c.num_iterations();
    h.horizon_source = "num_iterations";
  } else if (c.target_flops() > 0) {
    HYLAB_CHECK(flops_per_token > 0, "target_flops needs the model's FLOPs per token (got {})",
                flops_per_token);
    const double flops_per_step = flops_per_token * static_cast<double>(h.total_batch_size);
    h.num_iterations = std::max<int64_t>(1, std::llround(c.target_flops() / flops_per_step));
    h.horizon_source = "target_flops";
  } else if (c.target_tokens() > 0) {
    h.num_iterations = std::max<int64_t>(1, std::llround(c.target_tokens() / static_cast<double>(h.total_batch_size)));
    h.horizon_source = "target_tokens";
  } else {
    const double target_tokens = c.target_param_data_ratio() * static_cast<double>(num_params);
    h.num_iterations = std::max<int64_t>(1, static_cast<int64_t>(target_tokens / h.total_batch_size));
    h.horizon_source = "target_param_data_ratio";
  }
  return h;
}

double lr_multiplier(int64_t it, int64_t n, double warmup_ratio, double warmdown_ratio,
                     double final_lr_frac) {
  const int64_t warmup = std::llround(warmup_ratio * static_cast<double>(n));
  const int64_t warmdown = std::llround(warmdown_ratio * static_cast<double>(n));
  if (it < warmup) return static_cast<double>(it + 1) / static_cast<double>(warmup);
  if (it <= n - warmdown) return 1.0;
  const double progress = static_cast<double>(n - it) / static_cast<double>(warmdown);
  return progress + (1.0 - progress) * final_lr_frac;
}

double muon_momentum(int64_t it) {
  const double frac = std::min(static_cast<double>(it) / 300.0, 1.0);
  return (1.0 - frac) * 0.85 + frac * 0.95;
}

double adamw_lr_scale(int n_embd) { return std::pow(static_cast<double>(n_embd) / 768.0, -0.5); }

double bits_per_byte(double sum_loss_nats, int64_t sum_bytes) {
  if (sum_bytes <= 0) return std::numeric_limits<double>::quiet_NaN();
  return sum_loss_nats / (std::log(2.0) * static_cast<double>(sum_bytes));
}

double peak_flops_for_device(const std::string& name) {
  // Dense bf16 tensor-core peaks (no sparsity). Unknown devices report 0 (MFU not computed).
  struct Entry {
    const char* needle;
    double flops;
  };
  static const Entry kTable[] = {
      {"H200", 989e12}, {"H100", 989e12}, {"GH200", 989e12},
  };
  for (const Entry& e : kTable) {
    if (name.find(e.needle) != std::string::npos) return e.flops;
  }
  return 0.0;
}

double mfu(double flops_per_token, double tokens_per_s, double peak, int world) {
  if (peak <= 0 || world <= 0) return 0.0;
  return flops_per_token * tokens_per_s / (peak * world);
}

}  // namespace hylab::trainer
