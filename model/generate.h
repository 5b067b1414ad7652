// Sampling on token ids: prefill the prompt through GPTImpl::forward_step, then decode one
// token at a time with the inference cache. Used by `hylab generate` and the trainer's
// samples. Tokenizers stay outside (ids in, ids out).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "model/gpt.h"

namespace hylab {

struct SampleOptions {
  int64_t max_tokens = 64;   // new tokens at most
  double temperature = 1.0;  // 0 = greedy (argmax)
  int64_t top_k = 0;         // keep the k most likely tokens; 0 = all
  uint64_t seed = 0;         // the sampler's own generator: same seed, same tokens
  int64_t stop_token = -1;   // stop after emitting this id (e.g. BOS/EOS); -1 = none
  bool autocast = false;     // run the model under CUDA bf16 autocast (compat::AutocastGuard)
};

// Picks the next token from logits (V) fp32: argmax when temperature == 0, else a draw
// from softmax(logits / temperature) restricted to the top_k largest. Draws on the CPU with
// `gen`, so results do not depend on the model's device.
int64_t sample_token(const torch::Tensor& logits, double temperature, int64_t top_k,
                     at::Generator& gen);

// Continues `prompt` (non-empty ids < vocab_size) and returns only the new ids, calling
// on_token (if given) for each as it is produced; on_token returning false stops early.
// The sequence must fit in the rotary tables: prompt + max_tokens <= 10 * sequence_len.
std::vector<int64_t> generate(GPTImpl& model, const std::vector<int64_t>& prompt,
                              const SampleOptions& opts,
                              const std::function<bool(int64_t)>& on_token = nullptr);

}  // namespace hylab
