// The associative-recall probe (MQAR / phonebook style) recorded per trial as recall_acc.
//
// A trained language model is shown key-value pairs of random tokens, then asked for the
// values of the same keys again; it scores a query when it predicts every value token
// exactly. No task training: the probe measures in-context recall (the induction/copy ability
// that attention has and a fixed-size SSM state must compress), as the phonebook task of
// NVIDIA's Mamba-2-Hybrid study and Zoology's MQAR do.
//
// Construction (one fixed seed, so every trial of every sweep sees the same probes for a
// given vocabulary and settings; docs/RESULTS.md "Evals"):
//   - pool: the tokenizer's normal pieces (no control, byte or unknown ids); ids [3, V)
//     without a tokenizer.
//   - per sequence, N = pairs keys of key_len tokens (distinct keys) and N values of
//     value_len tokens, each token uniform from the pool;
//   - the sequence: BOS, k1 v1 k2 v2 ... kN vN (the context), then the N pairs again in a
//     random order (the queries, each followed by its true value: teacher forcing).
//     Length L = 1 + 2 * N * (key_len + value_len).
//   - a query is correct when argmax of the logits at each of its value positions (predicting
//     that position) is the true token; with teacher forcing this equals greedy decoding's
//     exact match. recall_acc = correct queries / (probes * N). Chance is ~pool^-value_len.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "model/gpt.h"
#include "trainer/tokenizer.h"

namespace hylab::trainer {

struct RecallOptions {
  int64_t probes = 64;    // sequences
  int64_t pairs = 16;     // key-value pairs per sequence (N)
  int64_t key_len = 2;    // tokens per key
  int64_t value_len = 2;  // tokens per value
  uint64_t seed = 20260;  // fixed: the same probes for every trial
  int64_t bos_id = 1;
};

struct RecallBatch {
  torch::Tensor tokens;  // (P, L) int64
  torch::Tensor target;  // (P, L) bool: position t is a query's value token (predicted from t-1)
  torch::Tensor query;   // (P, L) int64: query number (0..N-1) of a value position, -1 elsewhere
  int64_t pairs = 0;     // N (queries per row)
  int64_t queries = 0;   // P * N
};

// The probe sequences, on the CPU. pool: the token ids keys and values are drawn from (at
// least 2). Throws hylab::Error when the pool cannot hold N distinct keys.
RecallBatch make_recall_batch(const RecallOptions& opt, const std::vector<int64_t>& pool);

// Correct queries given the model's logits for batch rows [row0, row0 + B): logits (B, L, V),
// any device/dtype.
int64_t recall_correct(const torch::Tensor& logits, const RecallBatch& batch, int64_t row0);

// The normal (text) pieces of a tokenizer's vocabulary, by piece type (trainer/tokenizer.h).
std::vector<int64_t> recall_pool(const Tokenizer& tok);

// Runs the probe through the model without gradients, `rows` sequences at a time.
// Returns recall_acc in [0, 1].
double run_recall_probe(GPTImpl& model, const RecallOptions& opt, const std::vector<int64_t>& pool,
                        const torch::Device& device, bool autocast, int64_t rows = 16);

}  // namespace hylab::trainer
