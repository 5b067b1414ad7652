// The fused Mamba decode step (see mamba_step.h): conv update + x_proj, then dt_proj + state
// update + conv-state roll. Both dtypes in this one .cu (the kernels are small).
#include <algorithm>
#include <string>

#include "kernels/common/cuda_check.h"
#include "kernels/common/device_utils.cuh"
#include "kernels/common/launch.cuh"
#include "kernels/decode/decode.h"
#include "kernels/decode/mamba_step.h"

namespace hylab::kernels {
namespace {

constexpr int kWarps = 8;          // kernel 1: 256 threads
constexpr int kLanesPerRow = 8;    // kernel 1: lanes sharing one x_proj weight row (a chunk each)
constexpr int kRowsPerPass = kWarps * 32 / kLanesPerRow;  // x_proj weight rows per block pass
constexpr int kPrefetchPasses = 4; // kernel 1: passes whose weight chunks load before the wait
constexpr int kMaxRows = 8;        // kernel 1: batch rows per block (more go to blockIdx.y)
constexpr int kConvItems = 2;      // kernel 1: conv channels per thread (kMaxRows * 64 / 256)
static_assert(kMaxRows <= kLanesPerRow, "lane m of a row group stores batch row m's partial");
constexpr int kSumBatch = 32;      // kernel 2: partial sums a thread loads at once
constexpr int kDtBatch = 16;       // kernel 2: dt_proj products a lane loads at once
constexpr int kStateThreads = 128;
constexpr int64_t kMaxSmem = 200 * 1024;  // H100/H200 allow 227 KB per block

// Channels of one kernel-1 block: one 16-byte chunk per lane of a row group (64 bf16, 32 fp32).
template <typename Elem>
__host__ __device__ constexpr int split_channels() {
  return kLanesPerRow * VecWidth<Elem>::kValue;
}
int splits(DType dtype, int dim) {
  const int ec = dtype == DType::kFloat32 ? split_channels<float>() : split_channels<bf16>();
  return (dim + ec - 1) / ec;
}

// The VecWidth<T> elements of a 16-byte chunk as floats, from registers (a reinterpret_cast
// of the chunk's address would put it on the stack).
__device__ __forceinline__ void unpack(const uint4& raw, float (&out)[4]) {
  out[0] = __uint_as_float(raw.x), out[1] = __uint_as_float(raw.y);
  out[2] = __uint_as_float(raw.z), out[3] = __uint_as_float(raw.w);
}
__device__ __forceinline__ void unpack(const uint4& raw, float (&out)[8]) {
  const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {  // bf16 -> fp32 is a 16-bit shift, exactly
    out[2 * i] = __uint_as_float(w[i] << 16);
    out[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}

// Rows a kernel-1 block holds: B rounded up to a power of two, at most 8.
int rows_per_block(int batch) {
  int r = 1;
  while (r < batch && r < kMaxRows) r *= 2;
  return r;
}

// Kernel 2's block covers kStateThreads / tpc consecutive (b, e) channels; the batch rows
// they touch, at most.
int state_block_rows(int batch, int dim, int tpc) {
  const int64_t channels = kStateThreads / tpc;
  return static_cast<int>(std::min<int64_t>(batch, (channels - 1) / dim + 2));
}

// Kernel 1. Block (s, by) owns channels [s * Ec, s * Ec + Ec) of rows [by * kRows, ...):
//   - the conv update of those channels (the same arithmetic as decode.cu's
//     conv_update_kernel, so x_conv is bit-identical to the unfused op), written to x_conv
//     and to shared memory, and the conv-state roll (drop the oldest input, append x): the
//     block is the only reader and writer of those channels' state;
//   - its share of x_proj: for every weight row j, the partial dot product over its Ec
//     channels, fp32, into partial[b, j, s]. Eight lanes share a weight row (one 16-byte
//     chunk each), so a warp takes four rows at a time and the block 32; the chunks of the
//     first kPrefetchPasses passes load before the wait for in_proj.
// Kernel 2 adds the partials of each (b, j) in order of s: fixed, so the result is the same
// every run.
template <typename Elem, typename State, int kRows>
__global__ void __launch_bounds__(32 * kWarps, 1)
    conv_xproj_kernel(const MambaStepParams p, bool vec) {
  constexpr int kVec = VecWidth<Elem>::kValue;
  constexpr int kEc = split_channels<Elem>();
  __shared__ __align__(16) Elem s_x[kRows * kEc];
  const int E = p.dim, K = p.width, J = p.dt_rank + 2 * p.dstate;
  const int S = gridDim.x, s = blockIdx.x;
  const int e0 = s * kEc, ec = min(kEc, E - e0);
  const int b0 = blockIdx.y * kRows, rows = min(kRows, p.batch - b0);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int sub = lane % kLanesPerRow;                           // this lane's chunk of a row
  const int row0 = warp * (32 / kLanesPerRow) + lane / kLanesPerRow;  // its row in a pass
  const Elem* __restrict__ W = static_cast<const Elem*>(p.x_proj_weight);
  const int passes = (J + kRowsPerPass - 1) / kRowsPerPass;
  const bool chunk_in = sub * kVec < ec;

  launch_dependents();  // kernel 2 may take the idle SMs and load its states meanwhile
  uint4 wpre[kPrefetchPasses];
#pragma unroll
  for (int q = 0; q < kPrefetchPasses; ++q) {
    const int j = q * kRowsPerPass + row0;
    wpre[q] = (vec && chunk_in && j < J)
                  ? __ldg(reinterpret_cast<const uint4*>(W + static_cast<int64_t>(j) * E + e0) + sub)
                  : make_uint4(0, 0, 0, 0);
  }
  // The conv's parameters (the glue turns the overlap off when it had to copy them).
  const int n_items = rows * ec;
  float cw[kConvItems][3], cw_last[kConvItems], cb[kConvItems];
#pragma unroll
  for (int i = 0; i < kConvItems; ++i) {
    const int t = threadIdx.x + i * blockDim.x;
    const bool in = t < n_items;
    const int e = e0 + (in ? t % ec : 0);
#pragma unroll
    for (int k = 0; k < 3; ++k) cw[i][k] = (in && k < K - 1) ? __ldg(p.conv_weight + e * K + k) : 0.f;
    cw_last[i] = in ? __ldg(p.conv_weight + e * K + K - 1) : 0.f;
    cb[i] = (in && p.conv_bias != nullptr) ? __ldg(p.conv_bias + e) : 0.f;
  }

  grid_dependency_wait();  // x is in_proj's output; the conv state may be the caller's write

  const Elem* __restrict__ xg = static_cast<const Elem*>(p.x);
  State* __restrict__ cs = static_cast<State*>(p.conv_state);
  Elem* __restrict__ xc_out = static_cast<Elem*>(p.x_conv);
  float xin[kConvItems], sv[kConvItems][3];
#pragma unroll
  for (int i = 0; i < kConvItems; ++i) {  // every load before any use: one trip to L2
    const int t = threadIdx.x + i * blockDim.x;
    if (t >= n_items) continue;
    const int m = t / ec, e = e0 + t % ec;
    const State* st = cs + (static_cast<int64_t>(b0 + m) * E + e) * K;
    xin[i] = to_float(xg[(b0 + m) * p.x_batch_stride + e]);
#pragma unroll
    for (int k = 0; k < 3; ++k) sv[i][k] = k < K - 1 ? to_float(st[k + 1]) : 0.f;
  }
#pragma unroll
  for (int i = 0; i < kConvItems; ++i) {
    const int t = threadIdx.x + i * blockDim.x;
    if (t >= n_items) continue;
    const int m = t / ec, el = t % ec, e = e0 + el;
    // decode.cu's conv_update_kernel, term for term: bias, the K-1 older inputs in order,
    // then x as the state stores it.
    float acc = cb[i];
#pragma unroll
    for (int k = 0; k < 3; ++k) {
      if (k < K - 1) acc = fmaf(cw[i][k], sv[i][k], acc);
    }
    const State x_st = from_float<State>(xin[i]);
    acc = fmaf(cw_last[i], to_float(x_st), acc);
    const Elem out = from_float<Elem>(silu(acc));
    s_x[m * kEc + el] = out;
    xc_out[static_cast<int64_t>(b0 + m) * E + e] = out;
    State* st = cs + (static_cast<int64_t>(b0 + m) * E + e) * K;
#pragma unroll
    for (int k = 0; k < 3; ++k) {
      if (k < K - 1) st[k] = from_float<State>(sv[i][k]);
    }
    st[K - 1] = x_st;
  }
  for (int t = threadIdx.x; t < kRows * kEc; t += blockDim.x) {  // rows past B, channels past E
    if (t / kEc >= rows || t % kEc >= ec) s_x[t] = from_float<Elem>(0.f);
  }
  __syncthreads();

  // x_proj's partials: row j's chunk `sub` times each batch row's chunk `sub` of x_conv,
  // summed over the row's eight lanes; lane m stores batch row m's.
  float* __restrict__ partial = p.x_proj_partial;
  auto pass = [&](int q, const uint4& raw) {
    const int j = q * kRowsPerPass + row0;
    float acc[kRows];
#pragma unroll
    for (int m = 0; m < kRows; ++m) acc[m] = 0.f;
    if (j < J && chunk_in) {
      float wv[kVec];
      if (vec) {
        unpack(raw, wv);
      } else {
#pragma unroll
        for (int i = 0; i < kVec; ++i) {
          const int el = sub * kVec + i;
          wv[i] = el < ec ? to_float(__ldg(W + static_cast<int64_t>(j) * E + e0 + el)) : 0.f;
        }
      }
#pragma unroll
      for (int m = 0; m < kRows; ++m) {
        float xv[kVec];
        unpack(*reinterpret_cast<const uint4*>(s_x + m * kEc + sub * kVec), xv);
#pragma unroll
        for (int i = 0; i < kVec; ++i) acc[m] = fmaf(wv[i], xv[i], acc[m]);
      }
    }
#pragma unroll
    for (int m = 0; m < kRows; ++m) {
      const float sum = group_sum<kLanesPerRow>(acc[m]);
      if (j < J && sub == m && m < rows) partial[(static_cast<int64_t>(b0 + m) * J + j) * S + s] = sum;
    }
  };
#pragma unroll
  for (int q = 0; q < kPrefetchPasses; ++q) {
    if (q < passes) pass(q, wpre[q]);  // the same for the whole block: the shuffles are safe
  }
  for (int q = kPrefetchPasses; q < passes; ++q) {
    const int j = q * kRowsPerPass + row0;
    pass(q, (vec && chunk_in && j < J)
                ? __ldg(reinterpret_cast<const uint4*>(W + static_cast<int64_t>(j) * E + e0) + sub)
                : make_uint4(0, 0, 0, 0));
  }
}

// Kernel 2: decode.cu's state_update_kernel with x = x_conv, delta computed here from
// dt_proj's weight and dt_low, and dt_low, Bm, Cm the sums of kernel 1's x_proj partials
// (each summed in order of s, then rounded to the activation dtype as the unfused
// x_proj's output is), which the block first adds up into shared memory for the rows it
// touches.
template <typename Elem, typename State>
__global__ void __launch_bounds__(kStateThreads) state_kernel(const MambaStepParams p, int tpc, int S) {
  extern __shared__ float s_dbl[];  // (rows this block touches, J)
  const int64_t gid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t ch = gid / tpc;  // b * E + e
  const int g = static_cast<int>(gid % tpc);
  const int64_t n_ch = static_cast<int64_t>(p.batch) * p.dim;
  const bool active = ch < n_ch;
  const int b = active ? static_cast<int>(ch / p.dim) : 0;
  const int e = active ? static_cast<int>(ch % p.dim) : 0;
  const int N = p.dstate, R = p.dt_rank, J = R + 2 * N;
  // out_proj's GEMV may start and load its weights now (it reads nothing else before it
  // waits for this kernel; kernels/common/launch.cuh).
  launch_dependents();

  // Every load first: they do not depend on each other, so they share one round trip to L2
  // (the unfused kernels each paid their own). Those that do not depend on kernel 1 (or on
  // in_proj: z) come before grid_dependency_wait(), so with overlap_launches they run while
  // kernel 1 does.
  const Elem* __restrict__ wr =
      static_cast<const Elem*>(p.dt_proj_weight) + static_cast<int64_t>(active ? e : 0) * R;
  float w_first[kDtBatch];  // the first kDtBatch dt_proj weights of this lane
#pragma unroll
  for (int i = 0; i < kDtBatch; ++i) {
    const int r = g + i * tpc;
    w_first[i] = (active && r < R) ? to_float(__ldg(wr + r)) : 0.f;
  }
  float4 s = make_float4(0.f, 0.f, 0.f, 0.f);
  float a_n[4] = {0.f, 0.f, 0.f, 0.f};
  float xv = 0.f, zv = 0.f, d_skip = 0.f, bias = 0.f;
  if (active) {
    s = *reinterpret_cast<const float4*>(p.ssm_state + ch * N + g * 4);
#pragma unroll
    for (int i = 0; i < 4; ++i) a_n[i] = p.A[e * N + g * 4 + i];
    if (p.dt_bias != nullptr) bias = p.dt_bias[e];
    if (g == 0 && p.D != nullptr) d_skip = p.D[e];
  }
  grid_dependency_wait();  // x_conv, the partials (kernel 1), z (in_proj, before kernel 1)

  // dt_low, Bm, Cm of the block's rows: each (row, j) the sum of its S partials in order.
  const int64_t ch_first = static_cast<int64_t>(blockIdx.x) * (blockDim.x / tpc);
  const int64_t ch_last = min(n_ch, ch_first + blockDim.x / tpc) - 1;
  const int b_first = static_cast<int>(ch_first / p.dim);
  const int n_rows = ch_first < n_ch ? static_cast<int>(ch_last / p.dim) - b_first + 1 : 0;
  for (int idx = threadIdx.x; idx < n_rows * J; idx += blockDim.x) {
    const float* src = p.x_proj_partial + (static_cast<int64_t>(b_first) * J + idx) * S;
    float sum = 0.f;
    for (int s0 = 0; s0 < S; s0 += kSumBatch) {
      float v[kSumBatch];
#pragma unroll
      for (int i = 0; i < kSumBatch; ++i) v[i] = s0 + i < S ? src[s0 + i] : 0.f;
#pragma unroll
      for (int i = 0; i < kSumBatch; ++i) sum += v[i];  // zeros past S change nothing
    }
    s_dbl[idx] = to_float(from_float<Elem>(sum));
  }
  if (active) {
    xv = to_float(static_cast<const Elem*>(p.x_conv)[ch]);
    if (g == 0 && p.z != nullptr) zv = to_float(static_cast<const Elem*>(p.z)[b * p.z_batch_stride + e]);
  }
  __syncthreads();
  const float* dbl = s_dbl + (b - b_first) * J;
  float b_n[4] = {0.f, 0.f, 0.f, 0.f}, c_n[4] = {0.f, 0.f, 0.f, 0.f};
  if (active) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      b_n[i] = dbl[R + g * 4 + i];
      c_n[i] = dbl[R + N + g * 4 + i];
    }
  }

  // dt_proj: the channel's tpc lanes take every tpc-th of the R products (adjacent lanes read
  // adjacent weights), kDtBatch loads in flight per lane, then a shuffle tree over the group.
  float dp = 0.f;
  if (active) {
    for (int r0 = g; r0 < R; r0 += kDtBatch * tpc) {
      float wv[kDtBatch];
#pragma unroll
      for (int i = 0; i < kDtBatch; ++i) {
        const int r = r0 + i * tpc;
        wv[i] = r0 == g ? w_first[i] : (r < R ? to_float(__ldg(wr + r)) : 0.f);
      }
#pragma unroll
      for (int i = 0; i < kDtBatch; ++i) {
        const int r = r0 + i * tpc;
        if (r < R) dp = fmaf(wv[i], dbl[r], dp);
      }
    }
  }
  for (int m = tpc / 2; m > 0; m >>= 1) dp += __shfl_xor_sync(0xffffffffu, dp, m);

  float yp = 0.f;
  if (active) {
    // dt_proj's output as the unfused op returns it (rounded to the activation dtype), then
    // the bias and softplus in fp32 as the state update does.
    float d = to_float(from_float<Elem>(dp));
    if (p.dt_bias != nullptr) d += bias;
    d = softplus(d);
    float sv[4] = {s.x, s.y, s.z, s.w};
    const float du = d * xv;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float a = ex2_approx(d * (a_n[i] * kLog2e));
      sv[i] = fmaf(a, sv[i], du * b_n[i]);
      yp = fmaf(sv[i], c_n[i], yp);
    }
    *reinterpret_cast<float4*>(p.ssm_state + ch * N + g * 4) = make_float4(sv[0], sv[1], sv[2], sv[3]);
  }
  for (int m = tpc / 2; m > 0; m >>= 1) yp += __shfl_xor_sync(0xffffffffu, yp, m);
  if (active && g == 0) {
    float y = yp + (p.D != nullptr ? d_skip * xv : 0.f);
    if (p.z != nullptr) y *= silu(zv);
    static_cast<Elem*>(p.out)[ch] = from_float<Elem>(y);
  }
}

template <typename Elem, typename State, int kRows>
void launch_conv_xproj(const MambaStepParams& p, bool vec, cudaStream_t stream) {
  const dim3 grid(splits(p.dtype, p.dim), (p.batch + kRows - 1) / kRows);
  launch_kernel(conv_xproj_kernel<Elem, State, kRows>, grid, dim3(32 * kWarps), 0, stream,
                p.overlap_launches, p, vec);
  HYLAB_CUDA_CHECK_LAUNCH("mamba_step conv+x_proj launch failed");
}

template <typename Elem, typename State>
void launch(const MambaStepParams& p, cudaStream_t stream) {
  constexpr int kVec = VecWidth<Elem>::kValue;
  const bool vec = p.dim % kVec == 0 && is_aligned16(p.x_proj_weight);
  switch (rows_per_block(p.batch)) {
    case 1:
      launch_conv_xproj<Elem, State, 1>(p, vec, stream);
      break;
    case 2:
      launch_conv_xproj<Elem, State, 2>(p, vec, stream);
      break;
    case 4:
      launch_conv_xproj<Elem, State, 4>(p, vec, stream);
      break;
    default:
      launch_conv_xproj<Elem, State, 8>(p, vec, stream);
      break;
  }
  const int tpc = p.dstate / 4;
  const int64_t threads = static_cast<int64_t>(p.batch) * p.dim * tpc;
  const auto blocks = static_cast<unsigned>((threads + kStateThreads - 1) / kStateThreads);
  const int64_t smem = mamba_step_smem_bytes(p.batch, p.dim, p.dstate, p.dt_rank);
  auto kernel = state_kernel<Elem, State>;
  if (smem > 48 * 1024) {
    HYLAB_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(smem)),
                     "mamba_step: cannot raise the state kernel's shared memory");
  }
  launch_kernel(kernel, dim3(blocks), dim3(kStateThreads), static_cast<size_t>(smem), stream,
                p.overlap_launches, p, tpc, splits(p.dtype, p.dim));
  HYLAB_CUDA_CHECK_LAUNCH("mamba_step state update launch failed");
}

}  // namespace

int64_t mamba_step_smem_bytes(int batch, int dim, int dstate, int dt_rank) {
  const int tpc = std::max(1, dstate / 4);
  return static_cast<int64_t>(state_block_rows(batch, dim, tpc)) * (dt_rank + 2 * dstate) *
         static_cast<int64_t>(sizeof(float));
}

int64_t mamba_step_workspace_floats(DType dtype, int batch, int dim, int dstate, int dt_rank) {
  return static_cast<int64_t>(batch) * (dt_rank + 2 * dstate) * splits(dtype, dim);
}

bool mamba_step_supports(DType dtype, int batch, int dim, int dstate, int width, int dt_rank) {
  (void)dtype;
  return batch >= 1 && dim >= 1 && dt_rank >= 1 && width >= 2 && width <= 4 &&
         selective_state_update_supports_dstate(dstate) &&
         mamba_step_smem_bytes(batch, dim, dstate, dt_rank) <= kMaxSmem &&
         static_cast<int64_t>(batch) * dim * (dstate / 4) < (int64_t{1} << 31);
}

void mamba_step(const MambaStepParams& p, cudaStream_t stream) {
  const std::string w = "mamba_step";
  if (p.batch <= 0 || p.dim <= 0 || p.dt_rank <= 0) {
    throw CudaError(w + ": B, E and R must be positive (got B " + std::to_string(p.batch) +
                    ", E " + std::to_string(p.dim) + ", R " + std::to_string(p.dt_rank) + ")");
  }
  if (p.width < 2 || p.width > 4) {
    throw CudaError(w + ": width K = " + std::to_string(p.width) +
                    " is not supported; allowed: 2, 3, 4");
  }
  if (!selective_state_update_supports_dstate(p.dstate)) {
    throw CudaError(w + ": N = " + std::to_string(p.dstate) +
                    " is not supported; allowed: 4 * a power of two, up to 128");
  }
  if (!mamba_step_supports(p.dtype, p.batch, p.dim, p.dstate, p.width, p.dt_rank)) {
    throw CudaError(w + ": R + 2N = " + std::to_string(p.dt_rank + 2 * p.dstate) +
                    " x_proj outputs of a block's rows need " +
                    std::to_string(mamba_step_smem_bytes(p.batch, p.dim, p.dstate, p.dt_rank)) +
                    " bytes of shared memory, more than " + std::to_string(kMaxSmem));
  }
  if (p.x == nullptr || p.conv_state == nullptr || p.conv_weight == nullptr ||
      p.x_proj_weight == nullptr || p.dt_proj_weight == nullptr || p.A == nullptr ||
      p.ssm_state == nullptr || p.x_conv == nullptr || p.x_proj_partial == nullptr ||
      p.out == nullptr) {
    throw CudaError(w + ": x, conv_state, conv_weight, x_proj_weight, dt_proj_weight, A, "
                        "ssm_state, x_conv, x_proj_partial and out must be given");
  }
  if ((reinterpret_cast<uintptr_t>(p.ssm_state) & 15u) != 0) {
    throw CudaError(w + ": ssm_state must be 16-byte aligned");
  }
  if (p.dtype == DType::kFloat32) {
    if (p.state_dtype != DType::kFloat32) {
      throw CudaError(w + ": a float32 x needs a float32 conv_state");
    }
    launch<float, float>(p, stream);
  } else if (p.state_dtype == DType::kFloat32) {
    launch<bf16, float>(p, stream);
  } else {
    launch<bf16, bf16>(p, stream);
  }
}

}  // namespace hylab::kernels
