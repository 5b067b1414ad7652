// The optimisers of nanochat's base_train: Muon for the 2-D matrices inside blocks, AdamW
// for the embedding, lm_head and the "scalar" parameters (Mamba's A_log, D, dt_proj.bias,
// conv1d), plus global-norm gradient clipping.
//
// Muon (nanochat/muon.py): buf = lerp(buf, g, 1 - momentum); nesterov g = lerp(g, buf,
// momentum); orthogonalise g with 5 Newton-Schulz steps (bf16 on CUDA, fp32 on CPU where
// LibTorch 1.13's bf16 matmul is slow); p -= lr * sqrt(max(1, rows/cols)) * g.
// AdamW (torch.optim.AdamW): decoupled weight decay, bias-corrected moments, eps 1e-10.
// Learning rates: matrix_lr for Muon; {embedding,unembedding,scalar}_lr * (n_embd/768)^-0.5
// for the AdamW groups; each multiplied by the schedule's multiplier every step.
// Weight decay applies to the embedding and lm_head only (Mamba's A_log/D/biases are
// no-decay parameters, as in mamba_simple.py).
//
// Sharded Muon (world > 1, nanochat's distributed Muon): the gradients are already averaged
// over ranks, so every rank updates every momentum buffer (element-wise, cheap, and the state
// stays replicated: checkpoints and resuming on another world size are unchanged); the
// Newton-Schulz iterations, the expensive part, are split. Per shape group of n matrices,
// rank r orthogonalises matrices [r*c, min(n, (r+1)*c)) with c = ceil(n / world) in one
// batched iteration, then an all_gather of the (c, rows, cols) results (bf16 on CUDA,
// zero-padded past n) gives every rank all n updates, which each applies.
// The result equals the unsharded step up to the batching of the matmuls (near-exact in fp32:
// tests/trainer/dist_optim_test.cpp).
//
// Routing of Mamba matrices (config mamba_muon_params): the listed kinds among in_proj,
// x_proj, dt_proj (its weight), out_proj go to Muon, the others to an AdamW group
// "mamba_matrix" with the scalar group's learning rate (scalar_lr * (n_embd/768)^-0.5) and no
// weight decay, as Mamba's other parameters.
//
// State (momentum buffers, moments, step count) round-trips through named tensors for
// checkpoints, bit-exactly.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/run_config.h"
#include "model/gpt.h"
#include "trainer/dist.h"

namespace hylab::trainer {

// G (rows, cols) -> approximately U V^T of its SVD, in bf16 if `bf16` else in G's dtype.
// A stack G (n, rows, cols) is orthogonalised matrix by matrix in one batched iteration.
torch::Tensor zeropower_via_newtonschulz5(const torch::Tensor& G, int steps, bool bf16);

class Muon {
 public:
  // dist: with world > 1 the Newton-Schulz work is sharded over its ranks (see above); every
  // rank must then call step() with the same gradients. nullptr = one process.
  Muon(std::vector<torch::Tensor> params, double lr, bool bf16_newton_schulz, int ns_steps = 5,
       Dist* dist = nullptr);
  void step();  // uses p.grad(); parameters without a gradient are skipped
  void set_lr(double lr) { lr_ = lr; }
  void set_momentum(double m) { momentum_ = m; }
  double lr() const { return lr_; }
  const std::vector<torch::Tensor>& params() const { return params_; }
  int sharded_over() const { return dist_ ? dist_->world() : 1; }  // ranks sharing Newton-Schulz
  void save(const std::string& prefix, std::map<std::string, torch::Tensor>* out) const;
  void load(const std::string& prefix, const std::map<std::string, torch::Tensor>& in);

 private:
  std::vector<torch::Tensor> params_, buffers_;  // buffers_[i] undefined until first step
  std::vector<std::vector<size_t>> shape_groups_;  // indices of params_ by shape
  double lr_, momentum_ = 0.95;
  bool bf16_;
  int ns_steps_;
  Dist* dist_;
};

class AdamW {
 public:
  struct Group {
    std::string name;
    std::vector<torch::Tensor> params;
    double lr = 0;            // current (initial_lr * schedule)
    double initial_lr = 0;
    double weight_decay = 0;
  };
  AdamW(std::vector<Group> groups, double beta1, double beta2, double eps = 1e-10);
  void step();
  void set_lr_multiplier(double m);
  const std::vector<Group>& groups() const { return groups_; }
  void save(const std::string& prefix, std::map<std::string, torch::Tensor>* out) const;
  void load(const std::string& prefix, const std::map<std::string, torch::Tensor>& in);

 private:
  std::vector<Group> groups_;
  std::vector<std::vector<torch::Tensor>> exp_avg_, exp_avg_sq_;  // per group, per param
  double beta1_, beta2_, eps_;
  int64_t step_ = 0;
};

// Scales all gradients so that their global L2 norm is at most max_norm (as
// torch.nn.utils.clip_grad_norm_); returns the norm before clipping.
double clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm);

// Which optimiser takes each parameter: GPTImpl::param_groups() with the Mamba matrices that
// mamba_muon_params leaves out moved from `groups.matrix` to `mamba_adamw`. Names are the
// model's named_parameters() names, in its order.
struct RoutedParams {
  GPTImpl::ParamGroups groups;  // groups.matrix: what Muon takes
  std::vector<torch::Tensor> mamba_adamw;
  std::vector<std::string> muon_names, mamba_adamw_names;
};
RoutedParams route_params(GPTImpl& model, const RunConfig& resolved);

// Everything the loop needs: both optimisers over the model's parameter groups.
class Optimizers {
 public:
  // cuda: Newton-Schulz in bf16. dist (optional, outlives this): shards Muon over its ranks
  // unless the config's muon_sharded is false.
  Optimizers(GPTImpl& model, const RunConfig& resolved, bool cuda, Dist* dist = nullptr);
  // Sets every group's lr to its initial lr * lr_multiplier, and Muon's momentum.
  void set_schedule(double lr_multiplier, double muon_momentum);
  void step();
  void zero_grad();
  const std::vector<torch::Tensor>& all_params() const { return all_; }
  const Muon& muon() const { return muon_; }
  const AdamW& adamw() const { return adamw_; }
  // One line per group: name, tensors, elements, initial lr (for the log).
  std::string describe() const;
  std::map<std::string, torch::Tensor> state() const;
  void load_state(const std::map<std::string, torch::Tensor>& in);  // throws hylab::Error

 private:
  Optimizers(RoutedParams routed, const RunConfig& resolved, bool cuda, Dist* dist);
  std::vector<torch::Tensor> all_;
  Muon muon_;
  AdamW adamw_;
  double matrix_lr_;
};

}  // namespace hylab::trainer
