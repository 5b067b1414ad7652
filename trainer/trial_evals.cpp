#include "trainer/trial_evals.h"

#include <chrono>

#include "common/check.h"

#include "trainer/evaluate.h"
#include "trainer/loader.h"
#include "trainer/recall_probe.h"

namespace hylab::trainer {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

std::vector<std::pair<std::string, double>> TrialEvals::records() const {
  std::vector<std::pair<std::string, double>> out;
  if (recall_acc >= 0) out.push_back({"recall_acc", recall_acc});
  if (val_bpb_2x >= 0) out.push_back({"val_bpb_2x", val_bpb_2x});
  if (val_bpb_4x >= 0) out.push_back({"val_bpb_4x", val_bpb_4x});
  return out;
}

TrialEvals run_trial_evals(GPTImpl& model, const RunConfig& cfg, const Tokenizer& tok,
                           const torch::Tensor& token_bytes, int64_t eval_B,
                           const torch::Device& device, bool autocast,
                           const std::function<void(const std::string&)>& say) {
  TrialEvals out;
  if (cfg.recall_probes() > 0) {
    const auto t0 = std::chrono::steady_clock::now();
    RecallOptions opt;
    opt.probes = cfg.recall_probes();
    opt.pairs = cfg.recall_pairs();
    opt.key_len = cfg.recall_key_len();
    opt.value_len = cfg.recall_value_len();
    opt.bos_id = tok.bos_id();
    out.recall_acc = run_recall_probe(model, opt, recall_pool(tok), device, autocast);
    say(
        fmt::format("recall: acc {:.4f} | {} probes x {} pairs (key {} + value {} tokens), "
                    "context {} tokens | {:.1f} s",
                    out.recall_acc, opt.probes, opt.pairs, opt.key_len, opt.value_len,
                    1 + 2 * opt.pairs * (opt.key_len + opt.value_len), seconds_since(t0)));
  }
  if (cfg.length_evals()) {
    const int64_t T = cfg.max_seq_len();
    for (const int64_t k : {2, 4}) {
      const int64_t Tk = k * T;
      const int64_t fit = DataLoader::rows_that_fit(cfg.data(), "val", Tk);
      if (fit < 1) {
        say(fmt::format("length eval {}x skipped: the val split holds no row of {} tokens", k, Tk));
        continue;
      }
      const auto t0 = std::chrono::steady_clock::now();
      const int64_t rows = std::min(fit, std::max<int64_t>(1, eval_B / k));
      const EvalResult ev = evaluate_bpb(model, cfg.data(), rows, Tk, cfg.eval_tokens(),
                                         token_bytes, device, autocast);
      (k == 2 ? out.val_bpb_2x : out.val_bpb_4x) = ev.bpb;
      say(fmt::format("length eval {}x: val bpb {:.4f} at {} tokens per row | {} tokens | {:.1f} s",
                      k, ev.bpb, Tk, ev.tokens, seconds_since(t0)));
    }
  }
  return out;
}

}  // namespace hylab::trainer
