#include "trainer/optim.h"

#include <cmath>
#include <map>

#include "common/check.h"
#include "trainer/schedule.h"

namespace hylab::trainer {
namespace {

std::string key(const std::string& prefix, size_t i, const char* what) {
  return fmt::format("{}.{}.{}", prefix, i, what);
}

// Copies a saved tensor into a fresh buffer shaped like `like`, checking the shape.
torch::Tensor restore(const std::map<std::string, torch::Tensor>& in, const std::string& k,
                      const torch::Tensor& like) {
  const auto it = in.find(k);
  if (it == in.end()) HYLAB_FAIL("optimizer state is missing \"{}\"; the checkpoint does not match this model", k);
  if (it->second.sizes() != like.sizes()) {
    HYLAB_FAIL("optimizer state \"{}\" has shape {} but the parameter has {}; the checkpoint does "
               "not match this model", k, c10::str(it->second.sizes()), c10::str(like.sizes()));
  }
  return it->second.to(like.device(), like.scalar_type()).clone();
}

}  // namespace

torch::Tensor zeropower_via_newtonschulz5(const torch::Tensor& G, int steps, bool bf16) {
  TORCH_CHECK(G.dim() == 2 || G.dim() == 3,
              "zeropower_via_newtonschulz5: expected a matrix or a stack of them, got ", G.sizes());
  const double a = 3.4445, b = -4.7750, c = 2.0315;  // quintic coefficients (Keller Jordan)
  torch::Tensor X = bf16 ? G.to(torch::kBFloat16) : G.clone();
  const bool tall = G.size(-2) > G.size(-1);
  if (tall) X = X.transpose(-2, -1);  // (small, large): X X^T is the small Gram matrix
  // Spectral norm <= Frobenius norm <= 1, per matrix.
  X = X / (X.norm(2, {-2, -1}, /*keepdim=*/true) + 1e-7);
  for (int i = 0; i < steps; ++i) {
    torch::Tensor A = torch::matmul(X, X.transpose(-2, -1));  // (small, small)
    torch::Tensor B = b * A + c * torch::matmul(A, A);         // (small, small)
    X = a * X + torch::matmul(B, X);                           // (small, large)
  }
  if (tall) X = X.transpose(-2, -1);
  return X;
}

// ---------------------------------------------------------------- Muon

Muon::Muon(std::vector<torch::Tensor> params, double lr, bool bf16, int ns_steps)
    : params_(std::move(params)), buffers_(params_.size()), lr_(lr), bf16_(bf16), ns_steps_(ns_steps) {
  std::map<std::vector<int64_t>, size_t> group_of_shape;
  for (size_t i = 0; i < params_.size(); ++i) {
    const torch::Tensor& p = params_[i];
    HYLAB_CHECK(p.dim() == 2, "Muon takes 2-D matrices only, got a parameter of shape {}", c10::str(p.sizes()));
    const std::vector<int64_t> shape = p.sizes().vec();
    auto [it, added] = group_of_shape.emplace(shape, shape_groups_.size());
    if (added) shape_groups_.emplace_back();
    shape_groups_[it->second].push_back(i);
  }
}

void Muon::step() {
  torch::NoGradGuard no_grad;
  // Matrices of one shape are orthogonalised together (one batched Newton-Schulz instead of
  // one per matrix: a d12 has 48-60 matrices in 2-4 shapes), as nanochat's Muon does.
  for (const std::vector<size_t>& group : shape_groups_) {
    std::vector<size_t> idx;
    std::vector<torch::Tensor> grads;
    for (size_t i : group) {
      torch::Tensor& p = params_[i];
      if (!p.grad().defined()) continue;
      const torch::Tensor& g = p.grad();
      if (!buffers_[i].defined()) buffers_[i] = torch::zeros_like(g);
      buffers_[i].lerp_(g, 1.0 - momentum_);
      grads.push_back(g.lerp(buffers_[i], momentum_));  // nesterov
      idx.push_back(i);
    }
    if (idx.empty()) continue;
    const torch::Tensor updates = zeropower_via_newtonschulz5(torch::stack(grads), ns_steps_, bf16_);
    const torch::Tensor& p0 = params_[idx.front()];
    const double scale = std::sqrt(std::max(1.0, static_cast<double>(p0.size(0)) / p0.size(1)));
    for (size_t k = 0; k < idx.size(); ++k) {
      torch::Tensor& p = params_[idx[k]];
      p.add_(updates[static_cast<int64_t>(k)].to(p.scalar_type()), -lr_ * scale);
    }
  }
}

void Muon::save(const std::string& prefix, std::map<std::string, torch::Tensor>* out) const {
  for (size_t i = 0; i < params_.size(); ++i) {
    if (buffers_[i].defined()) (*out)[key(prefix, i, "momentum_buffer")] = buffers_[i];
  }
}

void Muon::load(const std::string& prefix, const std::map<std::string, torch::Tensor>& in) {
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::string k = key(prefix, i, "momentum_buffer");
    buffers_[i] = in.count(k) ? restore(in, k, params_[i]) : torch::Tensor();
  }
}

// ---------------------------------------------------------------- AdamW

AdamW::AdamW(std::vector<Group> groups, double beta1, double beta2, double eps)
    : groups_(std::move(groups)), beta1_(beta1), beta2_(beta2), eps_(eps) {
  for (const auto& g : groups_) {
    exp_avg_.emplace_back(g.params.size());
    exp_avg_sq_.emplace_back(g.params.size());
  }
}

void AdamW::set_lr_multiplier(double m) {
  for (auto& g : groups_) g.lr = g.initial_lr * m;
}

void AdamW::step() {
  torch::NoGradGuard no_grad;
  ++step_;
  const double bias1 = 1.0 - std::pow(beta1_, static_cast<double>(step_));
  const double bias2 = 1.0 - std::pow(beta2_, static_cast<double>(step_));
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    Group& group = groups_[gi];
    for (size_t i = 0; i < group.params.size(); ++i) {
      torch::Tensor& p = group.params[i];
      if (!p.grad().defined()) continue;
      const torch::Tensor g = p.grad();
      torch::Tensor& m = exp_avg_[gi][i];
      torch::Tensor& v = exp_avg_sq_[gi][i];
      if (!m.defined()) {
        m = torch::zeros_like(p);
        v = torch::zeros_like(p);
      }
      if (group.weight_decay != 0) p.mul_(1.0 - group.lr * group.weight_decay);
      m.lerp_(g, 1.0 - beta1_);
      v.mul_(beta2_).addcmul_(g, g, 1.0 - beta2_);
      const torch::Tensor denom = (v.sqrt() / std::sqrt(bias2)).add_(eps_);
      p.addcdiv_(m, denom, -group.lr / bias1);
    }
  }
}

void AdamW::save(const std::string& prefix, std::map<std::string, torch::Tensor>* out) const {
  (*out)[prefix + ".step"] = torch::tensor(step_, torch::kLong);
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const std::string gp = prefix + "." + groups_[gi].name;
    for (size_t i = 0; i < groups_[gi].params.size(); ++i) {
      if (!exp_avg_[gi][i].defined()) continue;
      (*out)[key(gp, i, "exp_avg")] = exp_avg_[gi][i];
      (*out)[key(gp, i, "exp_avg_sq")] = exp_avg_sq_[gi][i];
    }
  }
}

void AdamW::load(const std::string& prefix, const std::map<std::string, torch::Tensor>& in) {
  const auto it = in.find(prefix + ".step");
  if (it == in.end()) HYLAB_FAIL("optimizer state is missing \"{}.step\"", prefix);
  step_ = it->second.item<int64_t>();
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const std::string gp = prefix + "." + groups_[gi].name;
    for (size_t i = 0; i < groups_[gi].params.size(); ++i) {
      const std::string k = key(gp, i, "exp_avg");
      if (!in.count(k)) {
        exp_avg_[gi][i] = exp_avg_sq_[gi][i] = torch::Tensor();
        continue;
      }
      exp_avg_[gi][i] = restore(in, k, groups_[gi].params[i]);
      exp_avg_sq_[gi][i] = restore(in, key(gp, i, "exp_avg_sq"), groups_[gi].params[i]);
    }
  }
}

// ---------------------------------------------------------------- clipping

double clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> norms;
  for (const auto& p : params) {
    if (p.grad().defined()) norms.push_back(p.grad().norm(2).to(torch::kFloat));
  }
  if (norms.empty()) return 0.0;
  const double total = torch::stack(norms).norm(2).item<double>();
  if (max_norm > 0) {
    const double coef = max_norm / (total + 1e-6);
    if (coef < 1.0) {
      for (const auto& p : params) {
        if (p.grad().defined()) p.grad().mul_(coef);
      }
    }
  }
  return total;
}

// ---------------------------------------------------------------- Optimizers

namespace {

std::vector<torch::Tensor> concat(const GPTImpl::ParamGroups& g) {
  std::vector<torch::Tensor> all;
  for (const auto* v : {&g.matrix, &g.embedding, &g.lm_head, &g.scalar}) {
    all.insert(all.end(), v->begin(), v->end());
  }
  return all;
}

std::vector<AdamW::Group> adamw_groups(const GPTImpl::ParamGroups& g, const RunConfig& c) {
  const double scale = adamw_lr_scale(c.n_embd());
  std::vector<AdamW::Group> groups;
  auto add = [&](const char* name, const std::vector<torch::Tensor>& params, double lr, double wd) {
    if (params.empty()) return;
    groups.push_back({name, params, lr * scale, lr * scale, wd});
  };
  add("lm_head", g.lm_head, c.unembedding_lr(), c.weight_decay());
  add("embedding", g.embedding, c.embedding_lr(), c.weight_decay());
  add("scalar", g.scalar, c.scalar_lr(), 0.0);
  return groups;
}

}  // namespace

Optimizers::Optimizers(GPTImpl& model, const RunConfig& c, bool cuda)
    : all_(concat(model.param_groups())),
      muon_(model.param_groups().matrix, c.matrix_lr(), /*bf16_newton_schulz=*/cuda),
      adamw_(adamw_groups(model.param_groups(), c), c.adam_beta1(), c.adam_beta2()),
      matrix_lr_(c.matrix_lr()) {}

void Optimizers::set_schedule(double lr_multiplier, double momentum) {
  muon_.set_lr(matrix_lr_ * lr_multiplier);
  muon_.set_momentum(momentum);
  adamw_.set_lr_multiplier(lr_multiplier);
}

void Optimizers::step() {
  muon_.step();
  adamw_.step();
}

void Optimizers::zero_grad() {
  for (auto& p : all_) {
    if (p.grad().defined()) p.mutable_grad() = torch::Tensor();  // set_to_none, as PyTorch 2
  }
}

std::string Optimizers::describe() const {
  auto numel = [](const std::vector<torch::Tensor>& v) {
    int64_t n = 0;
    for (const auto& t : v) n += t.numel();
    return n;
  };
  std::string s = fmt::format("Muon  matrix: {} tensors, {} params, lr {:.4g}", muon_.params().size(),
                              numel(muon_.params()), matrix_lr_);
  for (const auto& g : adamw_.groups()) {
    s += fmt::format("\nAdamW {}: {} tensors, {} params, lr {:.4g}, weight_decay {:.3g}", g.name,
                     g.params.size(), numel(g.params), g.initial_lr, g.weight_decay);
  }
  return s;
}

std::map<std::string, torch::Tensor> Optimizers::state() const {
  std::map<std::string, torch::Tensor> out;
  muon_.save("optim.muon", &out);
  adamw_.save("optim.adamw", &out);
  return out;
}

void Optimizers::load_state(const std::map<std::string, torch::Tensor>& in) {
  muon_.load("optim.muon", in);
  adamw_.load("optim.adamw", in);
}

}  // namespace hylab::trainer
