// `hylab bench kernels [--json FILE]`: times our Mamba-path kernels on the current GPU at
// the shapes of issue 5 (and issue 12's long context: --long_context) (CUDA events, warm-up, median of --reps runs) and prints JSON:
//   {"commit", "date", "gpu", "copy_tb_per_s", "results": [{"kernel", "shape", "pass",
//    "dtype", "ms", "tb_per_s"}]}
// The scan is timed with its default kernel variants ("selective_scan"); with --scan_only
// also with every variant explicitly ("selective_scan/<variant name>", e.g.
// selective_scan/v2_seg8_defer, selective_scan/fwd_v2_tile16; see bench_scan).
// tb_per_s = bytes that must move (each input read once, each output written once) / time;
// copy_tb_per_s is a device-to-device copy on the same GPU (bytes read + written), the
// ceiling to compare with. Layer records (matmul-bound) carry tb_per_s = null.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "cli/command.h"
#include "common/bench_stamp.h"
#include "common/check.h"

#if HYLAB_CUDA_KERNELS
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <utility>
#include <vector>

#include "model/compat.h"
#include "kernels/selective_scan/selective_scan.h"
#include "model/cuda_ops.h"
#endif

namespace hylab::cli {
namespace {

struct BenchOptions {
  std::string json_path;
  int reps = 20;
  int warmup = 3;
  bool skip_layers = false;
  bool quick = false;  // d12 scan and the conv only (for profilers)
  bool scan_only = false;  // the d12/d20/long scan shapes only (every kernel variant)
  bool gemv_only = false;
  bool long_context = false;  // only the long-context scan and layer, split scan auto vs off
  bool decode_only = false;  // the Mamba decode step only (fused vs unfused)
  bool layer_only = false;   // the d768 Mamba and attention layers only (for profilers)
};

#if HYLAB_CUDA_KERNELS

using torch::Tensor;
using Json = nlohmann::json;

// Median over `reps` timings of fn() (each `inner` back-to-back calls) with CUDA events on
// the current stream, after `warmup` untimed calls.
double median_ms(const std::function<void()>& fn, const BenchOptions& o, int inner = 1) {
  cudaStream_t stream = at::cuda::getCurrentCUDAStream().stream();
  for (int i = 0; i < o.warmup; ++i) fn();
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  std::vector<float> ms;
  for (int r = 0; r < o.reps; ++r) {
    cudaEventRecord(start, stream);
    for (int i = 0; i < inner; ++i) fn();
    cudaEventRecord(stop, stream);
    cudaEventSynchronize(stop);
    float t = 0;
    cudaEventElapsedTime(&t, start, stop);
    ms.push_back(t / inner);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  const cudaError_t err = cudaGetLastError();
  HYLAB_CHECK(err == cudaSuccess, "CUDA error while timing: {}", cudaGetErrorString(err));
  std::sort(ms.begin(), ms.end());
  return ms.size() % 2 ? ms[ms.size() / 2] : 0.5 * (ms[ms.size() / 2 - 1] + ms[ms.size() / 2]);
}

Json record(const std::string& kernel, const std::string& shape, const std::string& pass,
            double ms, std::optional<double> bytes) {
  Json r = {{"kernel", kernel}, {"shape", shape}, {"pass", pass}, {"dtype", "bf16"}, {"ms", ms}};
  r["tb_per_s"] = bytes ? Json(*bytes / (ms * 1e-3) / 1e12) : Json(nullptr);
  std::fprintf(stderr, "  %-18s %-22s %-8s %9.4f ms", kernel.c_str(), shape.c_str(),
               pass.c_str(), ms);
  if (bytes) std::fprintf(stderr, "  %6.3f TB/s", *bytes / (ms * 1e-3) / 1e12);
  std::fprintf(stderr, "\n");
  return r;
}

std::string dims(std::initializer_list<int64_t> d) {
  std::string s;
  for (int64_t v : d) s += (s.empty() ? "" : "x") + std::to_string(v);
  return s;
}

const auto kCuda = torch::TensorOptions().device(torch::kCUDA);
const auto kBf16 = kCuda.dtype(torch::kBFloat16);
const auto kF32 = kCuda.dtype(torch::kFloat32);

double copy_tb_per_s(const BenchOptions& o) {
  const int64_t n = int64_t{1} << 30;  // 1 GiB each way
  Tensor src = torch::randint(0, 255, {n}, kCuda.dtype(torch::kUInt8));
  Tensor dst = torch::empty_like(src);
  const double ms = median_ms([&] { dst.copy_(src); }, o);
  return 2.0 * n / (ms * 1e-3) / 1e12;
}

struct ScanTensors {
  Tensor u, delta, A, Bm, Cm, D, z, bias;
};

ScanTensors scan_inputs(int64_t B, int64_t E, int64_t T, int64_t N, bool grad) {
  ScanTensors s;
  s.u = torch::randn({B, E, T}, kBf16);
  s.delta = torch::randn({B, E, T}, kBf16) * 0.5 - 1.0;
  s.A = -(torch::rand({E, N}, kF32) + 0.5) * torch::arange(1, N + 1, kF32).view({1, N});
  s.Bm = torch::randn({B, N, T}, kBf16);
  s.Cm = torch::randn({B, N, T}, kBf16);
  s.D = torch::randn({E}, kF32);
  s.z = torch::randn({B, E, T}, kBf16);
  s.bias = torch::rand({E}, kF32) * 3.0 - 3.0;
  if (grad) {
    for (Tensor* t : {&s.u, &s.delta, &s.A, &s.Bm, &s.Cm, &s.D, &s.z, &s.bias}) {
      t->requires_grad_(true);
    }
  }
  return s;
}

// kernel: the record's name ("selective_scan", or "selective_scan_nosplit" for the split
// scan forced off, see bench_long_context), for the default kernel variants. With
// all_variants, every forward and backward kernel variant is also timed explicitly
// (selective_scan.h): records named kernel + "/" + the variant's name (forward ones with a
// "fwd_" prefix), carrying "fwd_variant" or "bwd_variant" (the process setting on the
// default's records: -1 = the kernels' automatic default);
// fwd+bwd and bwd records use the default forward.
void bench_scan(int64_t B, int64_t E, int64_t T, int64_t N, bool with_fwd_only,
                const BenchOptions& o, Json& results,
                const std::string& kernel = "selective_scan", bool all_variants = false) {
  namespace hk = hylab::kernels;
  ScanTensors s = scan_inputs(B, E, T, N, true);
  const Tensor dout = torch::randn({B, E, T}, kBf16);
  const double bet = 2.0 * B * E * T, bnt = 2.0 * B * N * T;  // bytes of one bf16 tensor
  const std::string shape = dims({B, E, T, N});
  auto fwd = [&] {
    return hylab::cuda_ops::selective_scan(s.u, s.delta, s.A, s.Bm, s.Cm, s.D, s.z, s.bias,
                                           true);
  };
  const int saved_fwd = hylab::cuda_ops::scan_fwd_variant();
  const int saved_bwd = hylab::cuda_ops::scan_bwd_variant();
  for (int v = -1; with_fwd_only && v < (all_variants ? hk::kScanFwdVariants : 0); ++v) {
    hylab::cuda_ops::set_scan_fwd_variant(v < 0 ? saved_fwd : v);  // -1: the process setting
    const std::string name =
        v < 0 ? kernel : kernel + "/fwd_" + hk::selective_scan_fwd_variant_name(v);
    // The training forward (grad enabled: saves the chunk states for the backward).
    const double ms = median_ms([&] { fwd(); }, o);
    Json r = record(name, shape, "fwd", ms, 4 * bet + 2 * bnt);
    r["fwd_variant"] = v < 0 ? saved_fwd : v;
    results.push_back(r);
  }
  hylab::cuda_ops::set_scan_fwd_variant(saved_fwd);
  const std::vector<Tensor> wrt = {s.u, s.delta, s.A, s.Bm, s.Cm, s.D, s.z, s.bias};
  for (int v = -1; v < (all_variants ? hk::kScanBwdVariants : 0); ++v) {
    hylab::cuda_ops::set_scan_bwd_variant(v < 0 ? saved_bwd : v);  // -1: the process setting
    const std::string name =
        v < 0 ? kernel : kernel + "/" + hk::selective_scan_bwd_variant_name(v);
    const double ms = median_ms(
        [&] {
          Tensor y = fwd();
          torch::autograd::grad({y}, wrt, {dout});
        },
        o);
    // fwd: u, delta, z, Bm, Cm in, y out; bwd: u, delta, z, Bm, Cm, dout in; du, ddelta, dz,
    // dB, dC out.
    Json r = record(name, shape, "fwd+bwd", ms, 11 * bet + 6 * bnt);
    r["bwd_variant"] = v < 0 ? saved_bwd : v;
    results.push_back(r);
    // The backward alone (autograd's call into the kernels: glue, scan bwd, partial sums)
    // on one retained graph.
    const Tensor y = fwd();
    const double bwd_ms =
        median_ms([&] { torch::autograd::grad({y}, wrt, {dout}, /*retain_graph=*/true); }, o);
    r = record(name, shape, "bwd", bwd_ms, 7 * bet + 4 * bnt);
    r["bwd_variant"] = v < 0 ? saved_bwd : v;
    results.push_back(r);
  }
  hylab::cuda_ops::set_scan_bwd_variant(saved_bwd);
}

void bench_conv(int64_t B, int64_t E, int64_t T, int64_t K, const BenchOptions& o,
                Json& results) {
  Tensor x = torch::randn({B, E, T}, kBf16).requires_grad_(true);
  Tensor w = (torch::randn({E, K}, kF32) * 0.5).requires_grad_(true);
  Tensor b = (torch::randn({E}, kF32) * 0.5).requires_grad_(true);
  const Tensor dout = torch::randn({B, E, T}, kBf16);
  const double bet = 2.0 * B * E * T;
  const std::string shape = dims({B, E, T, K});
  auto fwd = [&] { return hylab::cuda_ops::causal_conv1d(x, w, b, true); };
  double ms = median_ms([&] { fwd(); }, o);
  results.push_back(record("causal_conv1d", shape, "fwd", ms, 2 * bet));
  ms = median_ms(
      [&] {
        Tensor y = fwd();
        torch::autograd::grad({y}, {x, w, b}, {dout});
      },
      o);
  results.push_back(record("causal_conv1d", shape, "fwd+bwd", ms, 5 * bet));
}

// One Mamba (v1) mixer, written from our ops: in_proj -> conv+SiLU -> x_proj -> dt_proj ->
// selective scan (softplus, D, z gate) -> out_proj. Weights bf16; A, D, dt_bias fp32.
struct MambaLayer {
  int64_t C, E, N = 16, K = 4, R;
  Tensor W_in, conv_w, conv_b, W_x, W_dt, dt_bias, A, D, W_out;

  explicit MambaLayer(int64_t d_model) : C(d_model), E(2 * d_model), R((d_model + 15) / 16) {
    const double s = 1.0 / std::sqrt(static_cast<double>(C));
    W_in = (torch::randn({2 * E, C}, kF32) * s).to(torch::kBFloat16);
    conv_w = torch::randn({E, K}, kF32) * 0.5;
    conv_b = torch::zeros({E}, kF32);
    W_x = (torch::randn({R + 2 * N, E}, kF32) / std::sqrt(static_cast<double>(E))).to(torch::kBFloat16);
    W_dt = (torch::randn({E, R}, kF32) / std::sqrt(static_cast<double>(R))).to(torch::kBFloat16);
    dt_bias = torch::rand({E}, kF32) * 3.0 - 5.0;
    A = -torch::arange(1, N + 1, kF32).repeat({E, 1});
    D = torch::ones({E}, kF32);
    W_out = (torch::randn({C, E}, kF32) / std::sqrt(static_cast<double>(E))).to(torch::kBFloat16);
  }
  std::vector<Tensor> params() { return {W_in, conv_w, conv_b, W_x, W_dt, dt_bias, A, D, W_out}; }
  void requires_grad() {
    for (Tensor& p : params()) p.requires_grad_(true);
  }

  // Same layout as model/mamba.cpp: every tensor the kernels see has unit stride along T,
  // so the glue makes no layout copies. in_proj is one GEMM into (2E, B*T) (as
  // mamba_simple); x_proj, dt_proj and out_proj are channel-major bmm's with the weight
  // broadcast over B.
  Tensor forward(const Tensor& h) {  // (B, T, C) -> (B, T, C)
    const int64_t B = h.size(0), T = h.size(1);
    const Tensor xz = torch::mm(W_in, h.reshape({B * T, C}).t()).view({2 * E, B, T});
    const auto xzs = xz.split(E, 0);                                   // (E, B, T) each
    const Tensor x = xzs[0].permute({1, 0, 2}), z = xzs[1].permute({1, 0, 2});  // (B, E, T)
    const Tensor xc = hylab::cuda_ops::causal_conv1d(x, conv_w, conv_b, true);  // (B, E, T)
    const Tensor x_dbl = torch::bmm(W_x.unsqueeze(0).expand({B, -1, -1}), xc);  // (B, R+2N, T)
    const Tensor delta =
        torch::bmm(W_dt.unsqueeze(0).expand({B, -1, -1}), x_dbl.narrow(1, 0, R));  // (B, E, T)
    const Tensor Bm = x_dbl.narrow(1, R, N), Cm = x_dbl.narrow(1, R + N, N);    // (B, N, T)
    const Tensor y = hylab::cuda_ops::selective_scan(xc, delta, A, Bm, Cm, D, z, dt_bias, true);
    return torch::bmm(W_out.unsqueeze(0).expand({B, -1, -1}), y).transpose(1, 2).contiguous();
  }

  // The layout this bench used up to ff955ca (Linear-style matmuls on transposed views: the
  // glue copies x, z, delta, Bm, Cm and the scan's incoming gradient). Timed beside forward()
  // and printed to stderr only, so one run shows what the layout costs.
  Tensor forward_transposed(const Tensor& h) {
    const Tensor xz = torch::matmul(W_in, h.transpose(1, 2));  // (B, 2E, T), stride 2E along T
    const Tensor x = xz.narrow(1, 0, E), z = xz.narrow(1, E, E);
    const Tensor xc = hylab::cuda_ops::causal_conv1d(x, conv_w, conv_b, true);
    const Tensor x_dbl = torch::matmul(xc.transpose(1, 2), W_x.t());  // (B, T, R + 2N)
    const Tensor delta = torch::matmul(W_dt, x_dbl.narrow(2, 0, R).transpose(1, 2));
    const Tensor Bm = x_dbl.narrow(2, R, N).transpose(1, 2);
    const Tensor Cm = x_dbl.narrow(2, R + N, N).transpose(1, 2);
    const Tensor y = hylab::cuda_ops::selective_scan(xc, delta, A, Bm, Cm, D, z, dt_bias, true);
    return torch::matmul(y.transpose(1, 2), W_out.t());
  }
};

// Causal self-attention layer: fused qkv projection, SDPA (causal), output projection.
struct AttentionLayer {
  int64_t C, H, Dh = 128;
  Tensor W_qkv, W_o;
  explicit AttentionLayer(int64_t d_model) : C(d_model), H(d_model / 128) {
    const double s = 1.0 / std::sqrt(static_cast<double>(C));
    W_qkv = (torch::randn({3 * C, C}, kF32) * s).to(torch::kBFloat16);
    W_o = (torch::randn({C, C}, kF32) * s).to(torch::kBFloat16);
  }
  Tensor forward(const Tensor& h) {
    const int64_t B = h.size(0), T = h.size(1);
    const Tensor qkv = torch::matmul(h, W_qkv.t()).view({B, T, 3, H, Dh}).permute({2, 0, 3, 1, 4});
#if TORCH_VERSION_MAJOR >= 2
    const Tensor a = at::scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], {}, 0.0, true);
#else
    HYLAB_FAIL("attention_layer needs LibTorch >= 2.0 (scaled_dot_product_attention)");
    const Tensor a = qkv[0];
#endif
    return torch::matmul(a.transpose(1, 2).reshape({B, T, C}), W_o.t());
  }
};

template <typename Layer, typename Fwd>
double layer_fwd_bwd_ms(Layer& layer, std::vector<Tensor> params, int64_t B, int64_t T,
                        const BenchOptions& o, Fwd&& fwd) {
  for (Tensor& p : params) p.requires_grad_(true);
  Tensor h = torch::randn({B, T, layer.C}, kBf16).requires_grad_(true);
  const Tensor dout = torch::randn({B, T, layer.C}, kBf16);
  std::vector<Tensor> wrt = params;
  wrt.push_back(h);
  return median_ms(
      [&] {
        Tensor out = fwd(h);
        torch::autograd::grad({out}, wrt, {dout});
      },
      o);
}

void bench_layers(int64_t d_model, int64_t B, int64_t T, const BenchOptions& o, Json& results) {
  const std::string shape = dims({B, T, d_model});
  {
    MambaLayer m(d_model);
    results.push_back(record("mamba_layer", shape, "fwd+bwd",
                             layer_fwd_bwd_ms(m, m.params(), B, T, o,
                                              [&](const Tensor& h) { return m.forward(h); }),
                             std::nullopt));
    if (!o.layer_only) {
      const double old_ms = layer_fwd_bwd_ms(
          m, m.params(), B, T, o, [&](const Tensor& h) { return m.forward_transposed(h); });
      std::fprintf(stderr, "  (mamba layer, transposed layout of ff955ca: %.4f ms)\n", old_ms);
    }
  }
  {
    AttentionLayer a(d_model);
    results.push_back(record("attention_layer", shape, "fwd+bwd",
                             layer_fwd_bwd_ms(a, {a.W_qkv, a.W_o}, B, T, o,
                                              [&](const Tensor& h) { return a.forward(h); }),
                             std::nullopt));
  }
}

// Long context at small batch (issue 12): the scan at (B, E, T, N) = (2, 1536, 32768, 16)
// and (1, 2560, 65536, 16), fwd and fwd+bwd, and the Mamba layer (d768) at B2 x T32768, each
// with the split scan automatic ("selective_scan", "mamba_layer") and forced off
// ("..._nosplit"), so one run shows the gain. The splits chosen go to stderr.
//
// sweep (--long_context only): also the scan with S forced to each of a range of values, at
// B2 x T32768 and at B8 x T8192 (192 blocks, which the automatic choice leaves unsplit),
// records "selective_scan_splits<S>": checks the automatic choice's wave model.
void bench_long_context(const BenchOptions& o, Json& results, bool sweep) {
  struct Shape {
    int64_t B, E, T, N;
  };
  for (const Shape& sh : {Shape{2, 1536, 32768, 16}, Shape{1, 2560, 65536, 16}}) {
    hylab::cuda_ops::set_scan_splits(0);
    std::fprintf(stderr, "  (automatic splits for %s: fwd %d, bwd %d)\n",
                 dims({sh.B, sh.E, sh.T, sh.N}).c_str(),
                 hylab::cuda_ops::scan_splits_for(sh.B, sh.E, sh.T, sh.N, false),
                 hylab::cuda_ops::scan_splits_for(sh.B, sh.E, sh.T, sh.N, true));
    bench_scan(sh.B, sh.E, sh.T, sh.N, true, o, results);
    hylab::cuda_ops::set_scan_splits(1);
    bench_scan(sh.B, sh.E, sh.T, sh.N, true, o, results, "selective_scan_nosplit");
  }
  if (!o.skip_layers) {
    const int64_t B = 2, T = 32768, d_model = 768;
    MambaLayer m(d_model);
    for (const int splits : {0, 1}) {
      hylab::cuda_ops::set_scan_splits(splits);
      const double ms = layer_fwd_bwd_ms(m, m.params(), B, T, o,
                                         [&](const Tensor& h) { return m.forward(h); });
      results.push_back(record(splits == 0 ? "mamba_layer" : "mamba_layer_nosplit",
                               dims({B, T, d_model}), "fwd+bwd", ms, std::nullopt));
    }
  }
  if (sweep) {
    struct Sweep {
      int64_t B, E, T, N;
      std::vector<int> splits;
    };
    const Sweep sweeps[] = {{2, 1536, 32768, 16, {4, 6, 8, 11, 16, 22, 32, 64}},
                            {8, 1536, 8192, 16, {1, 2, 3, 4, 6, 8}}};
    for (const Sweep& sw : sweeps) {
      for (const int splits : sw.splits) {
        hylab::cuda_ops::set_scan_splits(splits);
        bench_scan(sw.B, sw.E, sw.T, sw.N, true, o, results,
                   "selective_scan_splits" + std::to_string(splits));
      }
    }
  }
  hylab::cuda_ops::set_scan_splits(0);
}

// Median ms of one step() replayed from a CUDA graph (100 replays back to back per timing, so
// the launch gaps inside the step count and the gaps between replays hardly do); *eager_ms
// gets the same without the graph.
double graph_step_ms(const std::function<void()>& step, const BenchOptions& o, double* eager_ms) {
  *eager_ms = median_ms(step, o, 100);
  c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool();
  const c10::cuda::CUDAStreamGuard guard(side);
  for (int i = 0; i < 5; ++i) step();  // warm up cuBLAS etc. on the capture stream
  side.synchronize();
  at::cuda::CUDAGraph graph;
  graph.capture_begin();
  step();
  graph.capture_end();
  return median_ms([&] { graph.replay(); }, o, 100);
}

// One decode step of one Mamba layer (batch `B`) captured in a CUDA graph and replayed, three
// ways (records "mamba_decode_step" with pass):
//   step     the chain this bench has timed since issue 5: cuBLAS matmuls for the four
//            projections + our conv and state updates (6 kernels; no norm, no residual)
//   unfused  model/mamba.cpp's decode() with fused_decode off: rms_norm+in_proj GEMV, conv
//            update, x_proj GEMV, dt_proj GEMV, state update, out_proj+residual GEMV (6)
//   fused    the same with mamba_decode_core: in_proj GEMV, conv+x_proj, dt_proj+state
//            update, out_proj GEMV (4 kernels)
//   fused_pdl  fused, all four kernels launched to overlap (programmatic dependent launch):
//            what decode() runs by default
//   unfused_chain16, fused_pdl_chain16  16 steps in one graph, each step's output the next
//            one's input (as a model's layers follow each other): ms per step
void bench_decode(int64_t d_model, int64_t B, const BenchOptions& o, Json& results) {
  torch::NoGradGuard ng;
  MambaLayer m(d_model);
  const int64_t E = m.E, N = m.N, K = m.K, R = m.R;
  Tensor h = torch::randn({B, d_model}, kBf16);
  Tensor conv_state = torch::zeros({B, E, K}, kBf16);
  Tensor ssm_state = torch::zeros({B, E, N}, kF32);
  Tensor out;
  auto step_cublas = [&] {
    const Tensor xz = torch::matmul(h, m.W_in.t());  // (B, 2E)
    const Tensor x = xz.narrow(1, 0, E), z = xz.narrow(1, E, E);
    const Tensor xc = hylab::cuda_ops::causal_conv1d_update(x, conv_state, m.conv_w, m.conv_b, true);
    const Tensor x_dbl = torch::matmul(xc, m.W_x.t());  // (B, R + 2N)
    const Tensor dt = torch::matmul(x_dbl.narrow(1, 0, R), m.W_dt.t());  // (B, E)
    const Tensor y = hylab::cuda_ops::selective_state_update(
        ssm_state, xc, dt, m.A, x_dbl.narrow(1, R, N), x_dbl.narrow(1, R + N, N), m.D, z,
        m.dt_bias, true);
    out = torch::matmul(y, m.W_out.t());
  };
  hylab::cuda_ops::GemvFusion norm, residual;
  norm.norm_eps = compat::rms_norm_eps(torch::kBFloat16);
  residual.residual = h;
  auto in_proj = [&] { return hylab::cuda_ops::gemv(h, m.W_in, norm); };  // (B, 2E)
  auto step_unfused = [&] {
    const Tensor xz = in_proj();
    const Tensor x = xz.narrow(1, 0, E), z = xz.narrow(1, E, E);
    const Tensor xc = hylab::cuda_ops::causal_conv1d_update(x, conv_state, m.conv_w, m.conv_b, true);
    const Tensor x_dbl = hylab::cuda_ops::gemv(xc, m.W_x);                     // (B, R + 2N)
    const Tensor dt = hylab::cuda_ops::gemv(x_dbl.narrow(1, 0, R), m.W_dt);    // (B, E)
    const Tensor y = hylab::cuda_ops::selective_state_update(
        ssm_state, xc, dt, m.A, x_dbl.narrow(1, R, N), x_dbl.narrow(1, R + N, N), m.D, z,
        m.dt_bias, true);
    out = hylab::cuda_ops::gemv(y, m.W_out, residual);
  };
  auto step_fused = [&] {
    const Tensor xz = in_proj();
    const Tensor y = hylab::cuda_ops::mamba_decode_core(
        xz.narrow(1, 0, E), xz.narrow(1, E, E), conv_state, ssm_state, m.conv_w, m.conv_b, m.W_x,
        m.W_dt, m.dt_bias, m.A, m.D);
    out = hylab::cuda_ops::gemv(y, m.W_out, residual);
  };
  // model/mamba.cpp's decode() as it runs by default: fused, all four kernels launched to
  // overlap (Hopper programmatic dependent launch). Returns the step's output (B, C).
  hylab::cuda_ops::GemvFusion norm_pdl = norm;
  norm_pdl.overlap_launches = true;
  auto fused_pdl = [&](const Tensor& in) {
    const Tensor xz = hylab::cuda_ops::gemv(in, m.W_in, norm_pdl);
    const Tensor y = hylab::cuda_ops::mamba_decode_core(
        xz.narrow(1, 0, E), xz.narrow(1, E, E), conv_state, ssm_state, m.conv_w, m.conv_b, m.W_x,
        m.W_dt, m.dt_bias, m.A, m.D, /*overlap_launches=*/true);
    hylab::cuda_ops::GemvFusion res;
    res.residual = in;
    res.overlap_launches = true;
    return hylab::cuda_ops::gemv(y, m.W_out, res);
  };
  auto step_fused_pdl = [&] { out = fused_pdl(h); };
  // kChain steps captured in one graph, each step's output the next one's input, as the
  // layers of a model follow each other in the Decoder's graph: the time per step without
  // the graph launch that a single-step graph pays for one layer. Same states every step
  // (the work does not change).
  constexpr int kChain = 16;
  auto chain_unfused = [&] {
    Tensor cur = h;
    for (int i = 0; i < kChain; ++i) {
      const Tensor xz = hylab::cuda_ops::gemv(cur, m.W_in, norm);
      const Tensor x = xz.narrow(1, 0, E), z = xz.narrow(1, E, E);
      const Tensor xc =
          hylab::cuda_ops::causal_conv1d_update(x, conv_state, m.conv_w, m.conv_b, true);
      const Tensor x_dbl = hylab::cuda_ops::gemv(xc, m.W_x);
      const Tensor dt = hylab::cuda_ops::gemv(x_dbl.narrow(1, 0, R), m.W_dt);
      const Tensor y = hylab::cuda_ops::selective_state_update(
          ssm_state, xc, dt, m.A, x_dbl.narrow(1, R, N), x_dbl.narrow(1, R + N, N), m.D, z,
          m.dt_bias, true);
      hylab::cuda_ops::GemvFusion res;
      res.residual = cur;
      cur = hylab::cuda_ops::gemv(y, m.W_out, res);
    }
    out = cur;
  };
  auto chain_fused_pdl = [&] {
    Tensor cur = h;
    for (int i = 0; i < kChain; ++i) cur = fused_pdl(cur);
    out = cur;
  };
  // Bytes: every weight once, conv/ssm states read and written, h in, out out.
  const double weight_bytes =
      2.0 * (2 * E * d_model + (R + 2 * N) * E + E * R + d_model * E) + 4.0 * (E * K + E * N + 3 * E);
  const double state_bytes = 2.0 * (2.0 * B * E * K) + 2.0 * (4.0 * B * E * N);
  const double bytes = weight_bytes + state_bytes + 4.0 * B * d_model;
  const std::pair<const char*, std::function<void()>> variants[] = {
      {"step", step_cublas}, {"unfused", step_unfused}, {"fused", step_fused},
      {"fused_pdl", step_fused_pdl}};
  for (const auto& [pass, step] : variants) {
    double eager_ms = 0;
    const double ms = graph_step_ms(step, o, &eager_ms);
    results.push_back(record("mamba_decode_step", dims({B, d_model}), pass, ms, bytes));
    std::fprintf(stderr, "  (decode step %s without a graph: %.4f ms)\n", pass, eager_ms);
  }
  const std::pair<const char*, std::function<void()>> chains[] = {
      {"unfused_chain16", chain_unfused}, {"fused_pdl_chain16", chain_fused_pdl}};
  for (const auto& [pass, chain] : chains) {
    double eager_ms = 0;
    const double ms = graph_step_ms(chain, o, &eager_ms) / kChain;
    results.push_back(record("mamba_decode_step", dims({B, d_model}), pass, ms, bytes));
    std::fprintf(stderr, "  (decode step %s without a graph: %.4f ms a step)\n", pass,
                 eager_ms / kChain);
  }

  // The parts on their own ("mamba_decode_part", ms per call): kCalls calls of one op
  // captured back to back in a graph, so each call pays what it pays inside the step (its
  // run time and the gap before the next dependent launch). Inputs are fixed tensors of the
  // step's shapes (states evolve from call to call, which does not change the work).
  constexpr int kCalls = 20;
  const Tensor xz0 = in_proj();
  const Tensor x0 = xz0.narrow(1, 0, E), z0 = xz0.narrow(1, E, E);
  const Tensor xc0 = hylab::cuda_ops::causal_conv1d_update(x0, conv_state, m.conv_w, m.conv_b, true);
  const Tensor x_dbl0 = hylab::cuda_ops::gemv(xc0, m.W_x);
  const Tensor dt0 = hylab::cuda_ops::gemv(x_dbl0.narrow(1, 0, R), m.W_dt);
  const Tensor y0 = torch::randn({B, E}, kBf16);
  const std::pair<const char*, std::function<void()>> parts[] = {
      {"in_proj_norm_gemv", [&] { in_proj(); }},
      {"conv_update", [&] { hylab::cuda_ops::causal_conv1d_update(x0, conv_state, m.conv_w, m.conv_b, true); }},
      {"x_proj_gemv", [&] { hylab::cuda_ops::gemv(xc0, m.W_x); }},
      {"dt_proj_gemv", [&] { hylab::cuda_ops::gemv(x_dbl0.narrow(1, 0, R), m.W_dt); }},
      {"state_update",
       [&] {
         hylab::cuda_ops::selective_state_update(ssm_state, xc0, dt0, m.A, x_dbl0.narrow(1, R, N),
                                                 x_dbl0.narrow(1, R + N, N), m.D, z0, m.dt_bias, true);
       }},
      {"out_proj_res_gemv", [&] { hylab::cuda_ops::gemv(y0, m.W_out, residual); }},
      {"fused_core_2_kernels",
       [&] {
         hylab::cuda_ops::mamba_decode_core(x0, z0, conv_state, ssm_state, m.conv_w, m.conv_b, m.W_x,
                                            m.W_dt, m.dt_bias, m.A, m.D);
       }},
  };
  for (const auto& [name, fn] : parts) {
    c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool();
    const c10::cuda::CUDAStreamGuard guard(side);
    for (int i = 0; i < 3; ++i) fn();
    side.synchronize();
    at::cuda::CUDAGraph graph;
    graph.capture_begin();
    for (int i = 0; i < kCalls; ++i) fn();
    graph.capture_end();
    const double ms = median_ms([&] { graph.replay(); }, o) / kCalls;
    results.push_back(record("mamba_decode_part", dims({B, d_model}), name, ms, std::nullopt));
  }
}

// The decode GEMV (kernels/gemv) at batch 1 on d20's decode matrices, with 1, 2, 4 and 8
// warps per output column: calls captured in a CUDA graph and replayed, as a decode step
// runs them (launch gaps included), cycling over copies of the weight that together exceed
// the L2 cache twice, so the weights stream from HBM as in a real step. Bytes: the weight
// and x read once, y written once.
void bench_gemv(const BenchOptions& o, Json& results) {
  torch::NoGradGuard ng;
  struct Shape {
    const char* name;
    int64_t K, N;
  };
  const Shape shapes[] = {{"qkv", 1280, 3840}, {"attn_proj", 1280, 1280}, {"mlp_fc", 1280, 5120},
                          {"mlp_proj", 5120, 1280}, {"lm_head", 1280, 32768}};
  const int64_t l2_bytes = at::cuda::getCurrentDeviceProperties()->l2CacheSize;
  for (const Shape& sh : shapes) {
    const int64_t w_bytes = 2 * sh.N * sh.K;
    const int copies = static_cast<int>(std::max<int64_t>(2, (2 * l2_bytes + w_bytes - 1) / w_bytes));
    const int kCalls = std::max(20, copies);
    std::vector<Tensor> ws;
    for (int i = 0; i < copies; ++i) ws.push_back(torch::randn({sh.N, sh.K}, kBf16));
    const Tensor x = torch::randn({1, sh.K}, kBf16);
    for (int wpr : {1, 2, 4, 8}) {
      hylab::cuda_ops::GemvFusion f;
      f.warps_per_row = wpr;
      Tensor y;
      c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool();
      const c10::cuda::CUDAStreamGuard guard(side);
      for (int i = 0; i < 3; ++i) y = hylab::cuda_ops::gemv(x, ws[i % copies], f);
      side.synchronize();
      at::cuda::CUDAGraph graph;
      graph.capture_begin();
      for (int i = 0; i < kCalls; ++i) y = hylab::cuda_ops::gemv(x, ws[i % copies], f);
      graph.capture_end();
      const double ms = median_ms([&] { graph.replay(); }, o) / kCalls;
      results.push_back(record("gemv_" + std::string(sh.name) + "_wpr" + std::to_string(wpr),
                               dims({1, sh.K, sh.N}), "call", ms,
                               2.0 * (sh.N * sh.K + sh.K + sh.N)));
    }
  }
}

void run_bench(const BenchOptions& o) {
  HYLAB_CHECK(torch::cuda::is_available(), "hylab bench kernels: no CUDA device is visible");
  HYLAB_CHECK(o.reps >= 1 && o.warmup >= 0, "hylab bench kernels: --reps must be >= 1, --warmup >= 0");
  const c10::cuda::CUDAGuard device(0);
  Json doc;
  doc["commit"] = bench_commit();
  doc["date"] = utc_timestamp();
  doc["gpu"] = at::cuda::getCurrentDeviceProperties()->name;
  std::fprintf(stderr, "hylab bench kernels on %s (median of %d, %d warm-up)\n",
               doc["gpu"].get<std::string>().c_str(), o.reps, o.warmup);
  doc["copy_tb_per_s"] = copy_tb_per_s(o);
  std::fprintf(stderr, "  device-to-device copy: %.3f TB/s\n", doc["copy_tb_per_s"].get<double>());
  Json results = Json::array();
  if (o.long_context) {
    bench_long_context(o, results, /*sweep=*/true);
  } else if (o.decode_only) {
    bench_decode(768, 1, o, results);
  } else if (o.layer_only) {
    bench_layers(768, 32, 2048, o, results);
  } else if (!o.quick && !o.scan_only) {
    bench_gemv(o, results);
  }
  if (!o.gemv_only && !o.long_context && !o.decode_only && !o.layer_only) {
    // Every kernel variant only with --scan_only (the full run keeps its records and runs no
    // unmeasured kernel).
    bench_scan(32, 1536, 2048, 16, true, o, results, "selective_scan", o.scan_only);  // d12
    if (!o.quick) {
      bench_scan(16, 2560, 2048, 16, true, o, results, "selective_scan", o.scan_only);  // d20
      bench_scan(8, 2048, 8192, 16, true, o, results, "selective_scan", o.scan_only);   // long
    }
    if (!o.scan_only) bench_conv(32, 1536, 2048, 4, o, results);
    if (!o.skip_layers && !o.quick && !o.scan_only) {
      bench_layers(768, 32, 2048, o, results);
      bench_layers(1280, 16, 2048, o, results);
    }
    if (!o.quick && !o.scan_only) bench_decode(768, 1, o, results);
    if (!o.quick && !o.scan_only) bench_long_context(o, results, /*sweep=*/false);
  }
  doc["results"] = results;
  const std::string text = doc.dump(2);
  std::printf("%s\n", text.c_str());
  if (!o.json_path.empty()) {
    std::ofstream f(o.json_path);
    HYLAB_CHECK(f.good(), "hylab bench kernels: cannot write --json {}", o.json_path);
    f << text << "\n";
  }
}

#else  // !HYLAB_CUDA_KERNELS

void run_bench(const BenchOptions&) {
  HYLAB_FAIL(
      "hylab bench kernels: this hylab was built without CUDA kernels (it needs LibTorch with "
      "CUDA and nvcc; see docs/KERNELS.md). Build on a GPU host, e.g. scripts/gpu.sh.");
}

#endif

void setup(CLI::App& root) {
  CLI::App* bench = group(root, "bench", "Benchmarks that print JSON");
  auto opts = std::make_shared<BenchOptions>();
  CLI::App* cmd = bench->add_subcommand(
      "kernels", "Time the Mamba-path CUDA kernels (scan, conv, decode step, layers) on this GPU");
  cmd->add_option(flag("json"), opts->json_path, "Also write the JSON to this file");
  cmd->add_option(flag("reps"), opts->reps, "Timed runs per measurement (median)")
      ->capture_default_str();
  cmd->add_option(flag("warmup"), opts->warmup, "Untimed runs first")->capture_default_str();
  cmd->add_flag(flag("skip_layers"), opts->skip_layers,
                "Skip the whole-layer (Mamba vs attention) measurements");
  cmd->add_flag(flag("quick"), opts->quick, "Only the d12 scan and the conv (for profilers)");
  cmd->add_flag(flag("scan_only"), opts->scan_only,
                "Only the selective scan at d12, d20 and long, timing every kernel variant");
  cmd->add_flag(flag("gemv_only"), opts->gemv_only,
                "Only the decode GEMV at d20's shapes, 1-8 warps per column");
  cmd->add_flag(flag("long_context"), opts->long_context,
                "Only the long-context scan (B2 T32768, B1 T65536) and Mamba layer (B2 T32768), "
                "split scan automatic vs off");
  cmd->add_flag(flag("layer_only"), opts->layer_only,
                "Only the Mamba and attention layers at d768, B32 x 2048, fwd+bwd (for profilers)");
  cmd->add_flag(flag("decode_only"), opts->decode_only,
                "Only the Mamba decode step (d768, batch 1): cuBLAS chain, unfused, fused");
  cmd->callback([opts] { run_bench(*opts); });
}

HYLAB_REGISTER_COMMAND("bench kernels", 80, setup);

}  // namespace
}  // namespace hylab::cli
