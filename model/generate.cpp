// Prefill + decode sampling loop (see generate.h).
#include "model/generate.h"

#include <ATen/CPUGeneratorImpl.h>

#include "common/check.h"
#include "model/compat.h"

namespace hylab {

int64_t sample_token(const torch::Tensor& logits_in, double temperature, int64_t top_k,
                     at::Generator& gen) {
  HYLAB_CHECK(logits_in.dim() == 1, "sample_token: logits must be (V), got {}",
              c10::str(logits_in.sizes()));
  HYLAB_CHECK(temperature >= 0 && top_k >= 0,
              "sample_token: temperature {} and top_k {} must be >= 0", temperature, top_k);
  auto logits = logits_in.detach().to(torch::kCPU, torch::kFloat);
  if (temperature == 0) return logits.argmax().item<int64_t>();
  logits = logits / temperature;
  if (top_k > 0 && top_k < logits.size(0)) {
    auto kth = std::get<0>(logits.topk(top_k)).min();  // the k-th largest value
    logits = logits.masked_fill(logits < kth, -std::numeric_limits<float>::infinity());
  }
  auto probs = torch::softmax(logits, 0);
  return torch::multinomial(probs, 1, /*replacement=*/false, gen).item<int64_t>();
}

std::vector<int64_t> generate(GPTImpl& model, const std::vector<int64_t>& prompt,
                              const SampleOptions& opts,
                              const std::function<bool(int64_t)>& on_token) {
  const GPTConfig& cfg = model.config();
  HYLAB_CHECK(!prompt.empty(), "generate: the prompt is empty (give at least one token, e.g. BOS)");
  for (int64_t id : prompt) {
    HYLAB_CHECK(id >= 0 && id < cfg.vocab_size, "generate: prompt token {} is outside [0, {})", id,
                cfg.vocab_size);
  }
  HYLAB_CHECK(opts.max_tokens >= 0, "generate: max_tokens {} must be >= 0", opts.max_tokens);
  const int64_t max_len = static_cast<int64_t>(prompt.size()) + opts.max_tokens;
  HYLAB_CHECK(max_len <= model.max_positions(),
              "generate: prompt ({} tokens) + max_tokens ({}) exceeds the model's {} positions "
              "(10 * sequence_len)",
              prompt.size(), opts.max_tokens, model.max_positions());
  std::vector<int64_t> out;
  if (opts.max_tokens == 0) return out;

  torch::NoGradGuard no_grad;
  compat::AutocastGuard autocast(opts.autocast);
  const torch::Device device = model.lm_head->weight.device();
  at::Generator gen = at::detail::createCPUGenerator(opts.seed);
  InferenceCache cache = model.make_cache(1, max_len);

  auto idx = torch::tensor(prompt, torch::kLong).unsqueeze(0).to(device);  // (1, T_prompt)
  auto logits = model.forward_step(idx, cache);                              // (1, T, V)
  for (int64_t i = 0; i < opts.max_tokens; ++i) {
    const int64_t next = sample_token(logits[0][-1], opts.temperature, opts.top_k, gen);
    out.push_back(next);
    if (on_token && !on_token(next)) break;
    if (next == opts.stop_token || i + 1 == opts.max_tokens) break;
    logits = model.forward_step(torch::full({1, 1}, next, torch::dtype(torch::kLong).device(device)),
                                cache);  // (1, 1, V)
  }
  return out;
}

}  // namespace hylab
