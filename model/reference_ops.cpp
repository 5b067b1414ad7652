// Plain-LibTorch Mamba primitives: the oracle (see reference_ops.h). Written for clarity,
// mirroring mamba's selective_scan_ref / causal_conv1d_ref / selective_state_update_ref:
// a sequential loop over T with an fp32 state, no parallel-scan tricks.
#include "model/reference_ops.h"

#include <cmath>
#include <limits>

#include "common/check.h"
#include "model/compat.h"

namespace hylab::ref {
namespace {

// fp64 inputs stay fp64 (gradient checks); everything else is computed in fp32.
at::ScalarType compute_dtype(const torch::Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

torch::Tensor softplus_ref(const torch::Tensor& x) {
  return torch::nn::functional::softplus(
      x, torch::nn::functional::SoftplusFuncOptions().beta(1).threshold(20));
}

void check_scan_shapes(const torch::Tensor& u, const torch::Tensor& delta, const torch::Tensor& A,
                       const torch::Tensor& Bm, const torch::Tensor& Cm, const torch::Tensor& D,
                       const torch::Tensor& z, const torch::Tensor& delta_bias) {
  HYLAB_CHECK(u.dim() == 3, "selective_scan: u must be (B, E, T), got {} dims", u.dim());
  const int64_t B = u.size(0), E = u.size(1), T = u.size(2);
  HYLAB_CHECK(delta.sizes() == u.sizes(), "selective_scan: delta must match u (B={}, E={}, T={})",
              B, E, T);
  HYLAB_CHECK(A.dim() == 2 && A.size(0) == E, "selective_scan: A must be (E={}, N)", E);
  const int64_t N = A.size(1);
  for (const auto* bc : {&Bm, &Cm}) {
    HYLAB_CHECK(bc->dim() == 3 && bc->size(0) == B && bc->size(1) == N && bc->size(2) == T,
                "selective_scan: Bm and Cm must be (B={}, N={}, T={})", B, N, T);
  }
  HYLAB_CHECK(!D.defined() || (D.dim() == 1 && D.size(0) == E), "selective_scan: D must be (E={})", E);
  HYLAB_CHECK(!z.defined() || z.sizes() == u.sizes(), "selective_scan: z must match u");
  HYLAB_CHECK(!delta_bias.defined() || (delta_bias.dim() == 1 && delta_bias.size(0) == E),
              "selective_scan: delta_bias must be (E={})", E);
}

}  // namespace

std::tuple<torch::Tensor, torch::Tensor> selective_scan(
    const torch::Tensor& u_in, const torch::Tensor& delta_in, const torch::Tensor& A_in,
    const torch::Tensor& Bm_in, const torch::Tensor& Cm_in, const torch::Tensor& D,
    const torch::Tensor& z, const torch::Tensor& delta_bias, bool delta_softplus) {
  check_scan_shapes(u_in, delta_in, A_in, Bm_in, Cm_in, D, z, delta_bias);
  const auto acc = compute_dtype(u_in);
  const int64_t B = u_in.size(0), E = u_in.size(1), T = u_in.size(2), N = A_in.size(1);

  torch::Tensor u = u_in.to(acc), delta = delta_in.to(acc), A = A_in.to(acc);  // (B,E,T) (E,N)
  torch::Tensor Bm = Bm_in.to(acc), Cm = Cm_in.to(acc);                        // (B,N,T)
  if (delta_bias.defined()) delta = delta + delta_bias.to(acc).unsqueeze(-1);
  if (delta_softplus) delta = softplus_ref(delta);

  // Discretisation for all steps at once, time-major so that each step's slice is contiguous:
  // dA = exp(d * A), dBu = d * u * Bm.
  auto d_t = delta.permute({2, 0, 1}).contiguous().unsqueeze(-1);                               // (T,B,E,1)
  auto dA = torch::exp(d_t * A);                                                      // (T,B,E,N)
  auto dBu = (d_t * u.permute({2, 0, 1}).unsqueeze(-1)) *
             Bm.permute({2, 0, 1}).contiguous().unsqueeze(2);  // (T,B,E,N)

  // The recurrence, one step at a time. unbind (not select) per step: its backward is one
  // stack, where T selects would each scatter into a full-size zero tensor (quadratic in T).
  const auto dA_steps = dA.unbind(0), dBu_steps = dBu.unbind(0);  // T x (B,E,N)
  auto x = torch::zeros({B, E, N}, u.options());                   // state (B,E,N)
  std::vector<torch::Tensor> xs;
  xs.reserve(T);
  for (int64_t t = 0; t < T; ++t) {
    x = dA_steps[t] * x + dBu_steps[t];
    xs.push_back(x);
  }
  // Read-out for all steps at once: y_t = <x_t, Cm_t>.
  auto y = (torch::stack(xs, 0) * Cm.permute({2, 0, 1}).contiguous().unsqueeze(2)).sum(-1);  // (T,B,E)
  y = y.permute({1, 2, 0});                                                        // (B,E,T)
  if (D.defined()) y = y + u * D.to(acc).unsqueeze(-1);
  if (z.defined()) y = y * torch::silu(z.to(acc));
  return {y.to(u_in.scalar_type()), x};
}

torch::Tensor causal_conv1d(const torch::Tensor& x_in, const torch::Tensor& weight,
                            const torch::Tensor& bias, bool silu) {
  HYLAB_CHECK(x_in.dim() == 3, "causal_conv1d: x must be (B, E, T), got {} dims", x_in.dim());
  const int64_t E = x_in.size(1), T = x_in.size(2);
  HYLAB_CHECK(weight.dim() == 2 && weight.size(0) == E,
              "causal_conv1d: weight must be (E={}, K), got {}", E, c10::str(weight.sizes()));
  HYLAB_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == E),
              "causal_conv1d: bias must be (E={})", E);
  const auto acc = compute_dtype(x_in);
  const int64_t K = weight.size(1);
  // out[t] = bias + sum_k w[k] * x[t - (K-1) + k], x[<0] = 0: a sum of K shifted copies.
  auto xp = torch::constant_pad_nd(x_in.to(acc), {K - 1, 0});  // (B,E,T+K-1)
  auto w = weight.to(acc);
  auto out = torch::zeros_like(x_in, x_in.options().dtype(acc));
  for (int64_t k = 0; k < K; ++k) {
    out = out + xp.narrow(2, k, T) * w.select(1, k).unsqueeze(-1);  // (B,E,T)
  }
  if (bias.defined()) out = out + bias.to(acc).unsqueeze(-1);
  if (silu) out = torch::silu(out);
  return out.to(x_in.scalar_type());
}

torch::Tensor causal_conv1d_update(const torch::Tensor& x_in, torch::Tensor& conv_state,
                                   const torch::Tensor& weight, const torch::Tensor& bias,
                                   bool silu) {
  HYLAB_CHECK(x_in.dim() == 2, "causal_conv1d_update: x must be (B, E), got {}", c10::str(x_in.sizes()));
  const int64_t B = x_in.size(0), E = x_in.size(1), K = weight.size(1);
  HYLAB_CHECK(conv_state.dim() == 3 && conv_state.size(0) == B && conv_state.size(1) == E &&
                  conv_state.size(2) == K,
              "causal_conv1d_update: conv_state must be (B={}, E={}, K={}), got {}", B, E, K,
              c10::str(conv_state.sizes()));
  const auto acc = compute_dtype(x_in);
  // Drop the oldest input, append x: the state then holds inputs t-K+1 .. t.
  auto rolled = torch::cat({conv_state.narrow(2, 1, K - 1), x_in.unsqueeze(-1).to(conv_state.scalar_type())}, 2);
  conv_state.copy_(rolled);
  auto out = (conv_state.to(acc) * weight.to(acc).unsqueeze(0)).sum(-1);  // (B,E)
  if (bias.defined()) out = out + bias.to(acc);
  if (silu) out = torch::silu(out);
  return out.to(x_in.scalar_type());
}

torch::Tensor selective_state_update(torch::Tensor& ssm_state, const torch::Tensor& x_in,
                                     const torch::Tensor& dt_in, const torch::Tensor& A,
                                     const torch::Tensor& Bm, const torch::Tensor& Cm,
                                     const torch::Tensor& D, const torch::Tensor& z,
                                     const torch::Tensor& dt_bias, bool dt_softplus) {
  HYLAB_CHECK(x_in.dim() == 2, "selective_state_update: x must be (B, E), got {}", c10::str(x_in.sizes()));
  const int64_t B = x_in.size(0), E = x_in.size(1), N = A.size(1);
  HYLAB_CHECK(ssm_state.dim() == 3 && ssm_state.size(0) == B && ssm_state.size(1) == E &&
                  ssm_state.size(2) == N,
              "selective_state_update: ssm_state must be (B={}, E={}, N={}), got {}", B, E, N,
              c10::str(ssm_state.sizes()));
  HYLAB_CHECK(dt_in.sizes() == x_in.sizes(), "selective_state_update: dt must be (B, E)");
  HYLAB_CHECK(Bm.dim() == 2 && Bm.size(0) == B && Bm.size(1) == N && Cm.sizes() == Bm.sizes(),
              "selective_state_update: Bm and Cm must be (B={}, N={})", B, N);
  const auto acc = ssm_state.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto x = x_in.to(acc);  // (B,E)
  auto dt = dt_in.to(acc);
  if (dt_bias.defined()) dt = dt + dt_bias.to(acc);
  if (dt_softplus) dt = softplus_ref(dt);
  auto dA = torch::exp(dt.unsqueeze(-1) * A.to(acc));                     // (B,E,N)
  auto dBx = (dt * x).unsqueeze(-1) * Bm.to(acc).unsqueeze(1);             // (B,E,N)
  ssm_state.copy_(ssm_state.to(acc) * dA + dBx);
  auto y = torch::matmul(ssm_state.to(acc), Cm.to(acc).unsqueeze(-1)).squeeze(-1);  // (B,E)
  if (D.defined()) y = y + x * D.to(acc);
  if (z.defined()) y = y * torch::silu(z.to(acc));
  return y.to(x_in.scalar_type());
}

torch::Tensor softcap_cross_entropy(const torch::Tensor& logits, const torch::Tensor& targets,
                                    int64_t vocab, double softcap) {
  TORCH_CHECK(logits.dim() == 2 && targets.dim() == 1 && targets.size(0) == logits.size(0),
              "softcap_cross_entropy: logits must be (rows, width) and targets (rows), got ",
              logits.sizes(), " and ", targets.sizes());
  TORCH_CHECK(vocab >= 1 && vocab <= logits.size(1), "softcap_cross_entropy: vocab ", vocab,
              " must be in 1..", logits.size(1));
  auto z = logits.narrow(1, 0, vocab).to(logits.scalar_type() == torch::kDouble ? torch::kDouble
                                                                                 : torch::kFloat);
  if (softcap > 0) z = softcap * torch::tanh(z / softcap);
  namespace F = torch::nn::functional;
  return F::cross_entropy(z, targets, F::CrossEntropyFuncOptions().ignore_index(-1).reduction(torch::kNone));
}

torch::Tensor decode_attention(const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, const torch::Tensor& pos) {
  const int64_t B = q.size(0), H = q.size(1), Dh = q.size(2), Hkv = k.size(1), L = k.size(2);
  TORCH_CHECK(H % Hkv == 0, "decode_attention: Hkv = ", Hkv, " must divide H = ", H);
  const auto acc = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const double scale = 1.0 / std::sqrt(static_cast<double>(Dh));
  // Query head h reads kv head h / (H / Hkv): group the query heads by their kv head.
  auto qg = q.to(acc).reshape({B, Hkv, H / Hkv, Dh});                     // (B, Hkv, G, Dh)
  auto scores = torch::matmul(qg, k.to(acc).transpose(-2, -1)) * scale;  // (B, Hkv, G, L)
  auto keys = torch::arange(L, torch::dtype(torch::kLong).device(q.device())).view({1, 1, 1, L});
  auto keep = keys <= pos.to(q.device(), torch::kLong).view({-1, 1, 1, 1});  // (B or 1, 1, 1, L)
  scores = scores.masked_fill(keep.logical_not(), -std::numeric_limits<double>::infinity());
  auto out = torch::matmul(torch::softmax(scores, -1), v.to(acc));  // (B, Hkv, G, Dh)
  return out.reshape({B, H, Dh}).to(q.scalar_type());
}

torch::Tensor decode_rope_append(const torch::Tensor& qkv, const torch::Tensor& cos_full,
                                 const torch::Tensor& sin_full, const torch::Tensor& pos,
                                 torch::Tensor& k_cache, torch::Tensor& v_cache, int64_t heads) {
  const int64_t B = qkv.size(0), Hkv = k_cache.size(1), Dh = qkv.size(3);
  TORCH_CHECK(qkv.dim() == 4 && qkv.size(1) == 1 && qkv.size(2) == heads + 2 * Hkv,
              "decode_rope_append: qkv must be (B, 1, H + 2 Hkv, Dh), got ", qkv.sizes());
  auto qk = qkv.narrow(2, 0, heads + Hkv);  // (B, 1, H + Hkv, Dh)
  // [x2, x1] * [sin, -sin] + x * [cos, cos]: apply_rotary's products and sum, rounded alike.
  auto rot = compat::rms_norm(qk * cos_full + qk.roll(Dh / 2, 3) * sin_full);
  const auto dt = k_cache.scalar_type();
  k_cache.index_copy_(2, pos, rot.narrow(2, heads, Hkv).transpose(1, 2).to(dt));  // (B, Hkv, 1, Dh)
  v_cache.index_copy_(2, pos, qkv.narrow(2, heads + Hkv, Hkv).transpose(1, 2).to(dt));
  return rot.narrow(2, 0, heads).reshape({B, heads, Dh});
}

// ---------------------------------------------------------------- fused Transformer block

namespace {
// RMSNorm over the last dim in the compute dtype (eps < 0: that of `dtype`), rounded to `dtype`.
torch::Tensor rms_norm_as(const torch::Tensor& s, at::ScalarType dtype, double eps) {
  const auto acc = compute_dtype(s);
  auto sf = s.to(acc);
  if (eps < 0) eps = compat::rms_norm_eps(dtype);
  auto y = sf * torch::rsqrt(sf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return y.to(dtype);
}
}  // namespace

std::tuple<torch::Tensor, torch::Tensor> add_rms_norm(const torch::Tensor& x,
                                                      const torch::Tensor& branch, double eps) {
  HYLAB_CHECK(!branch.defined() || branch.sizes() == x.sizes(),
              "add_rms_norm: branch {} must match x {}", c10::str(branch.sizes()),
              c10::str(x.sizes()));
  torch::Tensor s = branch.defined() ? x + branch : x;
  return {s, rms_norm_as(s, s.scalar_type(), eps)};
}

torch::Tensor rope_qk_norm(const torch::Tensor& x, const torch::Tensor& cos,
                           const torch::Tensor& sin, double eps) {
  HYLAB_CHECK(x.dim() == 4 && x.size(3) % 2 == 0, "rope_qk_norm: x must be (B, T, H, Dh) with Dh even, got {}",
              c10::str(x.sizes()));
  const int64_t T = x.size(1), d = x.size(3) / 2;
  HYLAB_CHECK(cos.sizes() == sin.sizes() && cos.dim() == 2 && cos.size(0) == T && cos.size(1) == d,
              "rope_qk_norm: cos/sin must be (T={}, Dh/2={}), got {}", T, d, c10::str(cos.sizes()));
  const auto acc = compute_dtype(x);
  auto xf = x.to(acc);
  auto c = cos.to(acc).unsqueeze(0).unsqueeze(2);  // (1, T, 1, Dh/2)
  auto s = sin.to(acc).unsqueeze(0).unsqueeze(2);
  auto x1 = xf.narrow(3, 0, d), x2 = xf.narrow(3, d, d);
  auto r = torch::cat({x1 * c + x2 * s, x2 * c - x1 * s}, 3);  // (B, T, H, Dh)
  return rms_norm_as(r, x.scalar_type(), eps);
}

torch::Tensor relu_square(const torch::Tensor& u) {
  return torch::relu(u.to(compute_dtype(u))).square().to(u.scalar_type());
}

}  // namespace hylab::ref
