#include "trainer/optim.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <map>
#include <set>

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

Muon::Muon(std::vector<torch::Tensor> params, double lr, bool bf16, int ns_steps, Dist* dist)
    : params_(std::move(params)),
      buffers_(params_.size()),
      lr_(lr),
      bf16_(bf16),
      ns_steps_(ns_steps),
      dist_(dist != nullptr && dist->world() > 1 ? dist : nullptr) {
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
    torch::Tensor updates;  // (n, rows, cols)
    if (dist_ == nullptr) {
      updates = zeropower_via_newtonschulz5(torch::stack(grads), ns_steps_, bf16_);
    } else {
      // This rank's share [begin, end) of the n matrices; the all_gather output, rank after
      // rank, is the n updates in order followed by the zero padding of the last shares.
      const int64_t n = static_cast<int64_t>(idx.size()), world = dist_->world();
      const int64_t chunk = (n + world - 1) / world;
      const int64_t begin = std::min(n, dist_->rank() * chunk), end = std::min(n, begin + chunk);
      const torch::Tensor& g0 = grads.front();
      const auto dtype = bf16_ ? torch::kBFloat16 : g0.scalar_type();
      torch::Tensor mine = torch::zeros({chunk, g0.size(0), g0.size(1)}, g0.options().dtype(dtype));
      if (end > begin) {
        const std::vector<torch::Tensor> share(grads.begin() + begin, grads.begin() + end);
        mine.slice(0, 0, end - begin).copy_(zeropower_via_newtonschulz5(torch::stack(share), ns_steps_, bf16_));
      }
      torch::Tensor all = torch::empty({world * chunk, g0.size(0), g0.size(1)}, mine.options());
      dist_->all_gather(mine, all);
      updates = all.slice(0, 0, n);
    }
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

// Muon's matrices first, then AdamW's, each group in model order.
std::vector<torch::Tensor> concat(const RoutedParams& r) {
  const GPTImpl::ParamGroups& g = r.groups;
  std::vector<torch::Tensor> all;
  for (const auto* v : {&g.matrix, &g.embedding, &g.lm_head, &g.scalar, &r.mamba_adamw}) {
    all.insert(all.end(), v->begin(), v->end());
  }
  return all;
}

std::vector<AdamW::Group> adamw_groups(const RoutedParams& r, const RunConfig& c) {
  const GPTImpl::ParamGroups& g = r.groups;
  const double scale = adamw_lr_scale(c.n_embd());
  std::vector<AdamW::Group> groups;
  auto add = [&](const char* name, const std::vector<torch::Tensor>& params, double lr, double wd) {
    if (params.empty()) return;
    groups.push_back({name, params, lr * scale, lr * scale, wd});
  };
  add("lm_head", g.lm_head, c.unembedding_lr(), c.weight_decay());
  add("embedding", g.embedding, c.embedding_lr(), c.weight_decay());
  add("scalar", g.scalar, c.scalar_lr(), 0.0);
  add("mamba_matrix", r.mamba_adamw, c.scalar_lr(), 0.0);  // not in mamba_muon_params
  return groups;
}

constexpr const char* kMambaMatrices[] = {"in_proj", "x_proj", "dt_proj", "out_proj"};

// "h.3.mamba.x_proj.weight" -> "x_proj"; "" for any other parameter.
std::string mamba_matrix_kind(const std::string& name) {
  for (const char* kind : kMambaMatrices) {
    const std::string suffix = fmt::format(".{}.weight", kind);
    if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      return kind;
    }
  }
  return "";
}

}  // namespace

RoutedParams route_params(GPTImpl& model, const RunConfig& c) {
  const std::vector<std::string> to_muon = mamba_muon_param_list(c.mamba_muon_params());
  RoutedParams r;
  r.groups = model.param_groups();
  std::set<const void*> matrices;
  for (const auto& p : r.groups.matrix) matrices.insert(p.unsafeGetTensorImpl());
  r.groups.matrix.clear();
  for (auto& item : model.named_parameters(/*recurse=*/true)) {
    if (!matrices.count(item.value().unsafeGetTensorImpl())) continue;
    const std::string kind = mamba_matrix_kind(item.key());
    if (kind.empty() || std::find(to_muon.begin(), to_muon.end(), kind) != to_muon.end()) {
      r.groups.matrix.push_back(item.value());
      r.muon_names.push_back(item.key());
    } else {
      r.mamba_adamw.push_back(item.value());
      r.mamba_adamw_names.push_back(item.key());
    }
  }
  return r;
}

Optimizers::Optimizers(GPTImpl& model, const RunConfig& c, bool cuda, Dist* dist)
    : Optimizers(route_params(model, c), c, cuda, dist) {}

Optimizers::Optimizers(RoutedParams r, const RunConfig& c, bool cuda, Dist* dist)
    : all_(concat(r)),
      muon_(r.groups.matrix, c.matrix_lr(), /*bf16_newton_schulz=*/cuda, /*ns_steps=*/5,
            c.muon_sharded() ? dist : nullptr),
      adamw_(adamw_groups(r, c), c.adam_beta1(), c.adam_beta2()),
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
  std::string s = fmt::format("Muon  matrix: {} tensors, {} params, lr {:.4g}{}", muon_.params().size(),
                              numel(muon_.params()), matrix_lr_,
                              muon_.sharded_over() > 1
                                  ? fmt::format(", Newton-Schulz sharded over {} ranks", muon_.sharded_over())
                                  : "");
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
