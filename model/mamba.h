// The Mamba (v1, selective scan) mixer, with mamba_simple.py's semantics:
//
//   xz = in_proj(x)                      (B, T, 2E), split into x and the gate z
//   x  = silu(causal_conv1d(x))          depthwise, width K, with bias
//   dt, Bm, Cm = split(x_proj(x))        R, N, N
//   dt = dt_proj.weight @ dt             (B, E, T); dt_proj.bias enters the scan as delta_bias
//   y  = selective_scan(x, dt, A = -exp(A_log), Bm, Cm, D, z, delta_bias, softplus)
//   out = out_proj(y)                    (B, T, C)
//
// Mamba blocks get no positional information. The scan's A, D and biases are fp32
// parameters and stay fp32 under autocast; the linears may return bf16.
//
// Initialisation (reset_mamba_parameters, Mamba's own, never touched by the generic init):
//   dt_proj.weight ~ U(+-R^-0.5); dt_proj.bias = softplus^-1(dt), dt log-uniform in
//   [dt_min, dt_max] clamped at dt_init_floor; A_log = log(1..N) per channel; D = 1;
//   conv1d ~ U(+-1/sqrt(K)) (PyTorch's Conv1d default, which Mamba keeps);
//   out_proj = 0 (nanochat's rule for c_proj: every residual branch starts as identity;
//   see docs/MODEL.md). in_proj and x_proj take the generic fan-in normal init.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "common/run_config.h"
#include "model/inference_cache.h"

namespace hylab {

class MambaMixerImpl : public torch::nn::Module {
 public:
  explicit MambaMixerImpl(const GPTConfig& cfg);

  // Mamba's own init of the parameters listed in own_init_parameters() (see above).
  void reset_mamba_parameters();
  // The parameters reset_mamba_parameters() owns: the generic init must skip them.
  std::vector<torch::Tensor> own_init_parameters() const;

  // (B, T, C) normed -> (B, T, C). Differentiable.
  torch::Tensor forward(const torch::Tensor& x);

  // Inference over T new tokens at positions [pos, pos+T), carrying the layer's conv and
  // SSM state in `cache` (conv_state (B, E, K), ssm_state (B, E, N) fp32). pos == 0 with T > 1
  // is a prefill through the full ops; otherwise tokens go one at a time through the
  // decode-step ops. No autograd.
  torch::Tensor forward_step(const torch::Tensor& x, LayerCache& cache, int64_t pos);

  // One decode token on the residual stream x (B, 1, C) (not normed): returns
  // x + forward_step(rms_norm(x)), with the norm fused into in_proj's GEMV and the residual
  // add into out_proj's where ops:: fuses them. Static shapes, no host sync: CUDA-graph
  // capturable.
  torch::Tensor decode(const torch::Tensor& x, LayerCache& cache);

  // Keeps A = -exp(A_log) (E, N) fp32 for decode() instead of two kernels a step; in place
  // when it exists already (captured graphs keep reading it). Call again after A_log changes.
  void prepare_decode();

  void set_use_kernels(bool on) { use_kernels_ = on; }
  // The decode step on CUDA: the fused conv+x_proj and dt_proj+state-update kernels
  // (kernels/decode/mamba_step.h) or the unfused ops they replace (the twin the tests compare
  // with). Both paths default to fused (d768, batch 1, H200, docs/KERNELS.md "Fused decode
  // step"): forward_step's eager token loop 42.8 vs 70.4 us a step; decode() -- the step
  // Decoder captures in a CUDA graph -- with its four kernels launched to overlap (below),
  // 12.0-12.2 us a step against 17.2 unfused (11.2 vs 15.9 when 16 steps are chained in a
  // graph; round 4, d1e202c).
  // set_fused_decode(on) sets both.
  void set_fused_decode(bool on) { fused_eager_ = fused_graph_ = on; }
  bool fused_decode() const { return fused_eager_ && fused_graph_; }
  // decode()'s kernels (in_proj GEMV, the two fused kernels, out_proj GEMV) with Hopper
  // programmatic dependent launch: each starts while the one before drains and loads its
  // weights meanwhile (kernels/common/launch.cuh). Results are the same bit for bit.
  void set_overlap_launches(bool on) { overlap_graph_ = on; }

  torch::nn::Linear in_proj{nullptr};   // (2E, C), no bias
  torch::Tensor conv1d_weight;          // (E, K)
  torch::Tensor conv1d_bias;            // (E)
  torch::nn::Linear x_proj{nullptr};    // (R + 2N, E), no bias
  torch::nn::Linear dt_proj{nullptr};   // (E, R), with bias (the scan's delta_bias)
  torch::Tensor A_log;                  // (E, N) fp32
  torch::Tensor D;                      // (E) fp32
  torch::nn::Linear out_proj{nullptr};  // (C, E), no bias

 private:
  torch::Tensor A_decode_;  // prepare_decode()
  // x (B, E, T) post-conv -> (dt (B, E, T), Bm (B, N, T), Cm (B, N, T)).
  std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> ssm_inputs(const torch::Tensor& x);

  int64_t E_, N_, K_, R_;
  double dt_min_, dt_max_, dt_init_floor_;
  bool use_kernels_ = true;
  bool fused_eager_ = true;   // forward_step's per-token loop
  bool fused_graph_ = true;    // decode()
  bool overlap_graph_ = true;  // decode()
};
TORCH_MODULE(MambaMixer);

}  // namespace hylab
