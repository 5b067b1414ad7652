// LibTorch glue for kernels/: validation, dtype dispatch, autograd wrappers (see cuda_ops.h).
#include "model/cuda_ops.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <utility>
#include <vector>

#include "kernels/causal_conv1d/causal_conv1d.h"
#include "kernels/cross_entropy/cross_entropy.h"
#include "kernels/decode/decode.h"
#include "kernels/decode/mamba_step.h"
#include "kernels/decode_attention/decode_attention.h"
#include "kernels/decode_attention/rope_append.h"
#include "kernels/fused_block/fused_block.h"
#include "kernels/gemv/gemv.h"
#include "kernels/selective_scan/selective_scan.h"

namespace hylab::cuda_ops {
namespace {

namespace hk = hylab::kernels;
using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::atomic<bool> g_deterministic{true};
std::atomic<int> g_scan_splits{0};  // SelectiveScanParams::force_splits (set_scan_splits)

// A kernel-variant switch: its value starts as the environment variable `env` (parsed on
// first use; the one place each is read), else -1 (the kernels' default).
int variant_from_env(const char* env, int count) {
  const char* s = std::getenv(env);
  if (s == nullptr || *s == '\0') return -1;
  char* end = nullptr;
  const long v = std::strtol(s, &end, 10);
  TORCH_CHECK(*end == '\0' && v >= -1 && v < count, env, " must be -1 or 0..", count - 1,
              ", got '", s, "'");
  return static_cast<int>(v);
}

std::atomic<int>& scan_fwd_variant_slot() {
  static std::atomic<int> slot{variant_from_env("HYLAB_SCAN_FWD_VARIANT", hk::kScanFwdVariants)};
  return slot;
}

std::atomic<int>& scan_bwd_variant_slot() {
  static std::atomic<int> slot{variant_from_env("HYLAB_SCAN_BWD_VARIANT", hk::kScanBwdVariants)};
  return slot;
}

cudaStream_t current_stream() { return at::cuda::getCurrentCUDAStream().stream(); }

hk::DType activation_dtype(const Tensor& t, const char* fn, const char* name) {
  if (t.scalar_type() == torch::kFloat32) return hk::DType::kFloat32;
  if (t.scalar_type() == torch::kBFloat16) return hk::DType::kBFloat16;
  TORCH_CHECK(false, fn, ": ", name, " must be float32 or bfloat16, got ", t.scalar_type());
  return hk::DType::kFloat32;  // not reached
}

void check_tensor(const Tensor& t, const char* fn, const char* name, const torch::Device& dev) {
  TORCH_CHECK(t.defined(), fn, ": ", name, " is required (got an undefined tensor)");
  TORCH_CHECK(t.is_cuda(), fn, ": ", name, " must be a CUDA tensor (got one on ", t.device(),
              ")");
  TORCH_CHECK(t.device() == dev, fn, ": ", name, " is on ", t.device(),
              " but the first input is on ", dev);
}

void check_shape(const Tensor& t, torch::IntArrayRef expected, const char* fn,
                 const char* name) {
  TORCH_CHECK(t.sizes() == expected, fn, ": ", name, " must have shape ", expected, ", got ",
              t.sizes());
}

void check_dtype(const Tensor& t, torch::ScalarType want, const char* fn, const char* name,
                 const char* why) {
  TORCH_CHECK(t.scalar_type() == want, fn, ": ", name, " must be ", want, " (", why, "), got ",
              t.scalar_type());
}

// The kernels need stride 1 along the last dimension; other strides are passed through.
Tensor unit_last_stride(const Tensor& t) {
  return (t.size(-1) <= 1 || t.stride(-1) == 1) ? t : t.contiguous();
}

// ---------------------------------------------------------------- selective scan

struct ScanInputs {
  Tensor u, delta, A, Bm, Cm, D, z, delta_bias;
  int64_t B = 0, E = 0, T = 0, N = 0;
  hk::DType dtype = hk::DType::kFloat32;
};

// Validates every argument; with normalize, also makes the last dimension stride-1 and the
// parameters contiguous (copies only where needed).
ScanInputs check_scan(const char* fn, const Tensor& u, const Tensor& delta, const Tensor& A,
                      const Tensor& Bm, const Tensor& Cm, const Tensor& D, const Tensor& z,
                      const Tensor& delta_bias, bool normalize = true) {
  TORCH_CHECK(u.defined(), fn, ": u is required");
  const torch::Device dev = u.device();
  check_tensor(u, fn, "u", dev);
  TORCH_CHECK(u.dim() == 3, fn, ": u must be (B, E, T), got shape ", u.sizes());
  ScanInputs in;
  in.B = u.size(0), in.E = u.size(1), in.T = u.size(2);
  in.dtype = activation_dtype(u, fn, "u");
  check_tensor(A, fn, "A", dev);
  TORCH_CHECK(A.dim() == 2 && A.size(0) == in.E, fn, ": A must be (E, N) with E = ", in.E,
              ", got shape ", A.sizes());
  in.N = A.size(1);
  TORCH_CHECK(hk::selective_scan_supports_dstate(static_cast<int>(in.N)), fn, ": N = ", in.N,
              " (A.size(1)) is not supported; allowed: 4, 8, 16, 32, 64");
  check_dtype(A, torch::kFloat32, fn, "A", "parameters are fp32");
  const char* act = "activations share u's dtype";
  for (auto [t, name] : {std::pair<const Tensor*, const char*>{&delta, "delta"}}) {
    check_tensor(*t, fn, name, dev);
    check_dtype(*t, u.scalar_type(), fn, name, act);
    check_shape(*t, {in.B, in.E, in.T}, fn, name);
  }
  for (auto [t, name] : {std::pair<const Tensor*, const char*>{&Bm, "Bm"}, {&Cm, "Cm"}}) {
    check_tensor(*t, fn, name, dev);
    check_dtype(*t, u.scalar_type(), fn, name, act);
    check_shape(*t, {in.B, in.N, in.T}, fn, name);
  }
  if (z.defined()) {
    check_tensor(z, fn, "z", dev);
    check_dtype(z, u.scalar_type(), fn, "z", act);
    check_shape(z, {in.B, in.E, in.T}, fn, "z");
  }
  for (auto [t, name] : {std::pair<const Tensor*, const char*>{&D, "D"}, {&delta_bias, "delta_bias"}}) {
    if (!t->defined()) continue;
    check_tensor(*t, fn, name, dev);
    check_dtype(*t, torch::kFloat32, fn, name, "parameters are fp32");
    check_shape(*t, {in.E}, fn, name);
  }
  TORCH_CHECK(in.T <= std::numeric_limits<int>::max() / 2 && in.E <= (1 << 30) &&
                  in.B <= 65535,
              fn, ": sizes too large (B must be <= 65535)");
  if (!normalize) return in;
  in.u = unit_last_stride(u);
  in.delta = unit_last_stride(delta);
  in.A = A.contiguous();
  in.Bm = unit_last_stride(Bm);
  in.Cm = unit_last_stride(Cm);
  in.D = D.defined() ? D.contiguous() : D;
  in.z = z.defined() ? unit_last_stride(z) : z;
  in.delta_bias = delta_bias.defined() ? delta_bias.contiguous() : delta_bias;
  return in;
}

hk::SelectiveScanParams scan_params(const ScanInputs& in, bool softplus) {
  hk::SelectiveScanParams p;
  p.fwd_variant = scan_fwd_variant();
  p.dtype = in.dtype;
  p.batch = static_cast<int>(in.B), p.dim = static_cast<int>(in.E);
  p.seqlen = static_cast<int>(in.T), p.dstate = static_cast<int>(in.N);
  p.delta_softplus = softplus;
  p.u = in.u.data_ptr();
  p.u_batch_stride = in.u.stride(0), p.u_dim_stride = in.u.stride(1);
  p.delta = in.delta.data_ptr();
  p.delta_batch_stride = in.delta.stride(0), p.delta_dim_stride = in.delta.stride(1);
  p.A = in.A.data_ptr<float>();
  p.Bm = in.Bm.data_ptr();
  p.B_batch_stride = in.Bm.stride(0), p.B_dstate_stride = in.Bm.stride(1);
  p.Cm = in.Cm.data_ptr();
  p.C_batch_stride = in.Cm.stride(0), p.C_dstate_stride = in.Cm.stride(1);
  p.D = in.D.defined() ? in.D.data_ptr<float>() : nullptr;
  if (in.z.defined()) {
    p.z = in.z.data_ptr();
    p.z_batch_stride = in.z.stride(0), p.z_dim_stride = in.z.stride(1);
  }
  p.delta_bias = in.delta_bias.defined() ? in.delta_bias.data_ptr<float>() : nullptr;
  p.force_splits = g_scan_splits.load();
  return p;
}

// The split scan's workspace for p (undefined when T is not split).
Tensor split_workspace(hk::SelectiveScanParams& p, bool bwd, const torch::TensorOptions& f32) {
  const int64_t n = hk::selective_scan_split_ws_floats(p, bwd);
  if (n == 0) return Tensor();
  Tensor ws = torch::empty({n}, f32);
  p.ws_split = ws.data_ptr<float>();
  return ws;
}

struct ScanForward {
  Tensor out, chunk_states, last_state;
};

ScanForward scan_forward(const ScanInputs& in, bool softplus, bool save_states, bool want_last) {
  const c10::cuda::CUDAGuard guard(in.u.device());
  ScanForward f;
  f.out = torch::empty({in.B, in.E, in.T}, in.u.options());
  if (in.B == 0 || in.E == 0 || in.T == 0) {
    if (want_last) f.last_state = torch::zeros({in.B, in.E, in.N}, in.u.options().dtype(torch::kFloat32));
    return f;
  }
  const auto f32 = in.u.options().dtype(torch::kFloat32);
  if (save_states) {
    f.chunk_states = torch::empty(
        {in.B, hk::selective_scan_nchunks(static_cast<int>(in.T)), in.E, in.N}, f32);
  }
  if (want_last) f.last_state = torch::empty({in.B, in.E, in.N}, f32);
  hk::SelectiveScanParams p = scan_params(in, softplus);
  p.out = f.out.data_ptr();
  p.chunk_states = save_states ? f.chunk_states.data_ptr<float>() : nullptr;
  p.last_state = want_last ? f.last_state.data_ptr<float>() : nullptr;
  const Tensor ws_split = split_workspace(p, /*bwd=*/false, f32);
  hk::selective_scan_fwd(p, current_stream());
  return f;
}

// LibTorch's Function::apply builds metadata for every tensor argument and rejects undefined
// ones, so optional inputs (D, z, delta_bias, conv bias) travel as 0-element placeholders
// plus a has_* flag; they are never read when the flag is false, and get no gradient.
Tensor placeholder_if_undefined(const Tensor& t, const Tensor& like) {
  return t.defined() ? t : torch::empty({0}, like.options().dtype(torch::kFloat32));
}

class SelectiveScanFn : public torch::autograd::Function<SelectiveScanFn> {
 public:
  // D, z, delta_bias are placeholders when has_D / has_z / has_bias is false.
  static Tensor forward(AutogradContext* ctx, const Tensor& u, const Tensor& delta,
                        const Tensor& A, const Tensor& Bm, const Tensor& Cm, const Tensor& D,
                        const Tensor& z, const Tensor& delta_bias, bool has_D, bool has_z,
                        bool has_bias, bool softplus) {
    ScanInputs in = check_scan("selective_scan", u, delta, A, Bm, Cm, has_D ? D : Tensor(),
                               has_z ? z : Tensor(), has_bias ? delta_bias : Tensor());
    ScanForward f = scan_forward(in, softplus, /*save_states=*/true, /*want_last=*/false);
    // Only defined tensors are saved: placeholders stand in for absent ones.
    ctx->save_for_backward({in.u, in.delta, in.A, in.Bm, in.Cm, has_D ? in.D : D,
                            has_z ? in.z : z, has_bias ? in.delta_bias : delta_bias,
                            placeholder_if_undefined(f.chunk_states, u)});
    ctx->saved_data["softplus"] = softplus;
    ctx->saved_data["has_D"] = has_D;
    ctx->saved_data["has_z"] = has_z;
    ctx->saved_data["has_bias"] = has_bias;
    return f.out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list s = ctx->get_saved_variables();
    const bool has_D = ctx->saved_data["has_D"].toBool();
    const bool has_z = ctx->saved_data["has_z"].toBool();
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    ScanInputs in;
    in.u = s[0], in.delta = s[1], in.A = s[2], in.Bm = s[3], in.Cm = s[4];
    in.D = has_D ? s[5] : Tensor();
    in.z = has_z ? s[6] : Tensor();
    in.delta_bias = has_bias ? s[7] : Tensor();
    const Tensor chunk_states = s[8];
    in.B = in.u.size(0), in.E = in.u.size(1), in.T = in.u.size(2), in.N = in.A.size(1);
    in.dtype = in.u.scalar_type() == torch::kFloat32 ? hk::DType::kFloat32 : hk::DType::kBFloat16;
    const bool softplus = ctx->saved_data["softplus"].toBool();

    const c10::cuda::CUDAGuard guard(in.u.device());
    const auto act = in.u.options();
    if (in.B == 0 || in.E == 0 || in.T == 0) {  // empty: zero grads, no launch
      auto zeros_like_or_none = [](const Tensor& t) { return t.defined() ? torch::zeros_like(t) : Tensor(); };
      return {torch::zeros_like(in.u),  torch::zeros_like(in.delta), torch::zeros_like(in.A),
              torch::zeros_like(in.Bm), torch::zeros_like(in.Cm),    zeros_like_or_none(in.D),
              zeros_like_or_none(in.z), zeros_like_or_none(in.delta_bias),
              Tensor(),                 Tensor(),                    Tensor(),
              Tensor()};
    }
    Tensor dout = grad_outputs[0];
    if (!dout.defined()) dout = torch::zeros({in.B, in.E, in.T}, act);
    dout = dout.to(in.u.scalar_type()).contiguous();

    const auto f32 = act.dtype(torch::kFloat32);
    Tensor du = torch::empty({in.B, in.E, in.T}, act);
    Tensor ddelta = torch::empty({in.B, in.E, in.T}, act);
    Tensor dz = in.z.defined() ? torch::empty({in.B, in.E, in.T}, act) : Tensor();
    Tensor dB = torch::empty({in.B, in.N, in.T}, act);
    Tensor dC = torch::empty({in.B, in.N, in.T}, act);
    Tensor dA = torch::empty({in.E, in.N}, f32);
    Tensor dD = in.D.defined() ? torch::empty({in.E}, f32) : Tensor();
    Tensor dbias = in.delta_bias.defined() ? torch::empty({in.E}, f32) : Tensor();
    const int nblk = hk::selective_scan_bwd_blocks_per_batch(static_cast<int>(in.E),
                                                             static_cast<int>(in.N));
    hk::SelectiveScanParams p = scan_params(in, softplus);
    // Split scan: S partials of dA/dD/ddelta_bias per batch row, plus the carry workspace.
    const int64_t splits = hk::selective_scan_num_splits(p, /*bwd=*/true);
    const Tensor ws_split = split_workspace(p, /*bwd=*/true, f32);
    Tensor ws_dBC = torch::empty({in.B, nblk, 2, in.N, in.T}, f32);
    Tensor ws_dA = torch::empty({splits, in.B, in.E, in.N}, f32);
    Tensor ws_dD = torch::empty({splits, in.B, in.E}, f32);
    Tensor ws_db = torch::empty({splits, in.B, in.E}, f32);

    p.chunk_states = chunk_states.data_ptr<float>();
    p.dout = dout.data_ptr();
    p.du = du.data_ptr();
    p.ddelta = ddelta.data_ptr();
    p.dz = dz.defined() ? dz.data_ptr() : nullptr;
    p.dB = dB.data_ptr();
    p.dC = dC.data_ptr();
    p.dA = dA.data_ptr<float>();
    p.dD = dD.defined() ? dD.data_ptr<float>() : nullptr;
    p.ddelta_bias = dbias.defined() ? dbias.data_ptr<float>() : nullptr;
    p.ws_dBC = ws_dBC.data_ptr<float>();
    p.ws_dA = ws_dA.data_ptr<float>();
    p.ws_dD = ws_dD.data_ptr<float>();
    p.ws_ddelta_bias = ws_db.data_ptr<float>();
    p.bwd_variant = scan_bwd_variant();
    hk::selective_scan_bwd(p, current_stream());
    // One entry per forward argument; the four flags get none.
    return {du, ddelta, dA, dB, dC, dD, dz, dbias, Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

bool any_requires_grad(std::initializer_list<const Tensor*> ts) {
  if (!torch::GradMode::is_enabled()) return false;
  for (const Tensor* t : ts) {
    if (t->defined() && t->requires_grad()) return true;
  }
  return false;
}

// ---------------------------------------------------------------- causal conv1d

struct ConvInputs {
  Tensor x, weight, bias;  // weight/bias as fp32 contiguous
  int64_t B = 0, E = 0, T = 0, K = 0;
  hk::DType dtype = hk::DType::kFloat32;
};

void check_conv_params(const char* fn, const Tensor& weight, const Tensor& bias, int64_t E,
                       const Tensor& x) {
  check_tensor(weight, fn, "weight", x.device());
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == E, fn,
              ": weight must be (E, K) with E = ", E, ", got shape ", weight.sizes());
  TORCH_CHECK(weight.size(1) >= 2 && weight.size(1) <= 4, fn, ": width K = ", weight.size(1),
              " is not supported; allowed: 2, 3, 4");
  TORCH_CHECK(weight.scalar_type() == torch::kFloat32 || weight.scalar_type() == x.scalar_type(),
              fn, ": weight must be float32 or x's dtype, got ", weight.scalar_type());
  if (bias.defined()) {
    check_tensor(bias, fn, "bias", x.device());
    check_shape(bias, {E}, fn, "bias");
    TORCH_CHECK(bias.scalar_type() == torch::kFloat32 || bias.scalar_type() == x.scalar_type(),
                fn, ": bias must be float32 or x's dtype, got ", bias.scalar_type());
  }
}

ConvInputs check_conv(const char* fn, const Tensor& x, const Tensor& weight, const Tensor& bias,
                      bool normalize = true) {
  TORCH_CHECK(x.defined(), fn, ": x is required");
  check_tensor(x, fn, "x", x.device());
  TORCH_CHECK(x.dim() == 3, fn, ": x must be (B, E, T), got shape ", x.sizes());
  ConvInputs in;
  in.B = x.size(0), in.E = x.size(1), in.T = x.size(2);
  in.dtype = activation_dtype(x, fn, "x");
  check_conv_params(fn, weight, bias, in.E, x);
  in.K = weight.size(1);
  TORCH_CHECK(in.B * in.E <= std::numeric_limits<int>::max() && in.T <= (1 << 26), fn,
              ": sizes too large");
  if (!normalize) return in;
  in.x = unit_last_stride(x);
  in.weight = weight.to(torch::kFloat32).contiguous();
  in.bias = bias.defined() ? bias.to(torch::kFloat32).contiguous() : Tensor();
  return in;
}

hk::CausalConv1dParams conv_params(const ConvInputs& in, bool silu) {
  hk::CausalConv1dParams p;
  p.dtype = in.dtype;
  p.batch = static_cast<int>(in.B), p.dim = static_cast<int>(in.E);
  p.seqlen = static_cast<int>(in.T), p.width = static_cast<int>(in.K);
  p.silu = silu;
  p.x = in.x.data_ptr();
  p.x_batch_stride = in.x.stride(0), p.x_dim_stride = in.x.stride(1);
  p.weight = in.weight.data_ptr<float>();
  p.bias = in.bias.defined() ? in.bias.data_ptr<float>() : nullptr;
  return p;
}

Tensor conv_forward(const ConvInputs& in, bool silu) {
  const c10::cuda::CUDAGuard guard(in.x.device());
  Tensor out = torch::empty({in.B, in.E, in.T}, in.x.options());
  if (out.numel() == 0) return out;
  hk::CausalConv1dParams p = conv_params(in, silu);
  p.out = out.data_ptr();
  hk::causal_conv1d_fwd(p, current_stream());
  return out;
}

class CausalConv1dFn : public torch::autograd::Function<CausalConv1dFn> {
 public:
  // bias is a placeholder when has_bias is false (see placeholder_if_undefined).
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& weight,
                        const Tensor& bias, bool has_bias, bool silu) {
    ConvInputs in = check_conv("causal_conv1d", x, weight, has_bias ? bias : Tensor());
    Tensor out = conv_forward(in, silu);
    ctx->save_for_backward({in.x, in.weight, has_bias ? in.bias : bias});
    ctx->saved_data["silu"] = silu;
    ctx->saved_data["has_bias"] = has_bias;
    ctx->saved_data["weight_dtype"] = static_cast<int64_t>(weight.scalar_type());
    ctx->saved_data["bias_dtype"] =
        static_cast<int64_t>(has_bias ? bias.scalar_type() : torch::kFloat32);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list s = ctx->get_saved_variables();
    ConvInputs in;
    in.x = s[0], in.weight = s[1];
    in.bias = ctx->saved_data["has_bias"].toBool() ? s[2] : Tensor();
    in.B = in.x.size(0), in.E = in.x.size(1), in.T = in.x.size(2), in.K = in.weight.size(1);
    in.dtype = in.x.scalar_type() == torch::kFloat32 ? hk::DType::kFloat32 : hk::DType::kBFloat16;
    const bool silu = ctx->saved_data["silu"].toBool();
    const auto wdt = static_cast<torch::ScalarType>(ctx->saved_data["weight_dtype"].toInt());
    const auto bdt = static_cast<torch::ScalarType>(ctx->saved_data["bias_dtype"].toInt());

    const c10::cuda::CUDAGuard guard(in.x.device());
    Tensor dout = grad_outputs[0];
    if (!dout.defined()) dout = torch::zeros({in.B, in.E, in.T}, in.x.options());
    dout = dout.to(in.x.scalar_type()).contiguous();
    const auto f32 = in.x.options().dtype(torch::kFloat32);
    Tensor dx = torch::empty({in.B, in.E, in.T}, in.x.options());
    Tensor dw = torch::empty({in.E, in.K}, f32);
    Tensor db = in.bias.defined() ? torch::empty({in.E}, f32) : Tensor();
    if (dx.numel() == 0) {
      dw.zero_();
      if (db.defined()) db.zero_();
    } else {
      Tensor ws = torch::empty(
          {in.B, in.E, hk::causal_conv1d_tchunks(static_cast<int>(in.T)), in.K + 1}, f32);
      hk::CausalConv1dParams p = conv_params(in, silu);
      p.dout = dout.data_ptr();
      p.dx = dx.data_ptr();
      p.dweight = dw.data_ptr<float>();
      p.dbias = db.defined() ? db.data_ptr<float>() : nullptr;
      p.ws = ws.data_ptr<float>();
      hk::causal_conv1d_bwd(p, current_stream());
    }
    return {dx, dw.to(wdt), db.defined() ? db.to(bdt) : Tensor(), Tensor(), Tensor()};
  }
};

// ---------------------------------------------------------------- soft-capped cross-entropy

hk::SoftcapCrossEntropyParams ce_params(const Tensor& logits, const Tensor& targets,
                                        int64_t vocab, double softcap) {
  const char* fn = "softcap_cross_entropy";
  TORCH_CHECK(logits.defined() && targets.defined(), fn, ": logits and targets are required");
  check_tensor(logits, fn, "logits", logits.device());
  check_tensor(targets, fn, "targets", logits.device());
  TORCH_CHECK(logits.dim() == 2, fn, ": logits must be (rows, width), got shape ", logits.sizes());
  TORCH_CHECK(logits.size(1) <= 1 || logits.stride(1) == 1, fn,
              ": logits must have stride 1 along columns");
  TORCH_CHECK(targets.dim() == 1 && targets.size(0) == logits.size(0), fn,
              ": targets must be (rows) = (", logits.size(0), "), got shape ", targets.sizes());
  check_dtype(targets, torch::kLong, fn, "targets", "class indices");
  TORCH_CHECK(vocab >= 1 && vocab <= logits.size(1), fn, ": vocab ", vocab, " must be in 1..",
              logits.size(1), " (logits' width)");
  TORCH_CHECK(logits.size(0) <= std::numeric_limits<int>::max() &&
                  logits.size(1) <= std::numeric_limits<int>::max(),
              fn, ": too many rows or columns");
  hk::SoftcapCrossEntropyParams p;
  p.dtype = activation_dtype(logits, fn, "logits");
  p.rows = logits.size(0);
  p.width = static_cast<int>(logits.size(1));
  p.vocab = static_cast<int>(vocab);
  p.row_stride = logits.size(0) <= 1 ? logits.size(1) : logits.stride(0);
  p.softcap = static_cast<float>(softcap);
  p.logits = logits.data_ptr();
  p.targets = targets.data_ptr<int64_t>();
  return p;
}

class SoftcapCrossEntropyFn : public torch::autograd::Function<SoftcapCrossEntropyFn> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& logits_in, const Tensor& targets_in,
                        int64_t vocab, double softcap) {
    const c10::cuda::CUDAGuard guard(logits_in.device());
    Tensor logits = logits_in, targets = targets_in.contiguous();
    hk::SoftcapCrossEntropyParams p = ce_params(logits, targets, vocab, softcap);
    const auto f32 = logits.options().dtype(torch::kFloat32);
    Tensor loss = torch::empty({p.rows}, f32), lse = torch::empty({p.rows}, f32);
    p.loss = loss.data_ptr<float>();
    p.lse = lse.data_ptr<float>();
    hk::softcap_cross_entropy_fwd(p, current_stream());
    ctx->save_for_backward({logits, targets, lse});
    ctx->saved_data["vocab"] = vocab;
    ctx->saved_data["softcap"] = softcap;
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor& logits = saved[0];
    const c10::cuda::CUDAGuard guard(logits.device());
    hk::SoftcapCrossEntropyParams p = ce_params(logits, saved[1], ctx->saved_data["vocab"].toInt(),
                                                ctx->saved_data["softcap"].toDouble());
    Tensor dloss = grads[0].to(torch::kFloat32).contiguous();
    Tensor dlogits = torch::empty(logits.sizes(), logits.options().memory_format(at::MemoryFormat::Contiguous));
    p.lse = saved[2].data_ptr<float>();
    p.dloss = dloss.data_ptr<float>();
    p.dlogits = dlogits.data_ptr();
    hk::softcap_cross_entropy_bwd(p, current_stream());
    return {dlogits, Tensor(), Tensor(), Tensor()};
  }
};

// ---------------------------------------------------------------- fused Transformer block

hk::DType dtype_of_saved(const Tensor& t) {
  return t.scalar_type() == torch::kFloat32 ? hk::DType::kFloat32 : hk::DType::kBFloat16;
}

// The incoming gradient in `like`'s dtype and contiguous; zeros when autograd passed none.
Tensor grad_or_zeros(const Tensor& g, const Tensor& like) {
  return g.defined() ? g.to(like.scalar_type()).contiguous() : torch::zeros_like(like);
}

struct NormForward {
  Tensor sum, y, rstd;  // sum only with a branch
};

// s = x + branch (or x), y = RMSNorm(s), rstd (rows) fp32.
NormForward norm_forward(const char* fn, const Tensor& x_in, const Tensor& branch_in, double eps) {
  TORCH_CHECK(x_in.defined(), fn, ": x is required");
  check_tensor(x_in, fn, "x", x_in.device());
  const hk::DType dt = activation_dtype(x_in, fn, "x");
  TORCH_CHECK(x_in.dim() >= 1 && x_in.size(-1) >= 1 &&
                  x_in.size(-1) <= std::numeric_limits<int>::max(),
              fn, ": x must have a last dimension of 1..2^31-1 elements, got shape ", x_in.sizes());
  if (branch_in.defined()) {
    check_tensor(branch_in, fn, "branch", x_in.device());
    check_dtype(branch_in, x_in.scalar_type(), fn, "branch", "x and branch share one dtype");
    check_shape(branch_in, x_in.sizes(), fn, "branch");
  }
  const c10::cuda::CUDAGuard guard(x_in.device());
  const Tensor x = x_in.contiguous();
  const Tensor branch = branch_in.defined() ? branch_in.contiguous() : Tensor();
  const int64_t cols = x.size(-1), rows = x.numel() / cols;
  TORCH_CHECK(rows <= std::numeric_limits<int>::max(), fn, ": too many rows (", rows, ")");
  NormForward f;
  f.y = torch::empty(x.sizes(), x.options());
  f.rstd = torch::empty({rows}, x.options().dtype(torch::kFloat32));
  if (branch.defined()) f.sum = torch::empty(x.sizes(), x.options());
  if (rows == 0) return f;
  hk::AddRmsNormParams p;
  p.dtype = dt;
  p.rows = rows;
  p.cols = static_cast<int>(cols);
  p.eps = static_cast<float>(eps);
  p.x = x.data_ptr();
  p.branch = branch.defined() ? branch.data_ptr() : nullptr;
  p.sum = f.sum.defined() ? f.sum.data_ptr() : nullptr;
  p.y = f.y.data_ptr();
  p.rstd = f.rstd.data_ptr<float>();
  hk::add_rms_norm_fwd(p, current_stream());
  return f;
}

// dx = rstd * (dy - y * mean(dy * y)) + dres (dres may be undefined).
Tensor norm_backward(const Tensor& y, const Tensor& rstd, const Tensor& dy_in, const Tensor& dres_in) {
  const c10::cuda::CUDAGuard guard(y.device());
  const Tensor dy = grad_or_zeros(dy_in, y);
  const Tensor dres = dres_in.defined() ? dres_in.to(y.scalar_type()).contiguous() : Tensor();
  Tensor dx = torch::empty(y.sizes(), y.options());
  const int64_t rows = rstd.size(0);
  if (rows == 0) return dx;
  hk::AddRmsNormParams p;
  p.dtype = dtype_of_saved(y);
  p.rows = rows;
  p.cols = static_cast<int>(y.size(-1));
  p.y = y.data_ptr();
  p.rstd = rstd.data_ptr<float>();
  p.dy = dy.data_ptr();
  p.dres = dres.defined() ? dres.data_ptr() : nullptr;
  p.dx = dx.data_ptr();
  hk::add_rms_norm_bwd(p, current_stream());
  return dx;
}

class AddRmsNormFn : public torch::autograd::Function<AddRmsNormFn> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& branch,
                               double eps) {
    NormForward f = norm_forward("add_rms_norm", x, branch, eps);
    ctx->save_for_backward({f.y, f.rstd});  // y is an output: saving it costs no memory
    ctx->set_materialize_grads(false);      // an unused output's gradient stays undefined
    return {f.sum, f.y};
  }

  // grads: (d sum, d y). Both inputs get the same gradient (the add's).
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list s = ctx->get_saved_variables();
    Tensor dx = norm_backward(s[0], s[1], grads[1], grads[0]);
    return {dx, dx, Tensor()};
  }
};

class RmsNormFn : public torch::autograd::Function<RmsNormFn> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x, double eps) {
    NormForward f = norm_forward("rms_norm", x, Tensor(), eps);
    ctx->save_for_backward({f.y, f.rstd});
    return f.y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list s = ctx->get_saved_variables();
    return {norm_backward(s[0], s[1], grads[0], Tensor()), Tensor()};
  }
};

hk::RopeQkNormParams rope_params(const Tensor& y, const Tensor& rstd, const Tensor& cos,
                                 const Tensor& sin, double eps) {
  hk::RopeQkNormParams p;
  p.dtype = dtype_of_saved(y);
  p.rows = y.numel() / y.size(3);
  p.seqlen = static_cast<int>(y.size(1));
  p.heads = static_cast<int>(y.size(2));
  p.head_dim = static_cast<int>(y.size(3));
  p.eps = static_cast<float>(eps);
  p.cos = cos.data_ptr<float>();
  p.sin = sin.data_ptr<float>();
  p.y = y.data_ptr();
  p.rstd = rstd.data_ptr<float>();
  return p;
}

class RopeQkNormFn : public torch::autograd::Function<RopeQkNormFn> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x_in, const Tensor& cos_in,
                        const Tensor& sin_in, double eps) {
    const char* fn = "rope_qk_norm";
    check_tensor(x_in, fn, "x", x_in.device());
    activation_dtype(x_in, fn, "x");
    TORCH_CHECK(x_in.dim() == 4, fn, ": x must be (B, T, H, Dh), got shape ", x_in.sizes());
    const int64_t T = x_in.size(1), H = x_in.size(2), D = x_in.size(3);
    TORCH_CHECK(D >= 2 && D % 2 == 0 && D <= hk::kRopeMaxHeadDim, fn, ": head dim ", D,
                " is not supported; allowed: even, 2..", hk::kRopeMaxHeadDim);
    TORCH_CHECK(T <= std::numeric_limits<int>::max() && H <= std::numeric_limits<int>::max(), fn,
                ": T or H too large");
    for (auto [t, name] : {std::pair<const Tensor*, const char*>{&cos_in, "cos"}, {&sin_in, "sin"}}) {
      check_tensor(*t, fn, name, x_in.device());
      check_dtype(*t, torch::kFloat32, fn, name, "the rotary tables are fp32");
      check_shape(*t, {T, D / 2}, fn, name);
    }
    const c10::cuda::CUDAGuard guard(x_in.device());
    const Tensor x = x_in.contiguous(), cos = cos_in.contiguous(), sin = sin_in.contiguous();
    Tensor y = torch::empty(x.sizes(), x.options());
    Tensor rstd = torch::empty({x.numel() / D}, x.options().dtype(torch::kFloat32));
    if (x.numel() > 0) {
      hk::RopeQkNormParams p = rope_params(y, rstd, cos, sin, eps);
      p.x = x.data_ptr();
      hk::rope_qk_norm_fwd(p, current_stream());
    }
    ctx->save_for_backward({y, rstd, cos, sin});
    ctx->saved_data["eps"] = eps;
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list s = ctx->get_saved_variables();
    const Tensor& y = s[0];
    const c10::cuda::CUDAGuard guard(y.device());
    const Tensor dy = grad_or_zeros(grads[0], y);
    Tensor dx = torch::empty(y.sizes(), y.options());
    if (y.numel() > 0) {
      hk::RopeQkNormParams p = rope_params(y, s[1], s[2], s[3], ctx->saved_data["eps"].toDouble());
      p.dy = dy.data_ptr();
      p.dx = dx.data_ptr();
      hk::rope_qk_norm_bwd(p, current_stream());
    }
    return {dx, Tensor(), Tensor(), Tensor()};
  }
};

class ReluSquareFn : public torch::autograd::Function<ReluSquareFn> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& u_in) {
    const char* fn = "relu_square";
    check_tensor(u_in, fn, "u", u_in.device());
    const hk::DType dt = activation_dtype(u_in, fn, "u");
    const c10::cuda::CUDAGuard guard(u_in.device());
    const Tensor u = u_in.contiguous();
    Tensor h = torch::empty(u.sizes(), u.options());
    if (u.numel() > 0) {
      hk::ReluSquareParams p;
      p.dtype = dt;
      p.n = u.numel();
      p.u = u.data_ptr();
      p.h = h.data_ptr();
      hk::relu_square_fwd(p, current_stream());
    }
    ctx->save_for_backward({h});  // the output only: du = 2 dh sqrt(h)
    return h;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list s = ctx->get_saved_variables();
    const Tensor& h = s[0];
    const c10::cuda::CUDAGuard guard(h.device());
    const Tensor dh = grad_or_zeros(grads[0], h);
    Tensor du = torch::empty(h.sizes(), h.options());
    if (h.numel() > 0) {
      hk::ReluSquareParams p;
      p.dtype = dtype_of_saved(h);
      p.n = h.numel();
      p.h = h.data_ptr();
      p.dh = dh.data_ptr();
      p.du = du.data_ptr();
      hk::relu_square_bwd(p, current_stream());
    }
    return {du};
  }
};

}  // namespace

// ---------------------------------------------------------------- public entry points

std::tuple<torch::Tensor, torch::Tensor> add_rms_norm(const torch::Tensor& x,
                                                      const torch::Tensor& branch, double eps) {
  TORCH_CHECK(x.defined() && branch.defined(), "add_rms_norm: x and branch are required");
  variable_list out = AddRmsNormFn::apply(x, branch, eps);
  return {out[0], out[1]};
}

torch::Tensor rms_norm(const torch::Tensor& x, double eps) {
  TORCH_CHECK(x.defined(), "rms_norm: x is required");
  return RmsNormFn::apply(x, eps);
}

torch::Tensor rope_qk_norm(const torch::Tensor& x, const torch::Tensor& cos,
                           const torch::Tensor& sin, double eps) {
  TORCH_CHECK(x.defined() && cos.defined() && sin.defined(), "rope_qk_norm: x, cos and sin are required");
  return RopeQkNormFn::apply(x, cos, sin, eps);
}

torch::Tensor relu_square(const torch::Tensor& u) {
  TORCH_CHECK(u.defined(), "relu_square: u is required");
  return ReluSquareFn::apply(u);
}

torch::Tensor softcap_cross_entropy(const torch::Tensor& logits, const torch::Tensor& targets,
                                    int64_t vocab, double softcap) {
  ce_params(logits, targets, vocab, softcap);  // clear messages before apply()
  return SoftcapCrossEntropyFn::apply(logits, targets, vocab, softcap);
}

torch::Tensor selective_scan(const torch::Tensor& u, const torch::Tensor& delta,
                             const torch::Tensor& A, const torch::Tensor& Bm,
                             const torch::Tensor& Cm, const torch::Tensor& D,
                             const torch::Tensor& z, const torch::Tensor& delta_bias,
                             bool delta_softplus) {
  if (!any_requires_grad({&u, &delta, &A, &Bm, &Cm, &D, &z, &delta_bias})) {
    ScanInputs in = check_scan("selective_scan", u, delta, A, Bm, Cm, D, z, delta_bias);
    return scan_forward(in, delta_softplus, false, false).out;
  }
  // Validate first: apply() would fail on an undefined or foreign tensor with a vaguer message.
  check_scan("selective_scan", u, delta, A, Bm, Cm, D, z, delta_bias, /*normalize=*/false);
  return SelectiveScanFn::apply(u, delta, A, Bm, Cm, placeholder_if_undefined(D, u),
                                placeholder_if_undefined(z, u),
                                placeholder_if_undefined(delta_bias, u), D.defined(),
                                z.defined(), delta_bias.defined(), delta_softplus);
}

std::tuple<torch::Tensor, torch::Tensor> selective_scan_with_state(
    const torch::Tensor& u, const torch::Tensor& delta, const torch::Tensor& A,
    const torch::Tensor& Bm, const torch::Tensor& Cm, const torch::Tensor& D,
    const torch::Tensor& z, const torch::Tensor& delta_bias, bool delta_softplus) {
  const torch::NoGradGuard no_grad;
  ScanInputs in =
      check_scan("selective_scan_with_state", u, delta, A, Bm, Cm, D, z, delta_bias);
  ScanForward f = scan_forward(in, delta_softplus, false, true);
  return {f.out, f.last_state};
}

torch::Tensor causal_conv1d(const torch::Tensor& x, const torch::Tensor& weight,
                            const torch::Tensor& bias, bool silu) {
  if (!any_requires_grad({&x, &weight, &bias})) {
    return conv_forward(check_conv("causal_conv1d", x, weight, bias), silu);
  }
  check_conv("causal_conv1d", x, weight, bias, /*normalize=*/false);  // clear messages first
  return CausalConv1dFn::apply(x, weight, placeholder_if_undefined(bias, x), bias.defined(),
                               silu);
}

torch::Tensor causal_conv1d_update(const torch::Tensor& x, torch::Tensor& conv_state,
                                   const torch::Tensor& weight, const torch::Tensor& bias,
                                   bool silu) {
  const char* fn = "causal_conv1d_update";
  TORCH_CHECK(x.defined(), fn, ": x is required");
  check_tensor(x, fn, "x", x.device());
  TORCH_CHECK(x.dim() == 2, fn, ": x must be (B, E), got shape ", x.sizes());
  const int64_t B = x.size(0), E = x.size(1);
  const hk::DType dt = activation_dtype(x, fn, "x");
  check_conv_params(fn, weight, bias, E, x);
  const int64_t K = weight.size(1);
  check_tensor(conv_state, fn, "conv_state", x.device());
  check_shape(conv_state, {B, E, K}, fn, "conv_state");
  TORCH_CHECK(conv_state.is_contiguous(), fn, ": conv_state must be contiguous (it is updated in place)");
  TORCH_CHECK(conv_state.scalar_type() == x.scalar_type() ||
                  conv_state.scalar_type() == torch::kFloat32,
              fn, ": conv_state must be float32 or x's dtype, got ", conv_state.scalar_type());
  TORCH_CHECK(!(dt == hk::DType::kFloat32 && conv_state.scalar_type() != torch::kFloat32), fn,
              ": a float32 x needs a float32 conv_state");
  const c10::cuda::CUDAGuard guard(x.device());
  Tensor xin = (E <= 1 || x.stride(1) == 1) ? x : x.contiguous();
  Tensor w = weight.to(torch::kFloat32).contiguous();
  Tensor b = bias.defined() ? bias.to(torch::kFloat32).contiguous() : Tensor();
  Tensor out = torch::empty({B, E}, x.options());
  if (out.numel() == 0) return out;
  hk::ConvUpdateParams p;
  p.dtype = dt;
  p.state_dtype = conv_state.scalar_type() == torch::kFloat32 ? hk::DType::kFloat32
                                                              : hk::DType::kBFloat16;
  p.batch = static_cast<int>(B), p.dim = static_cast<int>(E), p.width = static_cast<int>(K);
  p.silu = silu;
  p.x = xin.data_ptr();
  p.x_batch_stride = xin.stride(0);
  p.conv_state = conv_state.data_ptr();
  p.weight = w.data_ptr<float>();
  p.bias = b.defined() ? b.data_ptr<float>() : nullptr;
  p.out = out.data_ptr();
  hk::causal_conv1d_update(p, current_stream());
  return out;
}

torch::Tensor selective_state_update(torch::Tensor& ssm_state, const torch::Tensor& x,
                                     const torch::Tensor& dt, const torch::Tensor& A,
                                     const torch::Tensor& Bm, const torch::Tensor& Cm,
                                     const torch::Tensor& D, const torch::Tensor& z,
                                     const torch::Tensor& dt_bias, bool dt_softplus) {
  const char* fn = "selective_state_update";
  TORCH_CHECK(x.defined(), fn, ": x is required");
  const torch::Device dev = x.device();
  check_tensor(x, fn, "x", dev);
  TORCH_CHECK(x.dim() == 2, fn, ": x must be (B, E), got shape ", x.sizes());
  const int64_t B = x.size(0), E = x.size(1);
  const hk::DType dtype = activation_dtype(x, fn, "x");
  check_tensor(A, fn, "A", dev);
  TORCH_CHECK(A.dim() == 2 && A.size(0) == E, fn, ": A must be (E, N) with E = ", E,
              ", got shape ", A.sizes());
  check_dtype(A, torch::kFloat32, fn, "A", "parameters are fp32");
  const int64_t N = A.size(1);
  TORCH_CHECK(hk::selective_state_update_supports_dstate(static_cast<int>(N)), fn, ": N = ", N,
              " is not supported; allowed: 4, 8, 16, 32, 64, 128");
  check_tensor(ssm_state, fn, "ssm_state", dev);
  check_shape(ssm_state, {B, E, N}, fn, "ssm_state");
  check_dtype(ssm_state, torch::kFloat32, fn, "ssm_state", "states are fp32");
  TORCH_CHECK(ssm_state.is_contiguous(), fn, ": ssm_state must be contiguous (it is updated in place)");
  const char* act = "activations share x's dtype";
  check_tensor(dt, fn, "dt", dev);
  check_dtype(dt, x.scalar_type(), fn, "dt", act);
  check_shape(dt, {B, E}, fn, "dt");
  for (auto [t, name] : {std::pair<const Tensor*, const char*>{&Bm, "Bm"}, {&Cm, "Cm"}}) {
    check_tensor(*t, fn, name, dev);
    check_dtype(*t, x.scalar_type(), fn, name, act);
    check_shape(*t, {B, N}, fn, name);
  }
  if (z.defined()) {
    check_tensor(z, fn, "z", dev);
    check_dtype(z, x.scalar_type(), fn, "z", act);
    check_shape(z, {B, E}, fn, "z");
  }
  for (auto [t, name] : {std::pair<const Tensor*, const char*>{&D, "D"}, {&dt_bias, "dt_bias"}}) {
    if (!t->defined()) continue;
    check_tensor(*t, fn, name, dev);
    check_dtype(*t, torch::kFloat32, fn, name, "parameters are fp32");
    check_shape(*t, {E}, fn, name);
  }
  const c10::cuda::CUDAGuard guard(dev);
  auto unit = [](const Tensor& t) {
    return (!t.defined() || t.size(-1) <= 1 || t.stride(-1) == 1) ? t : t.contiguous();
  };
  Tensor xi = unit(x), dti = unit(dt), zi = unit(z), Bi = unit(Bm), Ci = unit(Cm);
  Tensor Ai = A.contiguous();
  Tensor Di = D.defined() ? D.contiguous() : D;
  Tensor dbi = dt_bias.defined() ? dt_bias.contiguous() : dt_bias;
  Tensor out = torch::empty({B, E}, x.options());
  if (out.numel() == 0) return out;
  hk::StateUpdateParams p;
  p.dtype = dtype;
  p.batch = static_cast<int>(B), p.dim = static_cast<int>(E), p.dstate = static_cast<int>(N);
  p.dt_softplus = dt_softplus;
  p.ssm_state = ssm_state.data_ptr<float>();
  p.x = xi.data_ptr();
  p.x_batch_stride = xi.stride(0);
  p.dt = dti.data_ptr();
  p.dt_batch_stride = dti.stride(0);
  if (zi.defined()) {
    p.z = zi.data_ptr();
    p.z_batch_stride = zi.stride(0);
  }
  p.Bm = Bi.data_ptr();
  p.B_batch_stride = Bi.stride(0);
  p.Cm = Ci.data_ptr();
  p.C_batch_stride = Ci.stride(0);
  p.A = Ai.data_ptr<float>();
  p.D = Di.defined() ? Di.data_ptr<float>() : nullptr;
  p.dt_bias = dbi.defined() ? dbi.data_ptr<float>() : nullptr;
  p.out = out.data_ptr();
  hk::selective_state_update(p, current_stream());
  return out;
}

// ---------------------------------------------------------------- fused Mamba decode step

bool mamba_decode_core_supports(const torch::Tensor& x, int64_t N, int64_t K, int64_t R) {
  if (!x.defined() || !x.is_cuda() || x.dim() != 2 ||
      (x.scalar_type() != torch::kFloat32 && x.scalar_type() != torch::kBFloat16)) {
    return false;
  }
  const hk::DType dt = x.scalar_type() == torch::kFloat32 ? hk::DType::kFloat32 : hk::DType::kBFloat16;
  const int64_t B = x.size(0), E = x.size(1);
  if (B < 1 || E < 1 || B > (1 << 20) || E > (1 << 24) || N > 1024 || K > 1024 || R < 1 ||
      R > (1 << 20)) {
    return false;
  }
  return hk::mamba_step_supports(dt, static_cast<int>(B), static_cast<int>(E), static_cast<int>(N),
                                 static_cast<int>(K), static_cast<int>(R));
}

torch::Tensor mamba_decode_core(const torch::Tensor& x, const torch::Tensor& z,
                                torch::Tensor& conv_state, torch::Tensor& ssm_state,
                                const torch::Tensor& conv_weight, const torch::Tensor& conv_bias,
                                const torch::Tensor& x_proj_weight,
                                const torch::Tensor& dt_proj_weight, const torch::Tensor& dt_bias,
                                const torch::Tensor& A, const torch::Tensor& D,
                                bool overlap_launches) {
  const char* fn = "mamba_decode_core";
  TORCH_CHECK(x.defined(), fn, ": x is required");
  const torch::Device dev = x.device();
  check_tensor(x, fn, "x", dev);
  TORCH_CHECK(x.dim() == 2, fn, ": x must be (B, E), got shape ", x.sizes());
  const int64_t B = x.size(0), E = x.size(1);
  const hk::DType dtype = activation_dtype(x, fn, "x");
  check_conv_params(fn, conv_weight, conv_bias, E, x);
  const int64_t K = conv_weight.size(1);
  check_tensor(A, fn, "A", dev);
  TORCH_CHECK(A.dim() == 2 && A.size(0) == E, fn, ": A must be (E, N) with E = ", E,
              ", got shape ", A.sizes());
  check_dtype(A, torch::kFloat32, fn, "A", "parameters are fp32");
  const int64_t N = A.size(1);
  TORCH_CHECK(hk::selective_state_update_supports_dstate(static_cast<int>(std::min<int64_t>(N, 1 << 20))),
              fn, ": N = ", N, " is not supported; allowed: 4, 8, 16, 32, 64, 128");
  check_tensor(dt_proj_weight, fn, "dt_proj_weight", dev);
  TORCH_CHECK(dt_proj_weight.dim() == 2 && dt_proj_weight.size(0) == E &&
                  dt_proj_weight.size(1) >= 1,
              fn, ": dt_proj_weight must be (E, R) with E = ", E, ", got shape ",
              dt_proj_weight.sizes());
  const int64_t R = dt_proj_weight.size(1);
  check_tensor(x_proj_weight, fn, "x_proj_weight", dev);
  check_shape(x_proj_weight, {R + 2 * N, E}, fn, "x_proj_weight");
  for (auto [t, name] : {std::pair<const Tensor*, const char*>{&x_proj_weight, "x_proj_weight"},
                         {&dt_proj_weight, "dt_proj_weight"}}) {
    TORCH_CHECK(t->scalar_type() == torch::kFloat32 || t->scalar_type() == torch::kBFloat16, fn,
                ": ", name, " must be float32 or bfloat16, got ", t->scalar_type());
  }
  check_tensor(conv_state, fn, "conv_state", dev);
  check_shape(conv_state, {B, E, K}, fn, "conv_state");
  TORCH_CHECK(conv_state.is_contiguous(), fn,
              ": conv_state must be contiguous (it is updated in place)");
  TORCH_CHECK(conv_state.scalar_type() == x.scalar_type() ||
                  conv_state.scalar_type() == torch::kFloat32,
              fn, ": conv_state must be float32 or x's dtype, got ", conv_state.scalar_type());
  TORCH_CHECK(!(dtype == hk::DType::kFloat32 && conv_state.scalar_type() != torch::kFloat32), fn,
              ": a float32 x needs a float32 conv_state");
  check_tensor(ssm_state, fn, "ssm_state", dev);
  check_shape(ssm_state, {B, E, N}, fn, "ssm_state");
  check_dtype(ssm_state, torch::kFloat32, fn, "ssm_state", "states are fp32");
  TORCH_CHECK(ssm_state.is_contiguous(), fn,
              ": ssm_state must be contiguous (it is updated in place)");
  if (z.defined()) {
    check_tensor(z, fn, "z", dev);
    check_dtype(z, x.scalar_type(), fn, "z", "activations share x's dtype");
    check_shape(z, {B, E}, fn, "z");
  }
  for (auto [t, name] : {std::pair<const Tensor*, const char*>{&D, "D"}, {&dt_bias, "dt_bias"}}) {
    if (!t->defined()) continue;
    check_tensor(*t, fn, name, dev);
    check_dtype(*t, torch::kFloat32, fn, name, "parameters are fp32");
    check_shape(*t, {E}, fn, name);
  }
  TORCH_CHECK(mamba_decode_core_supports(x, N, K, R), fn, ": B = ", B, ", E = ", E,
              " do not fit the kernel (a state block's rows of R + 2N = ", R + 2 * N,
              " x_proj outputs must fit in shared memory)");
  const c10::cuda::CUDAGuard guard(dev);
  auto unit = [](const Tensor& t) {
    return (!t.defined() || t.size(-1) <= 1 || t.stride(-1) == 1) ? t : t.contiguous();
  };
  Tensor xi = unit(x), zi = unit(z);
  // The projections run in the activation dtype, as autocast runs the unfused linears (on
  // the decode graph path the weights are bf16 already and these are no-ops).
  Tensor wx = x_proj_weight.to(x.scalar_type()).contiguous();
  Tensor wdt = dt_proj_weight.to(x.scalar_type()).contiguous();
  Tensor cw = conv_weight.to(torch::kFloat32).contiguous();
  Tensor cb = conv_bias.defined() ? conv_bias.to(torch::kFloat32).contiguous() : Tensor();
  Tensor Ai = A.contiguous();
  Tensor Di = D.defined() ? D.contiguous() : D;
  Tensor dbi = dt_bias.defined() ? dt_bias.contiguous() : dt_bias;
  Tensor x_conv = torch::empty({B, E}, x.options());
  Tensor partial = torch::empty(
      {hk::mamba_step_workspace_floats(dtype, static_cast<int>(B), static_cast<int>(E),
                                       static_cast<int>(N), static_cast<int>(R))},
      x.options().dtype(torch::kFloat32));
  Tensor out = torch::empty({B, E}, x.options());
  hk::MambaStepParams p;
  p.dtype = dtype;
  p.state_dtype = conv_state.scalar_type() == torch::kFloat32 ? hk::DType::kFloat32
                                                              : hk::DType::kBFloat16;
  p.batch = static_cast<int>(B), p.dim = static_cast<int>(E), p.dstate = static_cast<int>(N);
  p.width = static_cast<int>(K), p.dt_rank = static_cast<int>(R);
  p.x = xi.data_ptr(), p.x_batch_stride = xi.stride(0);
  if (zi.defined()) p.z = zi.data_ptr(), p.z_batch_stride = zi.stride(0);
  p.conv_state = conv_state.data_ptr();
  p.conv_weight = cw.data_ptr<float>();
  p.conv_bias = cb.defined() ? cb.data_ptr<float>() : nullptr;
  p.x_proj_weight = wx.data_ptr();
  p.dt_proj_weight = wdt.data_ptr();
  p.dt_bias = dbi.defined() ? dbi.data_ptr<float>() : nullptr;
  p.A = Ai.data_ptr<float>();
  p.D = Di.defined() ? Di.data_ptr<float>() : nullptr;
  p.ssm_state = ssm_state.data_ptr<float>();
  p.x_conv = x_conv.data_ptr(), p.x_proj_partial = partial.data_ptr<float>(), p.out = out.data_ptr();
  // The kernels read these before waiting for the kernel launched just before them: only
  // when none was copied here (a copy would be that kernel) may they overlap it.
  auto same = [](const Tensor& a, const Tensor& b) {
    return !a.defined() || a.data_ptr() == b.data_ptr();
  };
  p.overlap_launches = overlap_launches && same(wx, x_proj_weight) &&
                       same(wdt, dt_proj_weight) && same(cw, conv_weight) &&
                       same(cb, conv_bias) && same(Ai, A) && same(Di, D) && same(dbi, dt_bias);
  hk::mamba_step(p, current_stream());
  return out;
}

// ---------------------------------------------------------------- decode attention

bool decode_attention_supports(int64_t head_dim) {
  return hk::decode_attention_supports_head_dim(static_cast<int>(head_dim));
}

torch::Tensor decode_attention(const torch::Tensor& q, const torch::Tensor& k_cache,
                               const torch::Tensor& v_cache, const torch::Tensor& pos) {
  const char* fn = "decode_attention";
  TORCH_CHECK(q.defined(), fn, ": q is required");
  const torch::Device dev = q.device();
  check_tensor(q, fn, "q", dev);
  TORCH_CHECK(q.dim() == 3, fn, ": q must be (B, H, Dh), got shape ", q.sizes());
  const int64_t B = q.size(0), H = q.size(1), Dh = q.size(2);
  const hk::DType dtype = activation_dtype(q, fn, "q");
  TORCH_CHECK(hk::decode_attention_supports_head_dim(static_cast<int>(Dh)), fn, ": head dim ", Dh,
              " is not supported; allowed: 16, 32, 64, 128, 256");
  for (auto [t, name] : {std::pair<const Tensor*, const char*>{&k_cache, "k_cache"}, {&v_cache, "v_cache"}}) {
    check_tensor(*t, fn, name, dev);
    check_dtype(*t, q.scalar_type(), fn, name, "the cache holds q's dtype");
    TORCH_CHECK(t->dim() == 4 && t->size(0) == B && t->size(3) == Dh && H % t->size(1) == 0, fn,
                ": ", name, " must be (B=", B, ", Hkv dividing H=", H, ", L, Dh=", Dh, "), got ",
                t->sizes());
    TORCH_CHECK(t->stride(3) == 1, fn, ": ", name, " needs unit stride along Dh");
  }
  TORCH_CHECK(k_cache.sizes() == v_cache.sizes() && k_cache.strides() == v_cache.strides(), fn,
              ": k_cache and v_cache must have the same shape and strides");
  check_tensor(pos, fn, "pos", dev);
  check_dtype(pos, torch::kInt64, fn, "pos", "positions are int64");
  TORCH_CHECK(pos.dim() == 1 && (pos.size(0) == 1 || pos.size(0) == B), fn,
              ": pos must be (1) or (B=", B, "), got ", pos.sizes());
  const c10::cuda::CUDAGuard guard(dev);
  Tensor qi = q.stride(2) == 1 ? q : q.contiguous();
  Tensor out = torch::empty({B, H, Dh}, q.options());
  const int64_t L = k_cache.size(2);
  hk::DecodeAttentionParams p;
  p.dtype = dtype;
  p.batch = static_cast<int>(B), p.heads = static_cast<int>(H);
  p.kv_heads = static_cast<int>(k_cache.size(1)), p.head_dim = static_cast<int>(Dh);
  p.max_len = L;
  p.q = qi.data_ptr();
  p.q_batch_stride = qi.stride(0), p.q_head_stride = qi.stride(1);
  p.k = k_cache.data_ptr(), p.v = v_cache.data_ptr();
  p.kv_batch_stride = k_cache.stride(0), p.kv_head_stride = k_cache.stride(1);
  p.kv_row_stride = k_cache.stride(2);
  p.pos = pos.data_ptr<int64_t>();
  p.pos_batch_stride = pos.size(0) == 1 ? 0 : pos.stride(0);
  p.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(Dh)));
  p.num_splits = hk::decode_attention_num_splits(p.batch, p.heads, L);
  p.split_len = (L + p.num_splits - 1) / p.num_splits;
  auto f32 = q.options().dtype(torch::kFloat32);
  Tensor acc = torch::empty({p.num_splits, B * H, Dh}, f32);
  Tensor ml = torch::empty({p.num_splits, B * H, 2}, f32);
  p.partial_acc = acc.data_ptr<float>(), p.partial_ml = ml.data_ptr<float>();
  p.out = out.data_ptr();
  hk::decode_attention(p, current_stream());
  return out;
}

// ---------------------------------------------------------------- rope + QK-norm + KV append

torch::Tensor rope_append(const torch::Tensor& qkv, const torch::Tensor& cos_full,
                          const torch::Tensor& sin_full, const torch::Tensor& pos,
                          torch::Tensor& k_cache, torch::Tensor& v_cache, int64_t heads, double eps) {
  const char* fn = "rope_append";
  TORCH_CHECK(qkv.defined(), fn, ": qkv is required");
  const torch::Device dev = qkv.device();
  check_tensor(qkv, fn, "qkv", dev);
  const hk::DType dtype = activation_dtype(qkv, fn, "qkv");
  TORCH_CHECK(qkv.dim() == 4 && qkv.size(1) == 1, fn, ": qkv must be (B, 1, H + 2 Hkv, Dh), got ",
              qkv.sizes());
  const int64_t B = qkv.size(0), R = qkv.size(2), Dh = qkv.size(3);
  TORCH_CHECK(qkv.stride(3) == 1 && qkv.stride(2) == Dh, fn,
              ": qkv must be contiguous within a sequence (head stride Dh, unit stride along Dh)");
  check_tensor(k_cache, fn, "k_cache", dev);
  check_tensor(v_cache, fn, "v_cache", dev);
  const int64_t Hkv = k_cache.dim() == 4 ? k_cache.size(1) : 0;
  TORCH_CHECK(heads >= 1 && Hkv >= 1 && R == heads + 2 * Hkv, fn, ": qkv has ", R,
              " head rows, expected H + 2 Hkv = ", heads, " + 2 * ", Hkv);
  for (auto [t, name] : {std::pair<const Tensor*, const char*>{&k_cache, "k_cache"}, {&v_cache, "v_cache"}}) {
    check_dtype(*t, qkv.scalar_type(), fn, name, "the cache holds qkv's dtype");
    TORCH_CHECK(t->dim() == 4 && t->size(0) == B && t->size(1) == Hkv && t->size(3) == Dh &&
                    t->stride(3) == 1,
                fn, ": ", name, " must be (B, Hkv, L, Dh) with unit stride along Dh, got ", t->sizes());
  }
  TORCH_CHECK(k_cache.sizes() == v_cache.sizes() && k_cache.strides() == v_cache.strides(), fn,
              ": k_cache and v_cache must have the same shape and strides");
  for (auto [t, name] : {std::pair<const Tensor*, const char*>{&cos_full, "cos_full"}, {&sin_full, "sin_full"}}) {
    check_tensor(*t, fn, name, dev);
    check_dtype(*t, qkv.scalar_type(), fn, name, "tables in qkv's dtype");
    TORCH_CHECK(t->numel() == Dh && t->is_contiguous(), fn, ": ", name, " must hold Dh = ", Dh,
                " contiguous values, got ", t->sizes());
  }
  check_tensor(pos, fn, "pos", dev);
  check_dtype(pos, torch::kInt64, fn, "pos", "positions are int64");
  TORCH_CHECK(pos.numel() == 1, fn, ": pos must hold one position, got ", pos.sizes());
  TORCH_CHECK(hk::rope_append_supports_head_dim(static_cast<int>(Dh)), fn, ": head dim ", Dh,
              " is not supported (even, at most 256)");
  const c10::cuda::CUDAGuard guard(dev);
  Tensor q = torch::empty({B, heads, Dh}, qkv.options());
  hk::RopeAppendParams p;
  p.dtype = dtype;
  p.batch = static_cast<int>(B), p.heads = static_cast<int>(heads);
  p.kv_heads = static_cast<int>(Hkv), p.head_dim = static_cast<int>(Dh);
  p.max_len = k_cache.size(2);
  p.qkv = qkv.data_ptr(), p.qkv_batch_stride = qkv.stride(0);
  p.cos_full = cos_full.data_ptr(), p.sin_full = sin_full.data_ptr();
  p.pos = pos.data_ptr<int64_t>();
  p.eps = static_cast<float>(eps);
  p.q_out = q.data_ptr();
  p.k_cache = k_cache.data_ptr(), p.v_cache = v_cache.data_ptr();
  p.kv_batch_stride = k_cache.stride(0), p.kv_head_stride = k_cache.stride(1);
  p.kv_row_stride = k_cache.stride(2);
  hk::rope_append(p, current_stream());
  return q;
}

// ---------------------------------------------------------------- small-batch GEMV

bool gemv_supports(const torch::Tensor& x, const torch::Tensor& weight) {
  if (!x.defined() || !weight.defined() || !x.is_cuda() || x.device() != weight.device() ||
      x.scalar_type() != torch::kBFloat16 || weight.scalar_type() != torch::kBFloat16 ||
      weight.dim() != 2 || x.dim() < 1 || x.size(-1) != weight.size(1) || !weight.is_contiguous()) {
    return false;
  }
  const int64_t rows = x.numel() / std::max<int64_t>(x.size(-1), 1);
  return hk::gemv_supports(hk::DType::kBFloat16, static_cast<int>(std::min<int64_t>(rows, 1 << 20)),
                           x.size(-1));
}

torch::Tensor gemv(const torch::Tensor& x, const torch::Tensor& weight, const GemvFusion& fusion) {
  const char* fn = "gemv";
  TORCH_CHECK(gemv_supports(x, weight), fn, ": needs CUDA bf16 x (..., K) with at most ",
              hk::kGemvMaxRows, " rows, a contiguous bf16 weight (N, K), K % 8 == 0; got x ",
              x.sizes(), " ", x.scalar_type(), ", weight ", weight.sizes(), " ", weight.scalar_type());
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t K = x.size(-1), N = weight.size(0);
  Tensor x2 = x.reshape({-1, K});
  if (x2.stride(1) != 1 || x2.stride(0) % 8 != 0 ||
      (reinterpret_cast<uintptr_t>(x2.data_ptr()) & 15u) != 0) {
    x2 = x2.contiguous();
  }
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = N;
  Tensor y = torch::empty({x2.size(0), N}, x.options());
  hk::GemvParams p;
  p.dtype = hk::DType::kBFloat16;
  p.rows = static_cast<int>(x2.size(0));
  p.in_features = K, p.out_features = N;
  p.x = x2.data_ptr(), p.x_row_stride = x2.stride(0);
  p.w = weight.data_ptr();
  p.y = y.data_ptr(), p.y_row_stride = N;
  p.norm_input = fusion.norm_eps > 0.0;
  p.norm_eps = static_cast<float>(fusion.norm_eps);
  TORCH_CHECK(!(fusion.relu2 && fusion.residual.defined()), fn,
              ": relu2 and residual cannot be fused together");
  Tensor r;
  if (fusion.relu2) p.epilogue = hk::GemvEpilogue::kRelu2;
  if (fusion.residual.defined()) {
    TORCH_CHECK(fusion.residual.numel() == x2.size(0) * N &&
                    fusion.residual.scalar_type() == torch::kBFloat16 &&
                    fusion.residual.device() == x.device(),
                fn, ": residual must be bf16 with ", x2.size(0) * N, " elements on ", x.device(),
                ", got ", fusion.residual.sizes(), " ", fusion.residual.scalar_type());
    r = fusion.residual.reshape({x2.size(0), N}).contiguous();
    p.epilogue = hk::GemvEpilogue::kAddResidual;
    p.residual = r.data_ptr(), p.residual_row_stride = N;
  }
  p.warps_per_row = fusion.warps_per_row;
  p.overlap_launches = fusion.overlap_launches;
  hk::gemv(p, current_stream());
  return y.view(out_shape);
}

void set_deterministic(bool on) { g_deterministic.store(on); }
bool deterministic() { return g_deterministic.load(); }

void set_scan_splits(int splits) {
  TORCH_CHECK(splits >= 0, "set_scan_splits: splits must be >= 0 (0 automatic, 1 off), got ",
              splits);
  g_scan_splits.store(splits);
}
int scan_splits() { return g_scan_splits.load(); }

int scan_splits_for(int64_t B, int64_t E, int64_t T, int64_t N, bool backward) {
  hk::SelectiveScanParams p;
  p.batch = static_cast<int>(B), p.dim = static_cast<int>(E);
  p.seqlen = static_cast<int>(T), p.dstate = static_cast<int>(N);
  p.force_splits = g_scan_splits.load();
  return hk::selective_scan_num_splits(p, backward);
}

void set_scan_fwd_variant(int variant) {
  TORCH_CHECK(variant >= -1 && variant < hk::kScanFwdVariants,
              "set_scan_fwd_variant: variant must be -1 or 0..", hk::kScanFwdVariants - 1,
              ", got ", variant);
  scan_fwd_variant_slot().store(variant);
}
int scan_fwd_variant() { return scan_fwd_variant_slot().load(); }

void set_scan_bwd_variant(int variant) {
  TORCH_CHECK(variant >= -1 && variant < hk::kScanBwdVariants,
              "set_scan_bwd_variant: variant must be -1 or 0..", hk::kScanBwdVariants - 1,
              ", got ", variant);
  scan_bwd_variant_slot().store(variant);
}
int scan_bwd_variant() { return scan_bwd_variant_slot().load(); }

}  // namespace hylab::cuda_ops
