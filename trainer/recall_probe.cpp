#include "trainer/recall_probe.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>

#include "common/check.h"
#include "model/compat.h"

namespace hylab::trainer {

RecallBatch make_recall_batch(const RecallOptions& opt, const std::vector<int64_t>& pool) {
  HYLAB_CHECK(opt.probes >= 1 && opt.pairs >= 1 && opt.key_len >= 1 && opt.value_len >= 1,
              "recall probe: probes {}, pairs {}, key_len {}, value_len {}: expected >= 1 each",
              opt.probes, opt.pairs, opt.key_len, opt.value_len);
  HYLAB_CHECK(pool.size() >= 2, "recall probe: the token pool holds {} ids, expected >= 2",
              pool.size());
  // Distinct keys: pool^key_len must exceed the pairs comfortably (rejection sampling).
  const double key_space =
      std::pow(static_cast<double>(pool.size()), static_cast<double>(opt.key_len));
  HYLAB_CHECK(
      key_space >= 2.0 * static_cast<double>(opt.pairs),
      "recall probe: {} pairs need distinct keys, but {} pool ids ^ key_len {} give only {}",
      opt.pairs, pool.size(), opt.key_len, key_space);
  const int64_t P = opt.probes, N = opt.pairs, per_pair = opt.key_len + opt.value_len;
  const int64_t L = 1 + 2 * N * per_pair;
  std::vector<int64_t> tokens(static_cast<size_t>(P * L));
  std::vector<uint8_t> target(static_cast<size_t>(P * L), 0);
  std::vector<int64_t> query(static_cast<size_t>(P * L), -1);
  std::mt19937_64 rng(opt.seed);
  std::uniform_int_distribution<size_t> pick(0, pool.size() - 1);
  for (int64_t p = 0; p < P; ++p) {
    std::vector<std::vector<int64_t>> keys, values;
    std::set<std::vector<int64_t>> seen;
    while (static_cast<int64_t>(keys.size()) < N) {
      std::vector<int64_t> k(static_cast<size_t>(opt.key_len));
      for (auto& t : k) t = pool[pick(rng)];
      if (!seen.insert(k).second) continue;
      std::vector<int64_t> v(static_cast<size_t>(opt.value_len));
      for (auto& t : v) t = pool[pick(rng)];
      keys.push_back(std::move(k));
      values.push_back(std::move(v));
    }
    std::vector<int64_t> order(static_cast<size_t>(N));
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    int64_t* row = tokens.data() + p * L;
    int64_t at = 0;
    row[at++] = opt.bos_id;
    for (int64_t i = 0; i < N; ++i) {  // the context
      for (int64_t t : keys[i]) row[at++] = t;
      for (int64_t t : values[i]) row[at++] = t;
    }
    for (int64_t q = 0; q < N; ++q) {  // the queries, teacher-forced
      const int64_t i = order[static_cast<size_t>(q)];
      for (int64_t t : keys[i]) row[at++] = t;
      for (int64_t t : values[i]) {
        target[static_cast<size_t>(p * L + at)] = 1;
        query[static_cast<size_t>(p * L + at)] = q;
        row[at++] = t;
      }
    }
    HYLAB_CHECK(at == L, "recall probe: built {} tokens, expected {}", at, L);
  }
  RecallBatch b;
  b.tokens = torch::from_blob(tokens.data(), {P, L}, torch::kLong).clone();
  b.target = torch::from_blob(target.data(), {P, L}, torch::kUInt8).clone().to(torch::kBool);
  b.query = torch::from_blob(query.data(), {P, L}, torch::kLong).clone();
  b.pairs = N;
  b.queries = P * N;
  return b;
}

int64_t recall_correct(const torch::Tensor& logits, const RecallBatch& batch, int64_t row0) {
  const int64_t B = logits.size(0), L = logits.size(1);
  HYLAB_CHECK(L == batch.tokens.size(1) && row0 >= 0 && row0 + B <= batch.tokens.size(0),
              "recall probe: logits {} do not match rows {}.. of the probe batch {}",
              c10::str(logits.sizes()), row0, c10::str(batch.tokens.sizes()));
  // The logits at t - 1 predict the token at t.
  const torch::Tensor pred = logits.narrow(1, 0, L - 1).argmax(-1).to(torch::kCPU);  // (B, L-1)
  const torch::Tensor tokens = batch.tokens.narrow(0, row0, B).narrow(1, 1, L - 1);  // (B, L-1)
  const torch::Tensor target = batch.target.narrow(0, row0, B).narrow(1, 1, L - 1);  // (B, L-1)
  const torch::Tensor query = batch.query.narrow(0, row0, B).narrow(1, 1, L - 1);    // (B, L-1)
  const torch::Tensor wrong = (pred != tokens) & target;                             // (B, L-1)
  const int64_t N = batch.pairs;
  // A query is correct when none of its value positions is wrong.
  const torch::Tensor wrong_per_query =
      torch::zeros({B, N}, torch::kLong)
          .scatter_add_(1, query.clamp_min(0), wrong.to(torch::kLong));
  return (wrong_per_query == 0).sum().item<int64_t>();
}

std::vector<int64_t> recall_pool(const Tokenizer& tok) {
  std::vector<int64_t> pool;
  for (int id = 0; id < tok.vocab_size(); ++id) {
    if (tok.piece(id).type == Tokenizer::PieceType::kNormal) pool.push_back(id);
  }
  return pool;
}

double run_recall_probe(GPTImpl& model, const RecallOptions& opt, const std::vector<int64_t>& pool,
                        const torch::Device& device, bool autocast, int64_t rows) {
  torch::NoGradGuard no_grad;
  compat::AutocastGuard guard(autocast);
  const RecallBatch batch = make_recall_batch(opt, pool);
  const int64_t P = batch.tokens.size(0);
  int64_t correct = 0;
  for (int64_t r = 0; r < P; r += rows) {
    const int64_t n = std::min(rows, P - r);
    const torch::Tensor logits =
        model.forward(batch.tokens.narrow(0, r, n).to(device));  // (n, L, V)
    correct += recall_correct(logits, batch, r);
  }
  return static_cast<double>(correct) / static_cast<double>(batch.queries);
}

}  // namespace hylab::trainer
