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

namespace {

void check_prompt(const GPTImpl& model, const std::vector<int64_t>& prompt,
                  const SampleOptions& opts) {
  const GPTConfig& cfg = model.config();
  HYLAB_CHECK(!prompt.empty(), "generate: the prompt is empty (give at least one token, e.g. BOS)");
  for (int64_t id : prompt) {
    HYLAB_CHECK(id >= 0 && id < cfg.vocab_size, "generate: prompt token {} is outside [0, {})", id,
                cfg.vocab_size);
  }
  HYLAB_CHECK(opts.max_tokens >= 0, "generate: max_tokens {} must be >= 0", opts.max_tokens);
  HYLAB_CHECK(static_cast<int64_t>(prompt.size()) + opts.max_tokens <= model.max_positions(),
              "generate: prompt ({} tokens) + max_tokens ({}) exceeds the model's {} positions "
              "(10 * sequence_len)",
              prompt.size(), opts.max_tokens, model.max_positions());
}

}  // namespace

std::vector<std::vector<int64_t>> generate_samples(
    Decoder& decoder, const std::vector<int64_t>& prompt, const SampleOptions& opts,
    int64_t num_samples, const std::function<bool(int64_t, int64_t)>& on_token) {
  check_prompt(decoder.engine_model(), prompt, opts);
  HYLAB_CHECK(num_samples >= 1, "generate: num_samples {} must be >= 1", num_samples);
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(num_samples));
  if (opts.max_tokens == 0) return out;
  torch::NoGradGuard no_grad;
  const int64_t N = num_samples;
  std::vector<at::Generator> gens;
  for (int64_t r = 0; r < N; ++r) gens.push_back(at::detail::createCPUGenerator(opts.seed + r));
  std::vector<bool> done(static_cast<size_t>(N), false);
  int64_t live = N;

  decoder.reset(N, static_cast<int64_t>(prompt.size()) + opts.max_tokens);
  auto idx = torch::tensor(prompt, torch::kLong).unsqueeze(0).expand({N, -1}).contiguous();  // (N, T)
  torch::Tensor logits = decoder.prefill(idx);  // (N, V)
  std::vector<int64_t> next(static_cast<size_t>(N), 0);
  for (int64_t i = 0; i < opts.max_tokens && live > 0; ++i) {
    if (opts.temperature == 0) {  // greedy: argmax on the device, one copy of N ids
      auto ids = logits.argmax(-1).to(torch::kCPU);
      for (int64_t r = 0; r < N; ++r) next[r] = ids[r].item<int64_t>();
    } else {
      auto cpu = logits.to(torch::kCPU, torch::kFloat);
      for (int64_t r = 0; r < N; ++r) {
        if (!done[r]) next[r] = sample_token(cpu[r], opts.temperature, opts.top_k, gens[r]);
      }
    }
    for (int64_t r = 0; r < N; ++r) {
      if (done[r]) continue;
      out[r].push_back(next[r]);
      const bool keep = on_token ? on_token(r, next[r]) : true;
      if (!keep || next[r] == opts.stop_token) {
        done[r] = true;
        --live;
      }
    }
    if (live == 0 || i + 1 == opts.max_tokens) break;
    logits = decoder.step(torch::tensor(next, torch::kLong));  // (N, V)
  }
  return out;
}

std::vector<int64_t> generate(GPTImpl& model, const std::vector<int64_t>& prompt,
                              const SampleOptions& opts,
                              const std::function<bool(int64_t)>& on_token) {
  check_prompt(model, prompt, opts);
  if (opts.max_tokens == 0) return {};
  Decoder decoder(model, DecoderOptions{opts.autocast, opts.cuda_graphs});
  std::function<bool(int64_t, int64_t)> each;
  if (on_token) each = [&](int64_t, int64_t id) { return on_token(id); };
  return generate_samples(decoder, prompt, opts, 1, each)[0];
}

}  // namespace hylab
