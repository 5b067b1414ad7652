// Adaptive search without sockets: pattern spaces and their constraints, the TPE sampler
// (determinism, constraints, pending trials), proposals of a sweep, hyperband's rule, and
// the spec's search vocabulary.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <map>
#include <set>

#include "common/check.h"
#include "coordinator/early_stop.h"
#include "coordinator/hyperband.h"
#include "sweep/pattern_space.h"
#include "sweep/search.h"
#include "sweep/search_bench.h"
#include "sweep/sweep_expander.h"
#include "sweep/sweep_spec.h"
#include "sweep/tpe.h"

namespace hylab::coordinator {
namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

PatternConstraints constraints(int n, double lo, double hi, const std::string& first = "",
                               const std::string& last = "") {
  proto::SearchPatternSpace s;
  s.set_min_attention_fraction(lo);
  s.set_max_attention_fraction(hi);
  s.set_first(first);
  s.set_last(last);
  return make_pattern_constraints(s, n, "test");
}

int attention(const Layers& l) {
  int t = 0;
  for (auto x : l) t += x;
  return t;
}

TEST(PatternSpace, RandomPatternsAreValidAndUniform) {
  const auto c = constraints(6, 0.3, 0.5, "M", "T");  // 2..3 attention layers
  EXPECT_EQ(c.min_attention, 2);
  EXPECT_EQ(c.max_attention, 3);
  std::mt19937_64 rng(1);
  std::map<std::string, int> seen;
  for (int i = 0; i < 20000; ++i) {
    const Layers l = random_pattern(c, rng);
    ASSERT_TRUE(satisfies(c, l)) << pattern_text(l);
    ++seen[pattern_text(l)];
  }
  // Valid: first M, last T, 1..2 more T among 4 free layers: C(4,1) + C(4,2) = 10 patterns.
  EXPECT_EQ(seen.size(), 10u);
  for (const auto& [p, n] : seen) EXPECT_NEAR(n, 2000, 250) << p;
}

TEST(PatternSpace, RepairAndFeatures) {
  const auto c = constraints(8, 0.25, 0.5, "", "M");
  std::mt19937_64 rng(3);
  const Layers all_t(8, 1);
  const Layers fixed = repair_pattern(c, all_t, rng);
  EXPECT_TRUE(satisfies(c, fixed)) << pattern_text(fixed);
  const Layers ok = layers_of_text("T,M*3,T,M*3");
  EXPECT_EQ(repair_pattern(c, ok, rng), ok);
  const PatternFeatures f = pattern_features(layers_of_text("T,M,M,T"));
  EXPECT_DOUBLE_EQ(f.attention_fraction, 0.5);
  EXPECT_DOUBLE_EQ(f.mean_attention_depth, (0.125 + 0.875) / 2);
  EXPECT_DOUBLE_EQ(f.switches, 2.0 / 3);
  EXPECT_NE(error_of([] { constraints(4, 0.6, 0.7, "M", "M"); }), "");  // 3 of 4 needed, 2 free
  EXPECT_NE(error_of([] { constraints(4, 0.5, 0.2); }).find("min <= max"), std::string::npos);
}

SearchSpace mixed_space() {
  proto::SweepSpec spec;
  auto* p = spec.add_parameters();
  p->set_name("block_pattern");
  p->set_distribution("pattern");
  p->mutable_pattern()->set_min_attention_fraction(0.25);
  p->mutable_pattern()->set_max_attention_fraction(0.5);
  p->mutable_pattern()->set_first("M");
  auto* d = spec.add_parameters();
  d->set_name("mamba_d_state");
  for (const char* v : {"16", "32", "64"}) d->add_values(v);
  auto* lr = spec.add_parameters();
  lr->set_name("matrix_lr");
  lr->set_min(1e-4);
  lr->set_max(1e-1);
  lr->set_distribution("log_uniform");
  auto* e = spec.add_parameters();
  e->set_name("mamba_expand");
  e->set_min(1);
  e->set_max(4);
  e->set_distribution("int_uniform");
  return build_search_space(spec, 8);
}

// A smooth objective over mixed_space: attention late, d_state 32, lr 3e-3, expand 2.
double toy(const SearchPoint& p) {
  double v = 0;
  for (size_t i = 0; i < p[0].layers.size(); ++i) v += p[0].layers[i] ? -0.1 * i : 0;
  v += p[1].x == 1 ? 0 : 0.2;
  v += std::pow(std::log10(p[2].x) + 2.5, 2);
  v += 0.1 * std::pow(p[3].x - 2, 2);
  return v;
}

std::vector<SearchObservation> observe(const SearchSpace& s, int n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<SearchObservation> out;
  for (int i = 0; i < n; ++i) {
    const SearchPoint p = random_point(s, rng);
    out.push_back({p, toy(p)});
  }
  return out;
}

TEST(Tpe, DeterministicGivenStateAndSeed) {
  const SearchSpace s = mixed_space();
  const auto obs = observe(s, 30, 7);
  TpeOptions o;
  const SearchPoint a = tpe_propose(s, obs, {}, 42, o);
  const SearchPoint b = tpe_propose(s, obs, {}, 42, o);
  EXPECT_EQ(point_key(s, a), point_key(s, b));
  std::set<std::string> keys;
  for (uint64_t seed = 0; seed < 10; ++seed)
    keys.insert(point_key(s, tpe_propose(s, obs, {}, seed, o)));
  EXPECT_GT(keys.size(), 5u);  // the seed matters
  EXPECT_EQ(proposal_seed(3, 5), proposal_seed(3, 5));
  EXPECT_NE(proposal_seed(3, 5), proposal_seed(3, 6));
}

TEST(Tpe, ProposalsSatisfyConstraintsAndRanges) {
  const SearchSpace s = mixed_space();
  const auto obs = observe(s, 40, 9);
  for (uint64_t seed = 0; seed < 200; ++seed) {
    const SearchPoint p = tpe_propose(s, obs, {}, seed, TpeOptions{});
    ASSERT_TRUE(satisfies(s.dims[0].pattern, p[0].layers)) << pattern_text(p[0].layers);
    ASSERT_GE(p[1].x, 0);
    ASSERT_LE(p[1].x, 2);
    ASSERT_GE(p[2].x, 1e-4);
    ASSERT_LE(p[2].x, 1e-1);
    ASSERT_EQ(p[3].x, std::round(p[3].x));
    ASSERT_GE(p[3].x, 1);
    ASSERT_LE(p[3].x, 4);
    // The params round-trip through their text.
    const auto back = point_of_params(s, point_params(s, p));
    ASSERT_TRUE(back.has_value());
    ASSERT_EQ(point_key(s, *back), point_key(s, p));
  }
}

TEST(Tpe, LearnsFromFinishedTrials) {
  // After 40 random trials, model proposals beat fresh random draws on average.
  const SearchSpace s = mixed_space();
  const auto obs = observe(s, 40, 11);
  double tpe = 0, rnd = 0;
  std::mt19937_64 rng(5);
  for (uint64_t seed = 0; seed < 50; ++seed) {
    tpe += toy(tpe_propose(s, obs, {}, seed, TpeOptions{}));
    rnd += toy(random_point(s, rng));
  }
  EXPECT_LT(tpe / 50, rnd / 50 - 0.2) << "tpe mean " << tpe / 50 << ", random mean " << rnd / 50;
}

TEST(Tpe, StartupTrialsAreRandomDraws) {
  const SearchSpace s = mixed_space();
  const auto obs = observe(s, 3, 13);
  TpeOptions o;
  o.startup_trials = 5;
  std::mt19937_64 rng(77);
  EXPECT_EQ(point_key(s, tpe_propose(s, obs, {}, 77, o)), point_key(s, random_point(s, rng)));
  // Pending trials count towards the start-up too: 3 finished + 2 pending = 5, the model runs.
  const std::vector<SearchPoint> pending = {obs[0].point, obs[1].point};
  std::mt19937_64 rng2(77);
  EXPECT_NE(point_key(s, tpe_propose(s, obs, pending, 77, o)), point_key(s, random_point(s, rng2)));
}

TEST(Tpe, PendingTrialsPushProposalsAway) {
  // One float in [0, 1], best at 0.2. With many pending trials around 0.2 (constant liar:
  // they count as the worst value), proposals move away from them.
  proto::SweepSpec spec;
  auto* p = spec.add_parameters();
  p->set_name("matrix_lr");
  p->set_min(0);
  p->set_max(1);
  const SearchSpace s = build_search_space(spec, 1);
  std::vector<SearchObservation> obs;
  for (int i = 0; i < 20; ++i) {
    SearchPoint x = {DimValue{i / 19.0, {}}};
    obs.push_back({x, std::pow(i / 19.0 - 0.2, 2)});
  }
  std::vector<SearchPoint> pending;
  for (int i = 0; i < 8; ++i) pending.push_back({DimValue{0.17 + 0.01 * i, {}}});
  double free_dist = 0, pending_dist = 0;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    free_dist += std::abs(tpe_propose(s, obs, {}, seed, TpeOptions{})[0].x - 0.2);
    pending_dist += std::abs(tpe_propose(s, obs, pending, seed, TpeOptions{})[0].x - 0.2);
  }
  EXPECT_GT(pending_dist, 1.5 * free_dist) << free_dist / 40 << " vs " << pending_dist / 40;
}

TEST(Tpe, ProposeNewNeverRepeatsATakenPoint) {
  proto::SweepSpec spec;
  auto* p = spec.add_parameters();
  p->set_name("mamba_d_state");
  for (const char* v : {"16", "32", "64"}) p->add_values(v);
  const SearchSpace s = build_search_space(spec, 1);
  std::set<std::string> taken;
  std::vector<SearchObservation> obs;
  for (int i = 0; i < 3; ++i) {
    const auto q = propose_new(s, obs, {}, taken, 1, i, true, TpeOptions{});
    ASSERT_TRUE(q.has_value());
    ASSERT_TRUE(taken.insert(point_key(s, *q)).second);
    obs.push_back({*q, static_cast<double>(i)});
  }
  EXPECT_FALSE(propose_new(s, obs, {}, taken, 1, 3, true, TpeOptions{}).has_value());  // used up
}

RunConfig base_d4() {
  RunConfig c;
  c.set_depth(4);
  c.set_max_seq_len(64);
  c.set_vocab_size(320);
  return c;
}

proto::SweepSpec tpe_spec() {
  return parse_sweep_yaml(R"(
name: tpe-d4
base: base.yaml
method: tpe
count: 12
seed: 5
tpe: {startup_trials: 4}
parameters:
  block_pattern: {distribution: pattern, attention_fraction: [0.25, 0.5], last: M}
  mamba_d_state: {distribution: categorical, values: [8, 16]}
  matrix_lr: {distribution: log_uniform_values, min: 0.001, max: 0.1}
)",
                          "test.yaml");
}

TEST(Search, SpecVocabulary) {
  const auto spec = tpe_spec();
  EXPECT_EQ(spec.method(), "tpe");
  EXPECT_EQ(spec.tpe().startup_trials(), 4);
  EXPECT_EQ(spec.parameters(0).distribution(), "pattern");
  EXPECT_EQ(spec.parameters(0).pattern().last(), "M");
  EXPECT_EQ(spec.parameters(2).distribution(), "log_uniform");
  EXPECT_NE(error_of([] {
              parse_sweep_yaml("name: x\nbase: b\nmethod: bayes\ncount: 3\n", "s");
            }).find("method: tpe"),
            std::string::npos);
  EXPECT_NE(
      error_of([] { parse_sweep_yaml("name: x\nbase: b\nmethod: tpe\n", "s"); }).find("count"),
      std::string::npos);
  EXPECT_NE(error_of([] {
              parse_sweep_yaml(
                  "name: x\nbase: b\nparameters:\n  block_pattern: {distribution: pattern}\n", "s");
            }).find("method: random or tpe"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              parse_sweep_yaml(
                  "name: x\nbase: b\nmethod: tpe\ncount: 2\nparameters:\n  block_pattern: "
                  "{distribution: pattern, attention_fraction: [0.5, 0.2]}\n",
                  "s");
            }).find("attention_fraction"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              parse_sweep_yaml("name: x\nbase: b\nearly_stop: {type: hyperband, min_tokens: 10}\n",
                               "s");
            }).find("max_tokens"),
            std::string::npos);
}

TEST(Search, AStoredSpecFromAClientIsBoundedAgain) {
  // search_json reaches the coordinator as JSON, not through parse_sweep_yaml: a client
  // could set tpe.candidates to 2^31 and make every proposal block the event loop.
  nlohmann::json j = nlohmann::json::parse(search_state_to_json(make_search_state(tpe_spec(), base_d4())));
  j["spec"]["tpe"]["candidates"] = 2000000000;
  EXPECT_NE(error_of([&] { search_state_from_json(j.dump()); })
                .find("search_json.spec.tpe.candidates = 2000000000: expected 1..10000"),
            std::string::npos);
  j["spec"]["tpe"]["candidates"] = 24;
  j["spec"]["count"] = 2000000000;
  EXPECT_NE(error_of([&] { search_state_from_json(j.dump()); }).find("search_json.spec.count = 2000000000"),
            std::string::npos);
}

TEST(Search, ProposalsAreValidUniqueAndContinueFromStoredTrials) {
  const SearchState state = make_search_state(tpe_spec(), base_d4());
  const SearchState back = search_state_from_json(search_state_to_json(state));
  EXPECT_EQ(back.spec.count(), 12);
  // Propose all 12 in three rounds of 4, the earlier ones finished in between.
  std::vector<KnownTrial> known;
  std::set<std::string> hashes;
  for (int round = 0; round < 3; ++round) {
    const Proposals p = propose_trials(back, known, round * 4, 4);
    ASSERT_EQ(p.trials.size(), 4u);
    for (const auto& t : p.trials) {
      EXPECT_EQ(t.trial_index, static_cast<int64_t>(known.size()));
      ASSERT_TRUE(hashes.insert(t.config_hash).second) << "proposed twice";
      Layers layers;
      for (BlockType b : block_pattern_of(t.resolved))
        layers.push_back(b == BlockType::kTransformer);
      EXPECT_EQ(layers.size(), 4u);
      EXPECT_EQ(layers.back(), 0) << "last layer must be M";
      EXPECT_TRUE(attention(layers) >= 1 && attention(layers) <= 2);
      KnownTrial k;
      k.params = t.params;
      k.config_hash = t.config_hash;
      k.value = static_cast<double>(attention(layers)) + t.resolved.matrix_lr();
      known.push_back(k);
    }
  }
  // The same stored state proposes the same next trial (a restarted coordinator agrees).
  const Proposals a = propose_trials(back, known, 12, 1), b = propose_trials(state, known, 12, 1);
  ASSERT_EQ(a.trials.size(), 1u);
  EXPECT_EQ(a.trials[0].config_hash, b.trials[0].config_hash);
  EXPECT_FALSE(hashes.count(a.trials[0].config_hash));
}

TEST(Hyperband, BracketsAndEqualTokenRungs) {
  proto::EarlyStop rule;
  rule.set_type("hyperband");
  rule.set_eta(2);
  rule.set_min_tokens(1000);
  rule.set_max_tokens(4000);
  EXPECT_EQ(hyperband_brackets(rule), 3);  // rungs from 1000, 2000 and 4000 tokens
  // Metric at equal tokens: a trial with twice the batch is at 1000 tokens at step 5.
  MetricSeries big{1, true, {{4, 3.0}, {6, 2.0}}, 0, 200};
  EXPECT_DOUBLE_EQ(*value_at_tokens(big, 1000), 2.5);
  EXPECT_FALSE(value_at_tokens(big, 1300).has_value());
  // Bracket 0 (trial_index 0, 3, 6): three trials at the 1000-token rung, keep the top 1.
  MetricSeries a{10, false, {{10, 1.0}}, 0, 100};
  MetricSeries b{11, false, {{10, 2.0}}, 3, 100};
  MetricSeries c{12, true, {{5, 3.0}}, 6, 200};       // 1000 tokens after 5 steps of 200
  MetricSeries other{13, true, {{10, 9.0}}, 1, 100};  // bracket 1: its first rung is 2000
  const std::vector<MetricSeries> all = {a, b, c, other};
  const auto stops = early_stop(rule, true, all);
  ASSERT_EQ(stops.size(), 1u);
  EXPECT_EQ(stops[0].trial_id, 12);
  EXPECT_NE(stops[0].reason.find("hyperband"), std::string::npos);
}

TEST(SearchBench, OptimumIsExactAndReachable) {
  for (const char* name : {"pattern12", "mixed"}) {
    const BenchObjective o = make_objective(name, 3);
    // Brute force over the 4096 patterns (mixed: with the best other values).
    double best = 1e300;
    for (int bits = 0; bits < 4096; ++bits) {
      SearchPoint p(o.space.dims.size());
      for (int i = 0; i < 12; ++i) p[0].layers.push_back((bits >> i) & 1);
      if (o.name == "mixed") {
        size_t k = 0;
        for (size_t j = 1; j < o.d_state_offset.size(); ++j)
          k = o.d_state_offset[j] < o.d_state_offset[k] ? j : k;
        p[1].x = static_cast<double>(k);
        p[2].x = o.best_expand;
        p[3].x = std::pow(10, o.log10_lr_best);
      }
      best = std::min(best, o.value(p));
    }
    EXPECT_NEAR(best, o.optimum, 1e-9) << name;
  }
}

}  // namespace
}  // namespace hylab::coordinator
