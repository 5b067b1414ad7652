// Our CUDA kernels (kernels/) as LibTorch ops: tensor validation, dtype dispatch and
// torch::autograd::Function wrappers. Only compiled when LibTorch has CUDA and nvcc built
// hylab_kernels (HYLAB_CUDA_KERNELS); model/ops.h is the dispatch point callers use.
//
// Same names, arguments, shapes and semantics as model/ops.h (minus use_kernels):
//   u, delta, z: (B, E, T)  A: (E, N) fp32  Bm, Cm: (B, N, T)  D, delta_bias: (E) fp32
//   conv x: (B, E, T)  weight: (E, K)  bias: (E)
// Activations (u, delta, z, Bm, Cm, x) are fp32 or bf16, all of one dtype; states and
// accumulation are fp32. Any batch/channel strides are accepted; a tensor whose last
// dimension is not stride-1 is copied to a contiguous one first. N in {4, 8, 16, 32, 64}
// for the scan (multiples of 4 up to 128 for the decode step), K in {2, 3, 4}.
//
// Every entry point checks device, dtype, rank, shapes and strides, and throws c10::Error
// naming the function and the argument. All kernels run on the current CUDA stream.
#pragma once

#include <torch/torch.h>

#include <tuple>

namespace hylab::cuda_ops {

// Differentiable in u, delta, A, Bm, Cm, D, z, delta_bias (z, delta_bias, D may be undefined).
torch::Tensor selective_scan(const torch::Tensor& u, const torch::Tensor& delta,
                             const torch::Tensor& A, const torch::Tensor& Bm,
                             const torch::Tensor& Cm, const torch::Tensor& D,
                             const torch::Tensor& z, const torch::Tensor& delta_bias,
                             bool delta_softplus);

// No autograd. Returns (y, last_state (B, E, N) fp32): the prefill before decoding.
std::tuple<torch::Tensor, torch::Tensor> selective_scan_with_state(
    const torch::Tensor& u, const torch::Tensor& delta, const torch::Tensor& A,
    const torch::Tensor& Bm, const torch::Tensor& Cm, const torch::Tensor& D,
    const torch::Tensor& z, const torch::Tensor& delta_bias, bool delta_softplus);

// Differentiable in x, weight, bias (bias may be undefined). weight/bias may be fp32 or x's
// dtype; they are used in fp32 and their grads come back in their own dtype.
torch::Tensor causal_conv1d(const torch::Tensor& x, const torch::Tensor& weight,
                            const torch::Tensor& bias, bool silu);

// One decode step: x (B, E); conv_state (B, E, K) contiguous, x's dtype or fp32, rolled in
// place. Returns (B, E). No autograd.
torch::Tensor causal_conv1d_update(const torch::Tensor& x, torch::Tensor& conv_state,
                                   const torch::Tensor& weight, const torch::Tensor& bias,
                                   bool silu);

// One decode step of the scan; ssm_state (B, E, N) fp32 contiguous, updated in place.
// x, dt, z: (B, E)  Bm, Cm: (B, N)  A: (E, N)  D, dt_bias: (E). Returns y (B, E). No autograd.
torch::Tensor selective_state_update(torch::Tensor& ssm_state, const torch::Tensor& x,
                                     const torch::Tensor& dt, const torch::Tensor& A,
                                     const torch::Tensor& Bm, const torch::Tensor& Cm,
                                     const torch::Tensor& D, const torch::Tensor& z,
                                     const torch::Tensor& dt_bias, bool dt_softplus);

// The Mamba decode step between in_proj and out_proj, fused into two kernels
// (kernels/decode/mamba_step.h): conv update (SiLU) + x_proj, then dt_proj + the state update
// (softplus on delta, D skip, z gate) + the conv-state roll. The same as
//   xc = causal_conv1d_update(x, conv_state, conv_weight, conv_bias, silu)
//   dt_low, Bm, Cm = split(linear(xc, x_proj_weight), R, N, N)
//   y = selective_state_update(ssm_state, xc, linear(dt_low, dt_proj_weight), A, Bm, Cm, D,
//                              z, dt_bias, softplus)
// with the projections' fp32 sums taken in another order (mamba_step.h says what that
// changes). x, z (B, E), unit channel stride (z may be undefined); conv_state (B, E, K) fp32
// or x's dtype, ssm_state (B, E, N) fp32, contiguous, updated in place; conv_weight (E, K),
// conv_bias (E) fp32 or x's dtype; x_proj_weight (R + 2N, E), dt_proj_weight (E, R) fp32 or
// bf16 (used in x's dtype, as autocast would); A (E, N), D, dt_bias (E) fp32 (D, dt_bias may
// be undefined). Returns y (B, E) in x's dtype. No autograd. Graph-capturable.
// overlap_launches (experimental, Hopper): programmatic dependent launch, both kernels may
// start while the kernel before them drains and load the weights, A, D, dt_bias and both
// states before waiting for it; so the kernel launched just before this call must not write
// any of those (in_proj's GEMV, which writes x and z, is fine). Ignored when the glue had to
// copy a parameter (dtype or layout).
torch::Tensor mamba_decode_core(const torch::Tensor& x, const torch::Tensor& z,
                                torch::Tensor& conv_state, torch::Tensor& ssm_state,
                                const torch::Tensor& conv_weight, const torch::Tensor& conv_bias,
                                const torch::Tensor& x_proj_weight,
                                const torch::Tensor& dt_proj_weight, const torch::Tensor& dt_bias,
                                const torch::Tensor& A, const torch::Tensor& D,
                                bool overlap_launches = false);
// True when mamba_decode_core takes x (B, E) (CUDA, fp32/bf16) with these N, K, R.
bool mamba_decode_core_supports(const torch::Tensor& x, int64_t N, int64_t K, int64_t R);

// One query per sequence against a KV cache (kernels/decode_attention, flash-decoding):
// q (B, H, Dh); k_cache, v_cache (B, Hkv, L, Dh) of q's dtype, unit stride along Dh; pos
// int64 on q's device, (1) or (B): query b attends to cache positions [0, pos[b]] (read on
// the device: graph-capturable). Returns (B, H, Dh) in q's dtype. Dh in {16, 32, 64, 128, 256}.
torch::Tensor decode_attention(const torch::Tensor& q, const torch::Tensor& k_cache,
                               const torch::Tensor& v_cache, const torch::Tensor& pos);
bool decode_attention_supports(int64_t head_dim);

// The decode step's attention prologue (kernels/decode_attention/rope_append.h): qkv
// (B, 1, H + 2 Hkv, Dh) contiguous per sequence -> q (B, H, Dh) rotated and normed; k rotated
// and normed, and v, are written into k_cache/v_cache (B, Hkv, L, Dh) at row pos (1).
// cos_full/sin_full (Dh values) and the caches in qkv's dtype; eps the RMSNorm's. No autograd.
torch::Tensor rope_append(const torch::Tensor& qkv, const torch::Tensor& cos_full,
                          const torch::Tensor& sin_full, const torch::Tensor& pos,
                          torch::Tensor& k_cache, torch::Tensor& v_cache, int64_t heads, double eps);

// What the GEMV fuses around the product (kernels/gemv/gemv.h): norm_eps > 0 normalises x
// first (weightless RMSNorm); relu2 squares the ReLU of the result; a defined residual
// (..., N) bf16 is added to it. warps_per_row 0 = the kernel's default.
struct GemvFusion {
  double norm_eps = 0.0;
  bool relu2 = false;
  torch::Tensor residual;
  int warps_per_row = 0;
  // Programmatic dependent launch (Hopper; kernels/common/launch.cuh): the GEMV may start
  // while the kernel before it drains and load its weights meanwhile, so that kernel must not
  // write weight (x and the residual are read after the wait, so a copy of them is fine).
  bool overlap_launches = false;
};

// x (..., K) @ weight (N, K)^T -> (..., N) for at most 8 rows of x (kernels/gemv), bf16 x and
// weight, K % 8 == 0 (gemv_supports), with the optional fusions. No autograd.
torch::Tensor gemv(const torch::Tensor& x, const torch::Tensor& weight,
                   const GemvFusion& fusion = {});
bool gemv_supports(const torch::Tensor& x, const torch::Tensor& weight);

// Per-row cross-entropy of soft-capped logits (kernels/cross_entropy), differentiable in
// logits: logits (rows, width) fp32 or bf16 with stride 1 along columns, targets (rows)
// int64 (-1 = ignore), vocab <= width columns count. Returns (rows) fp32; the gradient has
// logits' dtype and shape (zero in the columns past vocab).
torch::Tensor softcap_cross_entropy(const torch::Tensor& logits, const torch::Tensor& targets,
                                    int64_t vocab, double softcap);

// The fused Transformer-block ops (kernels/fused_block/fused_block.h has the math), each a
// differentiable op: x, branch, u fp32 or bf16 (one dtype), any strides (copied to contiguous
// when needed); outputs contiguous in the input dtype; eps is the RMSNorm's.
//   add_rms_norm: x, branch (..., C) -> (s = x + branch, y = RMSNorm(s)); the gradient of
//     both inputs is one tensor. Saves y and rstd (rows) fp32, not s.
//   rms_norm: x (..., C) -> RMSNorm(x); saves y and rstd.
//   rope_qk_norm: x (B, T, H, Dh) -> RMSNorm(rotate(x)) (B, T, H, Dh), cos/sin (T, Dh/2) fp32,
//     Dh even and <= 256. Saves y, rstd and the tables.
//   relu_square: u -> relu(u)^2. Saves only the output.
std::tuple<torch::Tensor, torch::Tensor> add_rms_norm(const torch::Tensor& x,
                                                      const torch::Tensor& branch, double eps);
torch::Tensor rms_norm(const torch::Tensor& x, double eps);
torch::Tensor rope_qk_norm(const torch::Tensor& x, const torch::Tensor& cos,
                           const torch::Tensor& sin, double eps);
torch::Tensor relu_square(const torch::Tensor& u);

// Deterministic mode (default on). Every kernel here is deterministic (fixed-order
// reductions, no atomics), so both settings run the same code today: there is no faster
// non-deterministic path (docs/KERNELS.md says why). The switch exists so callers can state
// what they need and a future atomics path has a place to go.
void set_deterministic(bool on);
bool deterministic();

// Splits of T for the selective scan (docs/KERNELS.md "Split scan"): 0 = automatic (split
// only when B x channel blocks cannot fill the GPU; the environment variable
// HYLAB_SCAN_SPLITS overrides the automatic choice the same way), 1 = never split, > 1 =
// that many splits (fewer for short T). Process-wide; for tests and benchmarks.
void set_scan_splits(int splits);
int scan_splits();
// The splits the forward (backward = false) or backward would use for these sizes now.
int scan_splits_for(int64_t B, int64_t E, int64_t T, int64_t N, bool backward);

// Which selective-scan forward / backward kernel runs (hylab::kernels, selective_scan.h:
// variants 0 .. kScanFwdVariants-1 / kScanBwdVariants-1; -1 = the kernels' default). The
// process starts with the value of the environment variable HYLAB_SCAN_FWD_VARIANT /
// HYLAB_SCAN_BWD_VARIANT when it is set (read here, once), else -1. Tests and `hylab bench
// kernels` switch them to run and time every variant in one process.
void set_scan_fwd_variant(int variant);
int scan_fwd_variant();
void set_scan_bwd_variant(int variant);
int scan_bwd_variant();

}  // namespace hylab::cuda_ops
