// The evals recorded per trial beside val_bpb (docs/RESULTS.md "Evals"): the associative
// recall probe (recall_acc, trainer/recall_probe.h) and length generalisation (val_bpb_2x,
// val_bpb_4x: val_bpb on the same val split in rows of 2x and 4x max_seq_len tokens). The
// train loop runs them at the final eval, and at every eval when evals_every_eval is set.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "common/run_config.h"
#include "model/gpt.h"
#include "trainer/tokenizer.h"

namespace hylab::trainer {

struct TrialEvals {
  double recall_acc = -1;  // -1 = not run (recall_probes 0)
  double val_bpb_2x = -1;  // -1 = not run (length_evals false, or the val split is too short)
  double val_bpb_4x = -1;
  // The metric records of the values that were run: {"recall_acc", v}, ...
  std::vector<std::pair<std::string, double>> records() const;
};

// Runs the evals `cfg` asks for on rank 0's model. eval_B: the rows per micro-batch of the
// 1x evaluation; the length evals keep its tokens per micro-batch (eval_B / k rows of k *
// max_seq_len, at least 1) and cover min(eval_tokens, the split) tokens. token_bytes as
// evaluate_bpb. `say` gets one log line per eval (and why one was skipped).
TrialEvals run_trial_evals(GPTImpl& model, const RunConfig& cfg, const Tokenizer& tok,
                           const torch::Tensor& token_bytes, int64_t eval_B,
                           const torch::Device& device, bool autocast,
                           const std::function<void(const std::string&)>& say);

}  // namespace hylab::trainer
