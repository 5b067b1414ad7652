// Sampling on token ids through the inference engine (model/decoder.h): prefill the prompt,
// then decode one token per sequence per step (a CUDA graph replay where the engine can).
// Used by `hylab generate` (also N samples of one prompt as one batch) and the trainer's
// samples. Tokenizers stay outside (ids in, ids out).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "model/decoder.h"
#include "model/gpt.h"

namespace hylab {

struct SampleOptions {
  int64_t max_tokens = 64;   // new tokens at most
  double temperature = 1.0;  // 0 = greedy (argmax)
  int64_t top_k = 0;         // keep the k most likely tokens; 0 = all
  uint64_t seed = 0;         // the sampler's own generator: same seed, same tokens
  int64_t stop_token = -1;   // stop after emitting this id (e.g. BOS/EOS); -1 = none
  bool autocast = false;     // run the model under CUDA bf16 autocast (compat::AutocastGuard)
  bool cuda_graphs = false;  // generate(GPTImpl&...): decode through a graph-capturing Decoder
                             // (a bf16 copy of the model; worth it for long or many samples)
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

// num_samples continuations of one prompt, decoded together as one batch by `decoder`
// (opts.autocast and opts.cuda_graphs are the decoder's own settings here). Row r draws
// with a generator seeded opts.seed + r, so sample 0 equals generate() with the same options.
// on_token(sample, id) is called for each new id; returning false ends that sample, as
// emitting stop_token does. Returns each sample's new ids.
std::vector<std::vector<int64_t>> generate_samples(
    Decoder& decoder, const std::vector<int64_t>& prompt, const SampleOptions& opts,
    int64_t num_samples, const std::function<bool(int64_t, int64_t)>& on_token = nullptr);

}  // namespace hylab
