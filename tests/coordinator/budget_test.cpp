// Equal budgets: `budget: {flops: F}` / `{tokens: N}` in a sweep spec. Expanding T*4, M*4 and
// (T,M)*2 under one FLOP budget must give each pattern the same training FLOPs to within one
// optimiser step, with each trial's steps taken from its own FLOPs per token (the trainer's
// compute_horizon on the stored config, with model/accounting.h's FLOP formula).
#include <gtest/gtest.h>

#include <cmath>

#include "common/check.h"
#include "sweep/sweep_expander.h"
#include "sweep/sweep_spec.h"
#include "model/accounting.h"
#include "trainer/schedule.h"

namespace hylab::coordinator {
namespace {

RunConfig base_d4() {
  RunConfig c;
  c.set_depth(4);
  c.set_max_seq_len(64);
  c.set_device_batch_size(4);
  c.set_total_batch_size(1024);
  c.set_vocab_size(8192);
  return c;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

struct Planned {
  std::string pattern;
  int64_t steps = 0;
  double flops_per_step = 0;
};

std::vector<Planned> plan(const std::string& budget_yaml) {
  const auto spec = parse_sweep_yaml(
      "name: b\nbase: x.yaml\nbudget: " + budget_yaml +
          "\noverrides: {num_iterations: 60}\n"  // replaced by the budget
          "parameters:\n  block_pattern: {values: [\"T*4\", \"M*4\", \"(T,M)*2\"]}\n",
      "b.yaml");
  const Expansion e = expand_sweep(spec, base_d4());
  std::vector<Planned> out;
  for (const auto& t : e.trials) {
    const GPTConfig g = gpt_config(t.resolved);
    const double fpt = flops_per_token(g, t.resolved.max_seq_len());
    const trainer::Horizon h =
        trainer::compute_horizon(t.resolved, count_params(g).total, /*world=*/1, fpt);
    out.push_back(
        {t.params[0].second, h.num_iterations, fpt * static_cast<double>(h.total_batch_size)});
    EXPECT_EQ(t.resolved.num_iterations(), -1) << "the budget replaces num_iterations";
  }
  return out;
}

TEST(Budget, AFlopsBudgetGivesEveryPatternTheSameFlopsWithinOneStep) {
  const double budget = 2e13;
  const auto trials = plan("{flops: 2e13}");
  ASSERT_EQ(trials.size(), 3u);
  double max_step_flops = 0;
  for (const auto& t : trials) {
    SCOPED_TRACE(t.pattern);
    max_step_flops = std::max(max_step_flops, t.flops_per_step);
    EXPECT_GT(t.steps, 10);
    // Rounded to the nearest step: off by at most half of one step's FLOPs.
    EXPECT_LE(std::fabs(static_cast<double>(t.steps) * t.flops_per_step - budget),
              0.5 * t.flops_per_step);
  }
  for (const auto& a : trials) {
    for (const auto& b : trials) {
      EXPECT_LE(std::fabs(a.steps * a.flops_per_step - b.steps * b.flops_per_step), max_step_flops)
          << a.pattern << " vs " << b.pattern;
    }
  }
  // Each pattern's own FLOPs per token decide its steps: all-Mamba (no MLP, no attention
  // scores) is cheaper per token than all-Transformer, so it trains for more steps.
  EXPECT_LT(trials[1].flops_per_step, trials[0].flops_per_step);
  EXPECT_GT(trials[1].steps, trials[0].steps);
  EXPECT_GT(trials[2].steps, trials[0].steps);
  EXPECT_LT(trials[2].steps, trials[1].steps);
}

TEST(Budget, ATokensBudgetGivesEveryPatternTheSameSteps) {
  const auto trials = plan("{tokens: 102400}");
  ASSERT_EQ(trials.size(), 3u);
  for (const auto& t : trials) EXPECT_EQ(t.steps, 100) << t.pattern;  // 102400 / 1024
}

TEST(Budget, CheckpointRetentionIsSetPerSweep) {
  const auto spec = parse_sweep_yaml(
      "name: k\nbase: x.yaml\noverrides: {checkpoint_keep: {last: 2, best: 0}}\n"
      "parameters:\n  block_pattern: {values: [\"T*4\", \"M*4\"]}\n",
      "k.yaml");
  for (const auto& t : expand_sweep(spec, base_d4()).trials) {
    EXPECT_EQ(t.resolved.checkpoint_keep_last(), 2);
    EXPECT_EQ(t.resolved.checkpoint_keep_best(), 0);
  }
  const std::string bad = error_of([] {
    expand_sweep(parse_sweep_yaml(
                     "name: k\nbase: x.yaml\noverrides: {checkpoint_keep: {last: 0}}\n", "k.yaml"),
                 base_d4());
  });
  EXPECT_NE(bad.find("checkpoint_keep_last = 0: expected >= 1"), std::string::npos) << bad;
}

TEST(Budget, SpecErrorsNameTheField) {
  auto parse = [](const std::string& extra) {
    return error_of([&] { parse_sweep_yaml("name: b\nbase: x.yaml\n" + extra, "b.yaml"); });
  };
  EXPECT_NE(parse("budget: {flops: 1e18, tokens: 5}")
                .find("b.yaml: budget: give exactly one of tokens or flops"),
            std::string::npos);
  EXPECT_NE(parse("budget: {steps: 5}")
                .find("b.yaml: budget: unknown key \"steps\"; allowed: flops, tokens"),
            std::string::npos);
  EXPECT_NE(parse("budget: {flops: -3}").find("budget.flops = -3: expected a number > 0"),
            std::string::npos);
  EXPECT_NE(parse("budget: {tokens: lots}").find("budget.tokens = \"lots\": expected a number"),
            std::string::npos);
  EXPECT_NE(parse("budget: 5").find("budget: expected a map"), std::string::npos);
  EXPECT_NE(parse("budget: {flops: 1e18}\nparameters:\n  num_iterations: {values: [1, 2]}\n")
                .find("parameters.num_iterations and budget both set the horizon"),
            std::string::npos);
  EXPECT_NE(parse("budget: {flops: 1e18}\noverrides: {target_tokens: 100}\n")
                .find("overrides.target_tokens and budget both set the horizon"),
            std::string::npos);
  const auto ok = parse_sweep_yaml("name: b\nbase: x.yaml\nbudget: {flops: 1e18}\n", "b.yaml");
  EXPECT_EQ(ok.budget().flops(), 1e18);
  EXPECT_FALSE(ok.budget().has_tokens());
}

}  // namespace
}  // namespace hylab::coordinator
