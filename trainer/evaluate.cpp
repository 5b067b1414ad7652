#include "trainer/evaluate.h"

#include <chrono>

#include "common/check.h"
#include "model/compat.h"
#include "model/generate.h"
#include "trainer/device.h"
#include "trainer/loader.h"
#include "trainer/schedule.h"

namespace hylab::trainer {

torch::Tensor batch_tensor(const std::vector<int64_t>& values, int64_t B, int64_t T,
                           const torch::Device& device) {
  HYLAB_CHECK(static_cast<int64_t>(values.size()) == B * T, "batch of {} values, expected {}x{}",
              values.size(), B, T);
  // from_blob does not own the memory: clone before the vector can go away.
  torch::Tensor t = torch::from_blob(const_cast<int64_t*>(values.data()), {B, T}, torch::kLong);
  return device.is_cpu() ? t.clone() : t.to(device);
}

EvalResult evaluate_bpb(GPTImpl& model, const std::string& data_dir, int64_t B, int64_t T,
                        int64_t eval_tokens, const torch::Tensor& token_bytes,
                        const torch::Device& device, bool autocast) {
  torch::NoGradGuard no_grad;
  compat::AutocastGuard guard(autocast);
  DataLoader val(data_dir, "val", B, T);
  const int64_t steps = std::max<int64_t>(1, std::min(eval_tokens / (B * T), val.chunks_per_epoch()));
  const torch::Tensor bytes_table = token_bytes.to(device, torch::kLong);
  torch::Tensor sum_loss = torch::zeros({}, torch::dtype(torch::kDouble).device(device));
  torch::Tensor sum_bytes = torch::zeros({}, torch::dtype(torch::kLong).device(device));
  torch::Tensor count = torch::zeros({}, torch::dtype(torch::kLong).device(device));
  std::vector<int64_t> x, y;
  for (int64_t s = 0; s < steps; ++s) {
    val.next(&x, &y);
    const torch::Tensor idx = batch_tensor(x, B, T, device);
    const torch::Tensor targets = batch_tensor(y, B, T, device);
    const torch::Tensor losses = model.loss(idx, targets, /*per_token=*/true).to(torch::kDouble);  // (B, T)
    const torch::Tensor bytes = bytes_table.index({targets});                                      // (B, T)
    const torch::Tensor counted = bytes > 0;
    sum_loss += (losses * counted).sum();
    sum_bytes += bytes.sum();
    count += counted.sum();
  }
  EvalResult r;
  r.bytes = sum_bytes.item<int64_t>();
  r.tokens = count.item<int64_t>();
  const double total = sum_loss.item<double>();
  r.bpb = bits_per_byte(total, r.bytes);
  r.loss = r.tokens > 0 ? total / static_cast<double>(r.tokens) : 0.0;
  return r;
}

std::vector<std::string> sample_text(GPTImpl& model, const Tokenizer& tok,
                                     const std::vector<std::string>& prompts, int64_t max_tokens,
                                     uint64_t seed, bool autocast) {
  std::vector<std::string> out;
  for (size_t i = 0; i < prompts.size(); ++i) {
    std::vector<int64_t> ids = {tok.bos_id()};
    for (int id : tok.encode(prompts[i])) ids.push_back(id);
    SampleOptions opt;
    opt.max_tokens = max_tokens;
    opt.temperature = 0.8;
    opt.top_k = 50;
    opt.seed = seed + i;
    opt.stop_token = tok.bos_id();
    opt.autocast = autocast;
    const std::vector<int64_t> next = generate(model, ids, opt);
    std::vector<int> as_int;
    for (int64_t id : next) {
      if (id < tok.vocab_size()) as_int.push_back(static_cast<int>(id));
    }
    out.push_back(prompts[i] + "|" + tok.decode(as_int));
  }
  return out;
}

namespace {

double decode_rate(Decoder& decoder, int64_t B, int64_t steps, const torch::Device& device) {
  constexpr int64_t kPrompt = 16;
  const int64_t V = decoder.engine_model().config().vocab_size;
  auto gen = at::detail::createCPUGenerator(1234);
  decoder.reset(B, kPrompt + steps);
  torch::Tensor prompt = torch::randint(V, {B, kPrompt}, gen, torch::kLong);  // (B, 16)
  torch::Tensor next = decoder.prefill(prompt).argmax(-1);                      // (B)
  synchronize(device);
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t s = 0; s < steps; ++s) next = decoder.step(next).argmax(-1);  // greedy
  synchronize(device);
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return static_cast<double>(B * steps) / std::max(dt, 1e-9);
}

}  // namespace

InferenceProbe probe_inference(GPTImpl& model, int64_t steps, const torch::Device& device,
                               bool autocast) {
  InferenceProbe p;
  if (steps <= 0) return p;
  torch::NoGradGuard no_grad;
  compat::AutocastGuard guard(autocast);
  steps = std::min<int64_t>(steps, model.max_positions() - 16);
  // The inference engine as `hylab generate` uses it: CUDA graphs where it can capture them.
  Decoder decoder(model, DecoderOptions{autocast, /*cuda_graphs=*/true});
  p.decode_tok_per_s_b1 = decode_rate(decoder, 1, steps, device);
  p.decode_tok_per_s_b32 = decode_rate(decoder, 32, steps, device);
  return p;
}

}  // namespace hylab::trainer
