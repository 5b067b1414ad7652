// Causal depthwise conv1d kernels (fused SiLU). Each thread owns 8 consecutive timesteps
// of one (b, e) row and reads the window it needs around them with 16-byte loads (the
// neighbours' vectors come from L1/L2, so DRAM sees each input once). A block covers
// kConvBlockT = 1024 timesteps of one row.
#pragma once

#include "kernels/causal_conv1d/causal_conv1d.h"
#include "kernels/common/cuda_check.h"
#include "kernels/common/device_utils.cuh"

namespace hylab::kernels::conv {

constexpr int kThreads = 128;
constexpr int kElts = 8;  // timesteps per thread
static_assert(kThreads * kElts == kConvBlockT, "block covers kConvBlockT timesteps");

// Loads row[t .. t+8) into out (0 outside [0, T)); 16-byte loads when allowed and in range.
template <typename Elem>
__device__ __forceinline__ void load8(const Elem* __restrict__ row, int t, int T, bool vec,
                                      float* out) {
  constexpr int kVec = VecWidth<Elem>::kValue;
  if (vec && t >= 0 && t + kElts <= T) {
#pragma unroll
    for (int i = 0; i < kElts; i += kVec) load_vec(row + t + i, out + i);
  } else {
#pragma unroll
    for (int i = 0; i < kElts; ++i) {
      const int s = t + i;
      out[i] = (s >= 0 && s < T) ? to_float(row[s]) : 0.f;
    }
  }
}

template <typename Elem>
__device__ __forceinline__ void store8(Elem* __restrict__ row, int t, int T, bool vec,
                                       const float* in) {
  constexpr int kVec = VecWidth<Elem>::kValue;
  if (vec && t + kElts <= T) {
#pragma unroll
    for (int i = 0; i < kElts; i += kVec) store_vec(row + t + i, in + i);
  } else {
#pragma unroll
    for (int i = 0; i < kElts; ++i) {
      if (t + i < T) row[t + i] = from_float<Elem>(in[i]);
    }
  }
}

// grid: (B * E, ceil(T / 1024)); block: 128.
template <typename Elem, int kK>
__global__ void __launch_bounds__(kThreads) conv_fwd_kernel(const CausalConv1dParams p,
                                                            const bool vec) {
  const int64_t row = blockIdx.x;
  const int b = static_cast<int>(row / p.dim), e = static_cast<int>(row % p.dim);
  const int T = p.seqlen;
  const int t0 = (blockIdx.y * kThreads + threadIdx.x) * kElts;
  if (t0 >= T) return;
  const Elem* x = static_cast<const Elem*>(p.x) + b * p.x_batch_stride + e * p.x_dim_stride;
  float w[kK];
#pragma unroll
  for (int k = 0; k < kK; ++k) w[k] = p.weight[e * kK + k];
  const float bias = p.bias != nullptr ? p.bias[e] : 0.f;

  float win[2 * kElts];  // x[t0 - 8 .. t0 + 8)
  load8(x, t0 - kElts, T, vec, win);
  load8(x, t0, T, vec, win + kElts);
  float o[kElts];
#pragma unroll
  for (int j = 0; j < kElts; ++j) {
    float acc = bias;
#pragma unroll
    for (int k = 0; k < kK; ++k) acc = fmaf(w[k], win[kElts + j - (kK - 1) + k], acc);
    o[j] = p.silu ? silu(acc) : acc;
  }
  store8(static_cast<Elem*>(p.out) + row * T, t0, T, vec, o);
}

// grid: (B * E, ceil(T / 1024)); block: 128. Writes dx and this block's (dweight, dbias)
// partial, summed over its threads by a fixed shuffle tree and its warps in order.
template <typename Elem, int kK>
__global__ void __launch_bounds__(kThreads) conv_bwd_kernel(const CausalConv1dParams p,
                                                            const bool vec) {
  constexpr int kW = kElts + kK - 1;  // dpre values a thread needs: t0 .. t0 + 8 + K - 2
  __shared__ float part[kThreads / 32][kK + 1];
  const int64_t row = blockIdx.x;
  const int b = static_cast<int>(row / p.dim), e = static_cast<int>(row % p.dim);
  const int T = p.seqlen;
  const int t0 = (blockIdx.y * kThreads + threadIdx.x) * kElts;
  const Elem* x = static_cast<const Elem*>(p.x) + b * p.x_batch_stride + e * p.x_dim_stride;
  const Elem* dout = static_cast<const Elem*>(p.dout) + row * T;
  float w[kK];
#pragma unroll
  for (int k = 0; k < kK; ++k) w[k] = p.weight[e * kK + k];
  const float bias = p.bias != nullptr ? p.bias[e] : 0.f;

  float dw[kK + 1];  // dweight[0..K), dbias
#pragma unroll
  for (int k = 0; k <= kK; ++k) dw[k] = 0.f;

  if (t0 < T) {
    float xw[3 * kElts];  // x[t0 - 8 .. t0 + 16)
    float gw[2 * kElts];  // dout[t0 .. t0 + 16)
    load8(x, t0 - kElts, T, vec, xw);
    load8(x, t0, T, vec, xw + kElts);
    load8(x, t0 + kElts, T, vec, xw + 2 * kElts);
    load8(dout, t0, T, vec, gw);
    load8(dout, t0 + kElts, T, vec, gw + kElts);
    float dp[kW];  // dL/dpre at t0 + i
#pragma unroll
    for (int i = 0; i < kW; ++i) {
      float pre = bias;
#pragma unroll
      for (int k = 0; k < kK; ++k) pre = fmaf(w[k], xw[kElts + i - (kK - 1) + k], pre);
      const float g = gw[i];  // 0 past T
      dp[i] = p.silu ? g * silu_grad(pre) : g;
    }
    float dx[kElts];
#pragma unroll
    for (int j = 0; j < kElts; ++j) {
      float acc = 0.f;
#pragma unroll
      for (int k = 0; k < kK; ++k) acc = fmaf(w[k], dp[j + kK - 1 - k], acc);
      dx[j] = acc;
    }
    store8(static_cast<Elem*>(p.dx) + row * T, t0, T, vec, dx);
#pragma unroll
    for (int j = 0; j < kElts; ++j) {
#pragma unroll
      for (int k = 0; k < kK; ++k) dw[k] = fmaf(dp[j], xw[kElts + j - (kK - 1) + k], dw[k]);
      dw[kK] += dp[j];
    }
  }
#pragma unroll
  for (int k = 0; k <= kK; ++k) {
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) dw[k] += __shfl_xor_sync(0xffffffffu, dw[k], m);
  }
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) {
#pragma unroll
    for (int k = 0; k <= kK; ++k) part[warp][k] = dw[k];
  }
  __syncthreads();
  if (threadIdx.x <= kK) {
    float s = 0.f;
#pragma unroll
    for (int w2 = 0; w2 < kThreads / 32; ++w2) s += part[w2][threadIdx.x];
    p.ws[(row * gridDim.y + blockIdx.y) * (kK + 1) + threadIdx.x] = s;
  }
}

template <typename Elem>
void conv_fwd_dispatch(const CausalConv1dParams& p, bool vec, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(static_cast<int64_t>(p.batch) * p.dim),
                  causal_conv1d_tchunks(p.seqlen));
  switch (p.width) {
    case 2: conv_fwd_kernel<Elem, 2><<<grid, kThreads, 0, stream>>>(p, vec); break;
    case 3: conv_fwd_kernel<Elem, 3><<<grid, kThreads, 0, stream>>>(p, vec); break;
    case 4: conv_fwd_kernel<Elem, 4><<<grid, kThreads, 0, stream>>>(p, vec); break;
    default: throw CudaError("causal_conv1d fwd: unsupported width");
  }
  HYLAB_CUDA_CHECK_LAUNCH("causal_conv1d fwd launch failed");
}

template <typename Elem>
void conv_bwd_dispatch(const CausalConv1dParams& p, bool vec, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(static_cast<int64_t>(p.batch) * p.dim),
                  causal_conv1d_tchunks(p.seqlen));
  switch (p.width) {
    case 2: conv_bwd_kernel<Elem, 2><<<grid, kThreads, 0, stream>>>(p, vec); break;
    case 3: conv_bwd_kernel<Elem, 3><<<grid, kThreads, 0, stream>>>(p, vec); break;
    case 4: conv_bwd_kernel<Elem, 4><<<grid, kThreads, 0, stream>>>(p, vec); break;
    default: throw CudaError("causal_conv1d bwd: unsupported width");
  }
  HYLAB_CUDA_CHECK_LAUNCH("causal_conv1d bwd launch failed");
}

}  // namespace hylab::kernels::conv
