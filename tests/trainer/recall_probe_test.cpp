// The associative-recall probe (trainer/recall_probe.h): how the probe sequences are built
// (fixed seed, pairs then the same pairs queried in another order, distinct keys, tokens from
// the pool) and how a query is scored (exact match of every value token, keys not scored).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <set>
#include <vector>

#include "common/check.h"
#include "common/run_config.h"
#include "model/gpt.h"
#include "trainer/recall_probe.h"

namespace hylab::trainer {
namespace {

std::vector<int64_t> pool_of(int64_t lo, int64_t hi) {
  std::vector<int64_t> p;
  for (int64_t i = lo; i < hi; ++i) p.push_back(i);
  return p;
}

RecallOptions small_options() {
  RecallOptions o;
  o.probes = 5;
  o.pairs = 6;
  o.key_len = 2;
  o.value_len = 3;
  o.bos_id = 1;
  return o;
}

// Logits (P, L, V) whose argmax at t - 1 is the true token at t: a perfect recaller.
torch::Tensor perfect_logits(const RecallBatch& b, int64_t V) {
  const int64_t P = b.tokens.size(0), L = b.tokens.size(1);
  torch::Tensor next = torch::zeros({P, L}, torch::kLong);
  next.narrow(1, 0, L - 1).copy_(b.tokens.narrow(1, 1, L - 1));
  return torch::one_hot(next, V).to(torch::kFloat);
}

TEST(RecallProbe, SequencesAreContextThenTheSamePairsQueriedInAnotherOrder) {
  const RecallOptions o = small_options();
  const std::vector<int64_t> pool = pool_of(10, 60);
  const RecallBatch b = make_recall_batch(o, pool);
  const int64_t per_pair = o.key_len + o.value_len, N = o.pairs;
  ASSERT_EQ(b.tokens.size(0), o.probes);
  ASSERT_EQ(b.tokens.size(1), 1 + 2 * N * per_pair);
  EXPECT_EQ(b.queries, o.probes * N);
  EXPECT_EQ(b.target.sum().item<int64_t>(), o.probes * N * o.value_len);
  bool any_reordered = false;
  for (int64_t p = 0; p < o.probes; ++p) {
    const auto row = b.tokens[p];
    EXPECT_EQ(row[0].item<int64_t>(), 1);  // BOS
    std::map<std::vector<int64_t>, std::vector<int64_t>> context;
    std::vector<std::vector<int64_t>> context_keys, query_keys;
    for (int64_t i = 0; i < 2 * N; ++i) {
      const int64_t at = 1 + i * per_pair;
      std::vector<int64_t> key, value;
      for (int64_t j = 0; j < o.key_len; ++j) key.push_back(row[at + j].item<int64_t>());
      for (int64_t j = 0; j < o.value_len; ++j) {
        value.push_back(row[at + o.key_len + j].item<int64_t>());
        EXPECT_EQ(b.target[p][at + o.key_len + j].item<bool>(), i >= N)
            << "only query values are scored";
      }
      for (int64_t t : key) EXPECT_TRUE(t >= 10 && t < 60);
      for (int64_t t : value) EXPECT_TRUE(t >= 10 && t < 60);
      if (i < N) {
        EXPECT_TRUE(context.emplace(key, value).second) << "keys are distinct within a sequence";
        context_keys.push_back(key);
      } else {
        ASSERT_TRUE(context.count(key)) << "a query asks for a key of the context";
        EXPECT_EQ(context[key], value) << "followed by its value";
        query_keys.push_back(key);
      }
    }
    EXPECT_EQ(std::set<std::vector<int64_t>>(query_keys.begin(), query_keys.end()).size(),
              static_cast<size_t>(N));
    any_reordered = any_reordered || query_keys != context_keys;
  }
  EXPECT_TRUE(any_reordered) << "the queries come in another order than the pairs";
  // The fixed seed: every trial sees the same probes; another seed gives others.
  EXPECT_TRUE(torch::equal(make_recall_batch(o, pool).tokens, b.tokens));
  RecallOptions other = o;
  other.seed = o.seed + 1;
  EXPECT_FALSE(torch::equal(make_recall_batch(other, pool).tokens, b.tokens));
}

TEST(RecallProbe, AQueryCountsOnlyWhenEveryValueTokenIsPredicted) {
  const RecallOptions o = small_options();
  const RecallBatch b = make_recall_batch(o, pool_of(10, 60));
  const int64_t V = 64;
  torch::Tensor logits = perfect_logits(b, V);
  EXPECT_EQ(recall_correct(logits, b, 0), b.queries);
  // Rows scored in slices add up (the probe runs a few rows at a time).
  EXPECT_EQ(
      recall_correct(logits.narrow(0, 0, 2), b, 0) + recall_correct(logits.narrow(0, 2, 3), b, 2),
      b.queries);
  // A wrong key prediction (not scored) changes nothing; one wrong value token of one query
  // costs exactly that query; two wrong tokens of the same query still cost one.
  const int64_t L = b.tokens.size(1), first_query = 1 + o.pairs * (o.key_len + o.value_len);
  auto wrong_at = [&](torch::Tensor& lg, int64_t p, int64_t t) {  // the prediction of position t
    lg[p][t - 1].zero_();
    lg[p][t - 1][0] = 1;  // id 0 is not in the pool
  };
  torch::Tensor key_wrong = logits.clone();
  wrong_at(key_wrong, 3, first_query + 1);  // the second token of the first query's key
  EXPECT_EQ(recall_correct(key_wrong, b, 0), b.queries);
  torch::Tensor value_wrong = logits.clone();
  wrong_at(value_wrong, 3, first_query + o.key_len + 2);  // the first query's last value token
  EXPECT_EQ(recall_correct(value_wrong, b, 0), b.queries - 1);
  wrong_at(value_wrong, 3, first_query + o.key_len);
  EXPECT_EQ(recall_correct(value_wrong, b, 0), b.queries - 1);
  wrong_at(value_wrong, 0, L - 1);  // the last query of row 0
  EXPECT_EQ(recall_correct(value_wrong, b, 0), b.queries - 2);
}

TEST(RecallProbe, RefusesSettingsThatCannotHoldDistinctKeys) {
  RecallOptions o = small_options();
  o.key_len = 1;
  o.pairs = 40;
  EXPECT_THROW(make_recall_batch(o, pool_of(10, 30)), Error);  // 20 keys for 40 pairs
  o.pairs = 0;
  EXPECT_THROW(make_recall_batch(o, pool_of(10, 30)), Error);
}

// Through a real (untrained) model: a fraction in [0, 1] over probes * pairs queries, the
// same on a second run, and rows processed a few at a time give the same answer.
TEST(RecallProbe, RunsThroughAModel) {
  RunConfig c;
  c.set_n_embd(32);
  c.set_n_head(2);
  c.set_n_kv_head(2);
  c.set_vocab_size(100);
  c.set_max_seq_len(16);
  c.set_mamba_d_state(8);
  c.set_device("cpu");
  apply_override(&c, "block_pattern", "T,M");
  torch::manual_seed(0);
  GPT model(gpt_config(resolve_config(c)));
  const RecallOptions o = small_options();  // 61 tokens per sequence
  const double a = run_recall_probe(*model, o, pool_of(3, 100), torch::kCPU, false, 2);
  const double b = run_recall_probe(*model, o, pool_of(3, 100), torch::kCPU, false, 16);
  EXPECT_GE(a, 0.0);
  EXPECT_LE(a, 1.0);
  EXPECT_DOUBLE_EQ(a, b);
}

}  // namespace
}  // namespace hylab::trainer
