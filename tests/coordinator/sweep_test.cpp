// Sweep specs and their expansion: a pure function from (spec, base config) to trials.
#include <gtest/gtest.h>

#include <chrono>

#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "common/check.h"
#include "sweep/submission.h"
#include "sweep/sweep_expander.h"
#include "sweep/sweep_spec.h"

namespace hylab::coordinator {
namespace {

RunConfig base_d4() {
  RunConfig c;
  c.set_depth(4);
  c.set_max_seq_len(64);
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

std::string param(const TrialPlan& t, const std::string& name) {
  for (const auto& [k, v] : t.params) {
    if (k == name) return v;
  }
  return "<none>";
}

TEST(SweepSpec, ParsesEveryBlock) {
  const auto spec = parse_sweep_yaml(R"(
name: patterns
base: configs/d12.yaml
method: grid
metric: {name: val_bpb, goal: minimize}
resources: {gpus_per_trial: 2}
max_retries: 1
priority: 5
early_stop: {type: asha, min_steps: 50, eta: 2, rungs: 2}
overrides: {num_iterations: 100}
parameters:
  block_pattern: {values: ["T*4", "M*4"]}
  mamba_d_state: {values: [16, 32]}
  seed: {value: 3}
)", "test.yaml");
  EXPECT_EQ(spec.name(), "patterns");
  EXPECT_EQ(spec.resources().gpus_per_trial(), 2);
  EXPECT_EQ(spec.resources().nodes_per_trial(), 1);
  EXPECT_EQ(spec.max_retries(), 1);
  EXPECT_EQ(spec.priority(), 5);
  EXPECT_EQ(spec.early_stop().type(), "asha");
  EXPECT_EQ(spec.early_stop().eta(), 2);
  ASSERT_EQ(spec.parameters_size(), 3);
  EXPECT_EQ(spec.parameters(0).name(), "block_pattern");  // YAML order kept
  EXPECT_EQ(spec.parameters(1).values(1), "32");
  EXPECT_EQ(spec.overrides().at("num_iterations"), "100");
  const auto es = early_stop_from_json(early_stop_to_json(spec));
  EXPECT_EQ(es.min_steps(), 50);
}

// Size bombs (issue 15): every count is bounded before anything is expanded or narrowed.
TEST(SweepSpec, CountsAreBoundedBeforeAnythingIsExpanded) {
  auto err = [](const std::string& yaml) { return error_of([&] { parse_sweep_yaml(yaml, "s.yaml"); }); };
  // A random sweep's count used to be taken as is (std::bad_alloc in --dry_run), and a value
  // past 2^32 wrapped to a small one.
  EXPECT_NE(err("name: x\nbase: b\nmethod: random\ncount: 1000000000\n").find("count = 1000000000: expected 0..100000"),
            std::string::npos);
  EXPECT_NE(err("name: x\nbase: b\nmethod: random\ncount: 4294967297\n").find("count = 4294967297"), std::string::npos);
  EXPECT_NE(err("name: x\nbase: b\nresources: {gpus_per_trial: 4294967297}\n").find("gpus_per_trial = 4294967297"),
            std::string::npos);
  EXPECT_NE(err("name: x\nbase: b\nmax_retries: 4294967296\n").find("max_retries = 4294967296: expected 0..100"),
            std::string::npos);
  EXPECT_NE(err("name: x\nbase: b\nearly_stop: {type: asha, eta: 4294967298}\n").find("eta = 4294967298"),
            std::string::npos);
  EXPECT_NE(err("name: x\nbase: b\nmethod: tpe\ncount: 5\ntpe: {startup_trials: 4294967297}\n")
                .find("startup_trials = 4294967297"), std::string::npos);
}

TEST(SweepExpansion, TrialCountsAndPatternSizesAreCheckedBeforeExpansion) {
  // seeds x grid: 1,000 values x 200 seeds = 200,000 trials, refused from the sizes alone.
  std::string values, seeds;
  for (int i = 1; i <= 1000; ++i) values += (i > 1 ? "," : "") + std::to_string(i);
  for (int i = 0; i < 200; ++i) seeds += (i ? "," : "") + std::to_string(i);
  const auto seeded = parse_sweep_yaml("name: x\nbase: b\nparameters: {num_iterations: {values: [" + values +
                                           "]}}\nseeds: [" + seeds + "]\n", "s.yaml");
  const auto t0 = std::chrono::steady_clock::now();
  const std::string e = error_of([&] { expand_sweep(seeded, base_d4()); });
  EXPECT_NE(e.find("1000 combinations x 200 seeds = 200000 trials, more than 100000"), std::string::npos) << e;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  // A compact pattern of ~40 bytes that expands to 10^12 layers: refused while parsed.
  const auto bomb = parse_sweep_yaml(
      "name: x\nbase: b\nparameters: {block_pattern: {values: [\"(((T*10000)*10000)*10000)\"]}}\n", "s.yaml");
  const std::string b = error_of([&] { expand_sweep(bomb, base_d4()); });
  EXPECT_NE(b.find("more than 1024 layers"), std::string::npos) << b;
}

TEST(SweepExpansion, ASmallerTrialLimitIsCheckedLikeTheRealOne) {
  // The sweep fuzz target bounds trials at 64 through the same check (fuzz/sweep_fuzz.cpp).
  const auto grid = parse_sweep_yaml(
      "name: x\nbase: b\nparameters: {num_iterations: {values: [1, 2, 3, 4, 5, 6, 7, 8, 9]}}\n"
      "seeds: [1, 2, 3, 4, 5, 6, 7, 8]\n", "s.yaml");
  EXPECT_EQ(expand_sweep(grid, base_d4()).trials.size(), 72u);
  const std::string e = error_of([&] { expand_sweep(grid, base_d4(), {}, 64); });
  EXPECT_NE(e.find("9 combinations x 8 seeds = 72 trials, more than 64"), std::string::npos) << e;
  const auto random = parse_sweep_yaml(
      "name: x\nbase: b\nmethod: random\ncount: 65\nparameters: {num_iterations: {values: [1, 2]}}\n",
      "s.yaml");
  EXPECT_NE(error_of([&] { expand_sweep(random, base_d4(), {}, 64); }).find("more than 64 trials"),
            std::string::npos);
  // A limit above the real one is the real one: 400 x 300 seeds, refused at 100,000.
  std::string values, seeds;
  for (int i = 1; i <= 400; ++i) values += (i > 1 ? "," : "") + std::to_string(i);
  for (int i = 0; i < 300; ++i) seeds += (i ? "," : "") + std::to_string(i);
  const auto big = parse_sweep_yaml("name: x\nbase: b\nparameters: {num_iterations: {values: [" + values +
                                        "]}}\nseeds: [" + seeds + "]\n", "s.yaml");
  EXPECT_NE(error_of([&] { expand_sweep(big, base_d4(), {}, int64_t{1} << 40); })
                .find("= 120000 trials, more than 100000"),
            std::string::npos);
}

TEST(SweepSpec, ErrorsNameTheFieldAndWhatIsAllowed) {
  auto err = [](const std::string& yaml) { return error_of([&] { parse_sweep_yaml(yaml, "s.yaml"); }); };
  EXPECT_NE(err("name: x\nbase: b\nfoo: 1\n").find("unknown key \"foo\""), std::string::npos);
  EXPECT_NE(err("base: b\n").find("name: required"), std::string::npos);
  EXPECT_NE(err("name: x\nbase: b\nmethod: sobol\n").find("expected grid, random or tpe"), std::string::npos);
  EXPECT_NE(err("name: x\nbase: b\nparameters: {n_layers: {values: [1]}}\n").find("\"n_layers\" is not a config key"),
            std::string::npos);
  EXPECT_NE(err("name: x\nbase: b\nparameters: {seed: {values: []}}\n").find("parameters.seed.values: expected a non-empty list"),
            std::string::npos);
  EXPECT_NE(err("name: x\nbase: b\nparameters: {seed: {values: [1], value: 2}}\n").find("exactly one of"),
            std::string::npos);
  EXPECT_NE(err("name: x\nbase: b\nparameters: {seed: {generate: {attention_fraction: [0.5]}}}\n")
                .find("only block_pattern can be generated"),
            std::string::npos);
  EXPECT_NE(err("name: x\nbase: b\nparameters: {block_pattern: {generate: {attention_fraction: [1.5]}}}\n")
                .find("expected a number in [0, 1]"),
            std::string::npos);
  EXPECT_NE(err("name: x\nbase: b\nparameters: {matrix_lr: {min: 0.1, max: 0.2}}\n").find("needs method: random"),
            std::string::npos);
  EXPECT_NE(err("name: x\nbase: b\nresources: {gpus_per_trial: 3, nodes_per_trial: 2}\n").find("dividing gpus_per_trial"),
            std::string::npos);
  EXPECT_NE(err("name: x\nbase: b\nearly_stop: {type: halving}\n").find("expected median, asha or hyperband"),
            std::string::npos);
  EXPECT_NE(err("name: local\nbase: b\n").find("reserved"), std::string::npos);
  EXPECT_NE(err("name: x\nbase: b\nmethod: random\n").find("count"), std::string::npos);
}

TEST(SweepExpander, GridIsTheProductWithTheLastParameterFastest) {
  const auto spec = parse_sweep_yaml(R"(
name: g
base: b.yaml
parameters:
  block_pattern: {values: ["T*2,M*2", "M*4", "(T,M)*2"]}
  mamba_d_state: {values: [8, 16]}
)", "g");
  const Expansion e = expand_sweep(spec, base_d4());
  ASSERT_EQ(e.trials.size(), 6u);
  EXPECT_EQ(e.duplicates_removed, 0);
  EXPECT_EQ(param(e.trials[0], "block_pattern"), "T*2,M*2");
  EXPECT_EQ(param(e.trials[0], "mamba_d_state"), "8");
  EXPECT_EQ(param(e.trials[1], "mamba_d_state"), "16");
  EXPECT_EQ(param(e.trials[2], "block_pattern"), "M*4");
  EXPECT_EQ(compact_block_pattern(gpt_config(e.trials[4].resolved).block_pattern), "T,M,T,M");
  EXPECT_EQ(e.trials[5].resolved.mamba_d_state(), 16);
  for (size_t i = 0; i < e.trials.size(); ++i) {
    EXPECT_EQ(e.trials[i].trial_index, static_cast<int64_t>(i));
    EXPECT_EQ(e.trials[i].resolved.name(), "g");
    EXPECT_EQ(e.trials[i].config_hash, config_hash(e.trials[i].resolved));
  }
  // Pure: the same inputs give the same trials.
  const Expansion again = expand_sweep(spec, base_d4());
  for (size_t i = 0; i < e.trials.size(); ++i) EXPECT_EQ(again.trials[i].config_hash, e.trials[i].config_hash);
}

TEST(SweepExpander, RemovesDuplicatesByConfigHash) {
  // "T*4" and "T,T,T,T" and [T, T, T, T] resolve to the same config.
  const auto spec = parse_sweep_yaml(R"(
name: d
base: b.yaml
parameters:
  block_pattern: {values: ["T*4", "T,T,T,T", [T, T, T, T], "M*4"]}
)", "d");
  const Expansion e = expand_sweep(spec, base_d4());
  EXPECT_EQ(e.trials.size(), 2u);
  EXPECT_EQ(e.duplicates_removed, 2);
  EXPECT_EQ(e.trials[1].trial_index, 1);
}

TEST(SweepExpander, KeysAConfigDoesNotUseDoNotMakeItANewTrial) {
  // Issue 14: a pattern x Mamba-hyperparameter grid trained the all-T model once per Mamba
  // setting. Without M layers the mamba_* keys (and scalar_lr) are unused; without T layers
  // n_head, n_kv_head and rope_base are; with an explicit horizon target_param_data_ratio is.
  const auto spec = parse_sweep_yaml(R"(
name: d
base: b.yaml
parameters:
  block_pattern: {values: ["T*4", "M*4", "T*2,M*2"]}
  mamba_d_state: {values: [16, 32]}
  mamba_expand: {values: [1, 2]}
)", "d");
  const Expansion e = expand_sweep(spec, base_d4());
  // T*4: 1 trial (not 4); M*4 and T*2,M*2: 4 each.
  EXPECT_EQ(e.trials.size(), 9u);
  EXPECT_EQ(e.duplicates_removed, 3);
  int all_t = 0;
  for (const auto& t : e.trials) all_t += param(t, "block_pattern") == "T*4";
  EXPECT_EQ(all_t, 1);

  RunConfig t4 = base_d4();
  t4.add_block_pattern("T*4");
  RunConfig t4_other = t4;
  t4_other.set_mamba_d_state(32);
  t4_other.set_mamba_dt_max(0.2);
  t4_other.set_scalar_lr(0.1);
  EXPECT_EQ(config_hash(resolve_config(t4)), config_hash(resolve_config(t4_other)));
  t4_other.set_rope_base(500);  // used by attention: a different model
  EXPECT_NE(config_hash(resolve_config(t4)), config_hash(resolve_config(t4_other)));

  RunConfig m4 = base_d4();
  m4.add_block_pattern("M*4");
  RunConfig m4_other = m4;
  m4_other.set_rope_base(500);
  m4_other.set_n_head(4);
  m4_other.set_n_kv_head(2);
  EXPECT_EQ(config_hash(resolve_config(m4)), config_hash(resolve_config(m4_other)));
  m4_other.set_mamba_d_state(32);
  EXPECT_NE(config_hash(resolve_config(m4)), config_hash(resolve_config(m4_other)));

  // An explicit horizon makes target_param_data_ratio unused; -1 uses it.
  RunConfig a = m4, b = m4;
  a.set_num_iterations(100);
  b.set_num_iterations(100);
  b.set_target_param_data_ratio(5);
  EXPECT_EQ(config_hash(resolve_config(a)), config_hash(resolve_config(b)));
  a.set_num_iterations(-1);
  b.set_num_iterations(-1);
  EXPECT_NE(config_hash(resolve_config(a)), config_hash(resolve_config(b)));
  // depth is redundant once the widths are resolved.
  RunConfig widths;
  widths.set_n_layer(4);
  widths.set_n_embd(256);
  widths.set_n_head(2);
  widths.set_max_seq_len(64);
  EXPECT_EQ(config_hash(resolve_config(widths)), config_hash(resolve_config(base_d4())));
}

TEST(SweepExpander, SeedsRepeatEveryTrialOncePerSeed) {
  const std::string yaml = R"(
name: s
base: b.yaml
seeds: [0, 1, 2]
parameters:
  block_pattern: {values: ["T*4", "M*4"]}
)";
  const Expansion e = expand_sweep(parse_sweep_yaml(yaml, "s"), base_d4());
  ASSERT_EQ(e.trials.size(), 6u);
  EXPECT_EQ(e.duplicates_removed, 0);
  // Seed slowest: the first round already compares every configuration.
  const std::vector<std::pair<std::string, int64_t>> want = {
      {"T*4", 0}, {"M*4", 0}, {"T*4", 1}, {"M*4", 1}, {"T*4", 2}, {"M*4", 2}};
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(param(e.trials[i], "block_pattern"), want[i].first);
    EXPECT_EQ(param(e.trials[i], "seed"), std::to_string(want[i].second));
    EXPECT_EQ(e.trials[i].resolved.seed(), want[i].second);
  }
  // The trials of one configuration differ only in seed.
  RunConfig a = e.trials[0].resolved, b = e.trials[4].resolved;
  b.set_seed(a.seed());
  EXPECT_EQ(config_to_json(a), config_to_json(b));

  // Random sweeps too: each draw once per seed.
  const auto random = parse_sweep_yaml(R"(
name: r
base: b.yaml
method: random
count: 3
seeds: [5, 6]
parameters:
  matrix_lr: {min: 0.001, max: 0.1}
)", "r");
  const Expansion r = expand_sweep(random, base_d4());
  ASSERT_EQ(r.trials.size(), 6u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(r.trials[i].resolved.matrix_lr(), r.trials[i + 3].resolved.matrix_lr());
    EXPECT_EQ(r.trials[i].resolved.seed(), 5);
    EXPECT_EQ(r.trials[i + 3].resolved.seed(), 6);
  }

  auto err = [](const std::string& y) { return error_of([&] { parse_sweep_yaml(y, "s.yaml"); }); };
  EXPECT_NE(err("name: x\nbase: b\nseeds: []\n").find("seeds: expected a non-empty list"), std::string::npos);
  EXPECT_NE(err("name: x\nbase: b\nseeds: [1, 1]\n").find("seeds[1] = 1: given twice"), std::string::npos);
  EXPECT_NE(err("name: x\nbase: b\nseeds: [a]\n").find("expected an integer"), std::string::npos);
  EXPECT_NE(err("name: x\nbase: b\nseeds: [1]\noverrides: {seed: 3}\n").find("seed is both in overrides"),
            std::string::npos);
  EXPECT_NE(err("name: x\nbase: b\nseeds: [1]\nparameters: {seed: {values: [2]}}\n").find("seed is both in parameters"),
            std::string::npos);
}

TEST(SweepExpander, RejectsInvalidCombinationsBeforeAnythingRuns) {
  const auto spec = parse_sweep_yaml(R"(
name: bad
base: b.yaml
parameters:
  block_pattern: {values: ["T*4", "T*3"]}
  mamba_d_conv: {values: [4, 9]}
)", "bad");
  const std::string msg = error_of([&] { expand_sweep(spec, base_d4()); });
  EXPECT_NE(msg.find("3 of 4 parameter combinations are invalid"), std::string::npos) << msg;
  EXPECT_NE(msg.find("block_pattern has 3 entries"), std::string::npos) << msg;
  EXPECT_NE(msg.find("mamba_d_conv = 9"), std::string::npos) << msg;
  EXPECT_NE(msg.find("block_pattern=T*4, mamba_d_conv=9"), std::string::npos) << msg;
}

TEST(SweepExpander, GeneratedPatterns) {
  EXPECT_EQ(generate_block_pattern(12, 0.25, "early"), "T*3,M*9");
  EXPECT_EQ(generate_block_pattern(12, 0.25, "late"), "M*9,T*3");
  EXPECT_EQ(generate_block_pattern(12, 0.25, "even"), "M*3,T,M*3,T,M*3,T");
  EXPECT_EQ(generate_block_pattern(12, 0.5, "even"), "M,T,M,T,M,T,M,T,M,T,M,T");
  EXPECT_EQ(generate_block_pattern(12, 0.0, "even"), "M*12");
  EXPECT_EQ(generate_block_pattern(12, 1.0, "late"), "T*12");
  EXPECT_EQ(generate_block_pattern(8, 0.125, "even"), "M*7,T");
  EXPECT_EQ(generate_block_pattern(4, 0.1, "early"), "M*4");  // rounds to 0 attention layers
  EXPECT_THROW(generate_block_pattern(12, 0.5, "middle"), ConfigError);
  // In a sweep: fractions x placements, duplicates (fraction 0 and 1) removed, n_layer from the base.
  const auto spec = parse_sweep_yaml(R"(
name: gen
base: b.yaml
parameters:
  block_pattern:
    generate: {attention_fraction: [0, 0.25, 0.5, 1], placement: [even, early, late]}
)", "gen");
  const Expansion e = expand_sweep(spec, base_d4());
  // 0 -> M*4 (once), 1 -> T*4 (once); 0.25: M*3,T / T,M*3 / M*3,T(dup); 0.5: M,T,M,T / T*2,M*2 / M*2,T*2
  EXPECT_EQ(e.trials.size(), 7u);
  EXPECT_EQ(e.duplicates_removed, 5);
  EXPECT_EQ(param(e.trials[1], "attention_fraction"), "0.25");
  EXPECT_EQ(param(e.trials[1], "placement"), "even");
  EXPECT_EQ(param(e.trials[1], "block_pattern"), "M*3,T");
}

// placement centered: attention at the centre of n_layer / a equal groups, never first or
// last (d12 with 1..5 attention layers; 6 would need layer 11).
TEST(SweepExpander, CenteredPlacementKeepsAttentionOffTheEnds) {
  auto centered = [](int n_attn) { return generate_block_pattern(12, n_attn / 12.0, "centered"); };
  EXPECT_EQ(centered(1), "M*6,T,M*5");                  // layer 6
  EXPECT_EQ(centered(2), "M*3,T,M*5,T,M*2");            // layers 3, 9
  EXPECT_EQ(centered(3), "M*2,T,M*3,T,M*3,T,M");        // layers 2, 6, 10
  EXPECT_EQ(centered(4), "M,T,M*2,T,M*2,T,M*2,T,M");    // layers 1, 4, 7, 10
  EXPECT_EQ(centered(5), "M,T,M,T,M*2,T,M,T,M,T,M");    // layers 1, 3, 6, 8, 10
  EXPECT_EQ(centered(0), "M*12");
  EXPECT_EQ(centered(12), "T*12");  // all attention: the same pattern at every placement
  EXPECT_EQ(generate_block_pattern(20, 0.1, "centered"), "M*5,T,M*9,T,M*4");  // d20, 2 layers: 5, 15
  const std::string err = error_of([&] { centered(6); });
  EXPECT_NE(err.find("placement centered"), std::string::npos) << err;
  EXPECT_NE(err.find("at most 5 attention layers"), std::string::npos) << err;
  EXPECT_NE(err.find("asks for 6"), std::string::npos) << err;
}

// first_layer / last_layer pin an end; the placement spreads the rest over the layers between.
TEST(SweepExpander, FirstAndLastLayerConstraints) {
  const double one = 1 / 12.0, three = 3 / 12.0;
  EXPECT_EQ(generate_block_pattern(12, one, "even"), "M*11,T");  // the unconstrained even layout
  EXPECT_EQ(generate_block_pattern(12, one, "even", {"", "M"}), "M*10,T,M");
  EXPECT_EQ(generate_block_pattern(12, one, "even", {"T", ""}), "T,M*11");  // Samba-like, at 0
  EXPECT_EQ(generate_block_pattern(12, three, "early", {"M", ""}), "M,T*3,M*8");
  EXPECT_EQ(generate_block_pattern(12, three, "even", {"M", "T"}), "M*5,T,M*4,T*2");  // layers 5, 10 and 11
  EXPECT_EQ(generate_block_pattern(12, three, "centered", {"M", "M"}), "M*2,T,M*3,T,M*2,T,M*2");  // 2, 6, 9
  EXPECT_EQ(generate_block_pattern(12, three, "centered", {"", "T"}), "M*2,T,M*5,T,M*2,T");  // 2, 8 and 11
  EXPECT_EQ(generate_block_pattern(1, 1.0, "even", {"T", "T"}), "T");
  // Constraints that the attention count cannot meet name both.
  std::string err = error_of([&] { generate_block_pattern(12, 0.0, "even", {"T", ""}); });
  EXPECT_NE(err.find("first_layer T"), std::string::npos) << err;
  EXPECT_NE(err.find("attention_fraction 0 gives 0 attention layers of 12"), std::string::npos) << err;
  err = error_of([&] { generate_block_pattern(12, 1.0, "even", {"", "M"}); });
  EXPECT_NE(err.find("last_layer M"), std::string::npos) << err;
  EXPECT_NE(error_of([&] { generate_block_pattern(12, 0.25, "even", {"X", ""}); }).find("expected T or M"),
            std::string::npos);
  EXPECT_NE(error_of([&] { generate_block_pattern(1, 1.0, "even", {"T", "M"}); }).find("the one layer"),
            std::string::npos);
  // In a sweep: parsed, recorded per trial, validated with the field's name.
  const auto spec = parse_sweep_yaml(R"(
name: ends
base: b.yaml
parameters:
  block_pattern:
    generate: {attention_fraction: [0.25, 0.375], placement: [centered, even], first_layer: mamba}
)", "ends");
  EXPECT_EQ(spec.parameters(0).generate().first_layer(), "M");
  EXPECT_FALSE(spec.parameters(0).generate().has_last_layer());
  RunConfig d8 = base_d4();
  d8.set_depth(8);
  const Expansion e = expand_sweep(spec, d8);
  ASSERT_EQ(e.trials.size(), 4u);
  EXPECT_EQ(param(e.trials[0], "block_pattern"), "M*2,T,M*3,T,M");  // 2 of 8 centered over layers 1..7
  EXPECT_EQ(param(e.trials[1], "block_pattern"), "M*4,T,M*2,T");    // even over layers 1..7
  EXPECT_EQ(param(e.trials[2], "block_pattern"), "M*2,T,M,T,M,T,M");
  EXPECT_EQ(param(e.trials[0], "first_layer"), "M");
  EXPECT_EQ(param(e.trials[0], "last_layer"), "<none>");
  EXPECT_EQ(param(e.trials[0], "placement"), "centered");
  auto err_of_yaml = [](const std::string& gen) {
    return error_of([&] {
      parse_sweep_yaml("name: x\nbase: b\nparameters: {block_pattern: {generate: " + gen + "}}\n", "s.yaml");
    });
  };
  EXPECT_NE(err_of_yaml("{attention_fraction: [0.5], first_layer: Q}").find("first_layer = \"Q\": expected T"),
            std::string::npos);
  EXPECT_NE(err_of_yaml("{attention_fraction: [0.5], placement: [middle]}").find("even, early, late or centered"),
            std::string::npos);
  // Too many attention layers for centered: the sweep fails at expansion, naming the values.
  const auto bad = parse_sweep_yaml(
      "name: x\nbase: b\nparameters: {block_pattern: {generate: {attention_fraction: [0.75], placement: [centered]}}}\n",
      "x");
  EXPECT_NE(error_of([&] { expand_sweep(bad, d8); }).find("at most 3 attention layers"), std::string::npos);
}

// A sweep's metric is one the trainer records; the goal defaults to the metric's direction.
TEST(SweepSpec, MetricNamesAreCheckedAndTheirGoalDefaults) {
  auto spec = parse_sweep_yaml("name: x\nbase: b\nmetric: {name: recall_acc}\n", "s.yaml");
  EXPECT_EQ(spec.metric().name(), "recall_acc");
  EXPECT_EQ(spec.metric().goal(), "maximize");
  spec = parse_sweep_yaml("name: x\nbase: b\nmetric: {name: val_bpb_2x}\n", "s.yaml");
  EXPECT_EQ(spec.metric().goal(), "minimize");
  spec = parse_sweep_yaml("name: x\nbase: b\nmetric: {name: recall_acc, goal: minimize}\n", "s.yaml");
  EXPECT_EQ(spec.metric().goal(), "minimize");  // an explicit goal wins
  const std::string err =
      error_of([] { parse_sweep_yaml("name: x\nbase: b\nmetric: {name: recal_acc}\n", "s.yaml"); });
  EXPECT_NE(err.find("metric.name = \"recal_acc\""), std::string::npos) << err;
  EXPECT_NE(err.find("did you mean recall_acc?"), std::string::npos) << err;
}

TEST(SweepExpander, RandomIsSeededAndDrawsFromRanges) {
  const std::string yaml = R"(
name: r
base: b.yaml
method: random
count: 6
seed: 11
parameters:
  matrix_lr: {min: 0.001, max: 0.1, distribution: log_uniform}
  mamba_d_state: {min: 4, max: 64, distribution: int_uniform}
  block_pattern: {values: ["T*4", "M*4"]}
)";
  const Expansion a = expand_sweep(parse_sweep_yaml(yaml, "r"), base_d4());
  const Expansion b = expand_sweep(parse_sweep_yaml(yaml, "r"), base_d4());
  ASSERT_EQ(a.trials.size() + a.duplicates_removed, 6u);
  ASSERT_EQ(a.trials.size(), b.trials.size());
  for (size_t i = 0; i < a.trials.size(); ++i) {
    EXPECT_EQ(a.trials[i].config_hash, b.trials[i].config_hash);
    EXPECT_GE(a.trials[i].resolved.matrix_lr(), 0.001);
    EXPECT_LE(a.trials[i].resolved.matrix_lr(), 0.1);
    EXPECT_GE(a.trials[i].resolved.mamba_d_state(), 4);
    EXPECT_LE(a.trials[i].resolved.mamba_d_state(), 64);
  }
  auto other_seed = parse_sweep_yaml(yaml, "r");
  other_seed.set_seed(12);
  const Expansion d = expand_sweep(other_seed, base_d4());
  EXPECT_NE(a.trials[0].config_hash, d.trials[0].config_hash);
}

TEST(SweepExpander, OverridesApplyToEveryTrial) {
  const auto spec = parse_sweep_yaml(R"(
name: o
base: b.yaml
overrides: {num_iterations: 17, device_batch_size: 2}
parameters:
  seed: {values: [0, 1]}
)", "o");
  const Expansion e = expand_sweep(spec, base_d4());
  ASSERT_EQ(e.trials.size(), 2u);
  for (const auto& t : e.trials) {
    EXPECT_EQ(t.resolved.num_iterations(), 17);
    EXPECT_EQ(t.resolved.device_batch_size(), 2);
  }
  EXPECT_EQ(e.trials[1].resolved.seed(), 1);
}

// Every sweep file we ship expands against its base config (the data folder's vocabulary is
// looked up by the client; here a stand-in size, the data may not be prepared).
TEST(SweepExpander, ShippedSweepsExpand) {
  namespace fs = std::filesystem;
  const char* src = std::getenv("HYLAB_SOURCE_DIR");
  const fs::path root = src ? src : ".";
  if (!fs::exists(root / "sweeps")) GTEST_SKIP() << "no sweeps/ folder";
  int n = 0;
  const auto cwd = fs::current_path();
  fs::current_path(root);
  for (const auto& e : fs::directory_iterator("sweeps")) {
    if (e.path().extension() != ".yaml") continue;
    try {
      const auto spec = load_sweep_file(e.path().string());
      const RunConfig base = load_config_file(find_base_config(spec, e.path().string()));
      const Expansion x = expand_sweep(spec, base, [](const std::string&) { return 320; });
      EXPECT_GE(x.trials.size(), 1u) << e.path();
      for (const auto& t : x.trials) EXPECT_EQ(t.resolved.vocab_size(), 320);
      ++n;
    } catch (const std::exception& ex) {
      ADD_FAILURE() << e.path() << ": " << ex.what();
    }
  }
  fs::current_path(cwd);
  EXPECT_GE(n, 8);  // the four studies + the published-hybrid presets
}

TEST(SweepExpander, VocabularyComesFromTheDataUnlessSet) {
  const auto spec = parse_sweep_yaml("name: v\nbase: b\nparameters: {data: {values: [d1, d2]}}\n", "v");
  std::vector<std::string> asked;
  const Expansion e = expand_sweep(spec, base_d4(), [&](const std::string& d) {
    asked.push_back(d);
    return d == "d1" ? 300 : 500;
  });
  ASSERT_EQ(e.trials.size(), 2u);
  EXPECT_EQ(e.trials[0].resolved.vocab_size(), 300);
  EXPECT_EQ(e.trials[1].resolved.vocab_size(), 500);
  RunConfig fixed = base_d4();
  fixed.set_vocab_size(1000);
  EXPECT_EQ(expand_sweep(spec, fixed, [](const std::string&) { return 1; }).trials[0].resolved.vocab_size(), 1000);
}

TEST(Submission, NamesAMissingDataFolder) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("hylab_submit_" + std::to_string(getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "base.yaml") << "depth: 2\ndata: " << (dir / "nodata").string() << "\n";
  std::ofstream(dir / "s.yaml") << "name: s\nbase: base.yaml\nparameters: {seed: {values: [0, 1]}}\n";
  const std::string msg = error_of([&] { prepare_submission((dir / "s.yaml").string()); });
  EXPECT_NE(msg.find("meta.json missing"), std::string::npos) << msg;
  fs::create_directories(dir / "nodata");
  std::ofstream(dir / "nodata" / "meta.json") << "{\"vocab_size\": 321}";
  const Submission s = prepare_submission((dir / "s.yaml").string());
  EXPECT_EQ(s.request.trials_size(), 2);
  EXPECT_EQ(config_from_json(s.request.trials(1).config_json()).vocab_size(), 321);
  EXPECT_EQ(s.request.name(), "s");
  fs::remove_all(dir);
}

}  // namespace
}  // namespace hylab::coordinator
