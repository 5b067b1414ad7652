// What the loop does "once in a while": validation bits per byte, text samples, and the
// inference probe at the end of a run.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "model/gpt.h"
#include "trainer/tokenizer.h"

namespace hylab::trainer {

// (B*T,) int64 host values -> (B, T) int64 on device.
torch::Tensor batch_tensor(const std::vector<int64_t>& values, int64_t B, int64_t T,
                           const torch::Device& device);

struct EvalResult {
  double bpb = 0;        // sum of losses / (ln 2 * sum of bytes), over targets with bytes > 0
  double loss = 0;       // mean per-token loss (nats) over the same targets
  int64_t tokens = 0;    // targets counted
  int64_t bytes = 0;
};

// Evaluates on the first min(eval_tokens, available) tokens of the data folder's val split,
// in (B, T) batches, without gradients. token_bytes: (V,) int64 on any device, the UTF-8
// bytes per token id (Tokenizer::token_bytes); tokens of 0 bytes (BOS) are left out of both
// sums, as nanochat's evaluate_bpb does.
EvalResult evaluate_bpb(GPTImpl& model, const std::string& data_dir, int64_t B, int64_t T,
                        int64_t eval_tokens, const torch::Tensor& token_bytes,
                        const torch::Device& device, bool autocast);

// Continues each prompt (BOS + its tokens) with max_tokens sampled tokens (temperature 0.8,
// top_k 50, the given seed) and returns "prompt|continuation" lines.
std::vector<std::string> sample_text(GPTImpl& model, const Tokenizer& tok,
                                     const std::vector<std::string>& prompts, int64_t max_tokens,
                                     uint64_t seed, bool autocast);

struct InferenceProbe {
  double decode_tok_per_s_b1 = 0;   // tokens per second decoding 1 sequence
  double decode_tok_per_s_b32 = 0;  // tokens per second decoding 32 sequences together
};

// Prefills 16 random tokens, then decodes `steps` tokens one at a time (greedy) through the
// inference engine (model/decoder.h: a bf16 copy and CUDA-graph replay on CUDA under
// autocast, eager elsewhere), at batch 1 and 32; times the decode part only.
InferenceProbe probe_inference(GPTImpl& model, int64_t steps, const torch::Device& device,
                               bool autocast);

}  // namespace hylab::trainer
