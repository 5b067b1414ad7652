// Kernels of kernels/fused_block/fused_block.h, templated on the activation dtype T.
//   add_rms_norm_{fwd,bwd}: one block of kNormThreads per row; each thread walks the same
//     columns in every pass (16-byte vectors when kVec), so a pass never reads what another
//     thread wrote; the row sum is a warp butterfly, then the warps in index order.
//   rope_qk_norm_{fwd,bwd}: one warp per head vector; lane l holds the rotary pairs
//     (i, i + Dh/2) for i = l, l + 32, ... < Dh/2 in registers (at most 4 pairs).
//   relu_square_{fwd,bwd}: grid-stride element-wise.
#pragma once

#include <cmath>

#include "kernels/common/cuda_check.h"
#include "kernels/common/device_utils.cuh"
#include "kernels/fused_block/fused_block.h"

namespace hylab::kernels::fused {

constexpr int kNormThreads = 128;
constexpr int kRopeThreads = 128;  // 4 warps = 4 head vectors per block
constexpr int kRopeRowsPerBlock = kRopeThreads / 32;
constexpr int kRopeMaxPairs = kRopeMaxHeadDim / 64;  // pairs per lane
constexpr int kEltThreads = 256;

// Sum of v over the block (kNormThreads threads), the same value in every thread, in a fixed
// order. Uses `red` (kNormThreads / 32 floats) once: call at most once per kernel.
__device__ __forceinline__ float block_sum(float v, float* red) {
  v = group_sum<32>(v);
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
  __syncthreads();
  float total = 0.f;
#pragma unroll
  for (int w = 0; w < kNormThreads / 32; ++w) total += red[w];
  return total;
}

// x + branch rounded to T (LibTorch's add rounds the fp32 sum to the output dtype).
template <typename T>
__device__ __forceinline__ float rounded_sum(float a, float b) {
  return to_float(from_float<T>(a + b));
}

// ------------------------------------------------------------------ RMSNorm + residual add

template <typename T, bool kVec>
__global__ void __launch_bounds__(kNormThreads) add_rms_norm_fwd_kernel(AddRmsNormParams p) {
  constexpr int kN = kVec ? VecWidth<T>::kValue : 1;
  const int64_t off = static_cast<int64_t>(blockIdx.x) * p.cols;
  const T* x = static_cast<const T*>(p.x) + off;
  const T* b = p.branch != nullptr ? static_cast<const T*>(p.branch) + off : nullptr;
  T* sum = p.branch != nullptr ? static_cast<T*>(p.sum) + off : nullptr;
  T* y = static_cast<T*>(p.y) + off;
  // Loads s = round(x + b) (or x) for columns [c0, c0 + kN).
  auto load_s = [&](int c0, float* v) {
    if constexpr (kVec) {
      load_vec(x + c0, v);
      if (b != nullptr) {
        float w[kN];
        load_vec(b + c0, w);
#pragma unroll
        for (int i = 0; i < kN; ++i) v[i] = rounded_sum<T>(v[i], w[i]);
      }
    } else {
      v[0] = to_float(x[c0]);
      if (b != nullptr) v[0] = rounded_sum<T>(v[0], to_float(b[c0]));
    }
  };
  float ss = 0.f;
  for (int c0 = threadIdx.x * kN; c0 < p.cols; c0 += kNormThreads * kN) {
    float v[kN];
    load_s(c0, v);
    if (sum != nullptr) {
      if constexpr (kVec) {
        store_vec(sum + c0, v);
      } else {
        sum[c0] = from_float<T>(v[0]);
      }
    }
#pragma unroll
    for (int i = 0; i < kN; ++i) ss += v[i] * v[i];
  }
  __shared__ float red[kNormThreads / 32];
  const float r = rsqrtf(block_sum(ss, red) / static_cast<float>(p.cols) + p.eps);
  if (threadIdx.x == 0) p.rstd[blockIdx.x] = r;
  for (int c0 = threadIdx.x * kN; c0 < p.cols; c0 += kNormThreads * kN) {
    float v[kN];
    load_s(c0, v);  // the inputs again (L1/L2), never `sum`, which this kernel writes
#pragma unroll
    for (int i = 0; i < kN; ++i) v[i] *= r;
    if constexpr (kVec) {
      store_vec(y + c0, v);
    } else {
      y[c0] = from_float<T>(v[0]);
    }
  }
}

template <typename T, bool kVec>
__global__ void __launch_bounds__(kNormThreads) add_rms_norm_bwd_kernel(AddRmsNormParams p) {
  constexpr int kN = kVec ? VecWidth<T>::kValue : 1;
  const int64_t off = static_cast<int64_t>(blockIdx.x) * p.cols;
  const T* y = static_cast<const T*>(p.y) + off;
  const T* dy = static_cast<const T*>(p.dy) + off;
  const T* dres = p.dres != nullptr ? static_cast<const T*>(p.dres) + off : nullptr;
  T* dx = static_cast<T*>(p.dx) + off;
  auto load = [&](const T* src, int c0, float* v) {
    if constexpr (kVec) {
      load_vec(src + c0, v);
    } else {
      v[0] = to_float(src[c0]);
    }
  };
  float dot = 0.f;
  for (int c0 = threadIdx.x * kN; c0 < p.cols; c0 += kNormThreads * kN) {
    float yv[kN], gv[kN];
    load(y, c0, yv);
    load(dy, c0, gv);
#pragma unroll
    for (int i = 0; i < kN; ++i) dot += yv[i] * gv[i];
  }
  __shared__ float red[kNormThreads / 32];
  const float mean = block_sum(dot, red) / static_cast<float>(p.cols);
  const float r = p.rstd[blockIdx.x];
  for (int c0 = threadIdx.x * kN; c0 < p.cols; c0 += kNormThreads * kN) {
    float yv[kN], gv[kN], rv[kN];
    load(y, c0, yv);
    load(dy, c0, gv);
    if (dres != nullptr) {
      load(dres, c0, rv);
    } else {
#pragma unroll
      for (int i = 0; i < kN; ++i) rv[i] = 0.f;
    }
#pragma unroll
    for (int i = 0; i < kN; ++i) gv[i] = r * (gv[i] - yv[i] * mean) + rv[i];
    if constexpr (kVec) {
      store_vec(dx + c0, gv);
    } else {
      dx[c0] = from_float<T>(gv[0]);
    }
  }
}

// ------------------------------------------------------------------ rotary + QK-norm

template <typename T>
__global__ void __launch_bounds__(kRopeThreads) rope_qk_norm_fwd_kernel(RopeQkNormParams p) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRopeRowsPerBlock + threadIdx.x / 32;
  if (row >= p.rows) return;  // the whole warp leaves together
  const int lane = threadIdx.x % 32, half = p.head_dim / 2;
  const int64_t t = (row / p.heads) % p.seqlen;
  const T* x = static_cast<const T*>(p.x) + row * p.head_dim;
  T* y = static_cast<T*>(p.y) + row * p.head_dim;
  const float* cs = p.cos + t * half;
  const float* sn = p.sin + t * half;
  float r1[kRopeMaxPairs], r2[kRopeMaxPairs];
  float ss = 0.f;
#pragma unroll
  for (int k = 0; k < kRopeMaxPairs; ++k) {
    const int i = lane + 32 * k;
    r1[k] = 0.f, r2[k] = 0.f;
    if (i < half) {
      const float x1 = to_float(x[i]), x2 = to_float(x[i + half]);
      const float c = cs[i], s = sn[i];
      r1[k] = x1 * c + x2 * s;
      r2[k] = x2 * c - x1 * s;
      ss += r1[k] * r1[k] + r2[k] * r2[k];
    }
  }
  const float r = rsqrtf(group_sum<32>(ss) / static_cast<float>(p.head_dim) + p.eps);
  if (lane == 0) p.rstd[row] = r;
#pragma unroll
  for (int k = 0; k < kRopeMaxPairs; ++k) {
    const int i = lane + 32 * k;
    if (i < half) {
      y[i] = from_float<T>(r1[k] * r);
      y[i + half] = from_float<T>(r2[k] * r);
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kRopeThreads) rope_qk_norm_bwd_kernel(RopeQkNormParams p) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRopeRowsPerBlock + threadIdx.x / 32;
  if (row >= p.rows) return;
  const int lane = threadIdx.x % 32, half = p.head_dim / 2;
  const int64_t t = (row / p.heads) % p.seqlen;
  const T* y = static_cast<const T*>(p.y) + row * p.head_dim;
  const T* dy = static_cast<const T*>(p.dy) + row * p.head_dim;
  T* dx = static_cast<T*>(p.dx) + row * p.head_dim;
  const float* cs = p.cos + t * half;
  const float* sn = p.sin + t * half;
  float y1[kRopeMaxPairs], y2[kRopeMaxPairs], g1[kRopeMaxPairs], g2[kRopeMaxPairs];
  float dot = 0.f;
#pragma unroll
  for (int k = 0; k < kRopeMaxPairs; ++k) {
    const int i = lane + 32 * k;
    y1[k] = 0.f, y2[k] = 0.f, g1[k] = 0.f, g2[k] = 0.f;
    if (i < half) {
      y1[k] = to_float(y[i]), y2[k] = to_float(y[i + half]);
      g1[k] = to_float(dy[i]), g2[k] = to_float(dy[i + half]);
      dot += y1[k] * g1[k] + y2[k] * g2[k];
    }
  }
  const float mean = group_sum<32>(dot) / static_cast<float>(p.head_dim);
  const float r = p.rstd[row];
#pragma unroll
  for (int k = 0; k < kRopeMaxPairs; ++k) {
    const int i = lane + 32 * k;
    if (i < half) {
      const float dr1 = r * (g1[k] - y1[k] * mean), dr2 = r * (g2[k] - y2[k] * mean);
      const float c = cs[i], s = sn[i];
      dx[i] = from_float<T>(dr1 * c - dr2 * s);
      dx[i + half] = from_float<T>(dr1 * s + dr2 * c);
    }
  }
}

// ------------------------------------------------------------------ ReLU^2

template <typename T, bool kVec>
__global__ void __launch_bounds__(kEltThreads) relu_square_fwd_kernel(ReluSquareParams p) {
  constexpr int kN = kVec ? VecWidth<T>::kValue : 1;
  const T* u = static_cast<const T*>(p.u);
  T* h = static_cast<T*>(p.h);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kEltThreads * kN;
  for (int64_t i0 = (static_cast<int64_t>(blockIdx.x) * kEltThreads + threadIdx.x) * kN; i0 < p.n;
       i0 += stride) {
    float v[kN];
    if constexpr (kVec) {
      load_vec(u + i0, v);
    } else {
      v[0] = to_float(u[i0]);
    }
#pragma unroll
    for (int i = 0; i < kN; ++i) v[i] = v[i] > 0.f ? v[i] * v[i] : 0.f;
    if constexpr (kVec) {
      store_vec(h + i0, v);
    } else {
      h[i0] = from_float<T>(v[0]);
    }
  }
}

template <typename T, bool kVec>
__global__ void __launch_bounds__(kEltThreads) relu_square_bwd_kernel(ReluSquareParams p) {
  constexpr int kN = kVec ? VecWidth<T>::kValue : 1;
  const T* h = static_cast<const T*>(p.h);
  const T* dh = static_cast<const T*>(p.dh);
  T* du = static_cast<T*>(p.du);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kEltThreads * kN;
  for (int64_t i0 = (static_cast<int64_t>(blockIdx.x) * kEltThreads + threadIdx.x) * kN; i0 < p.n;
       i0 += stride) {
    float hv[kN], g[kN];
    if constexpr (kVec) {
      load_vec(h + i0, hv);
      load_vec(dh + i0, g);
    } else {
      hv[0] = to_float(h[i0]);
      g[0] = to_float(dh[i0]);
    }
    // relu(u) = sqrt(h): h = relu(u)^2 >= 0
#pragma unroll
    for (int i = 0; i < kN; ++i) g[i] = 2.f * g[i] * sqrtf(hv[i]);
    if constexpr (kVec) {
      store_vec(du + i0, g);
    } else {
      du[i0] = from_float<T>(g[0]);
    }
  }
}

// ------------------------------------------------------------------ launchers

template <typename T>
void add_rms_norm_fwd(const AddRmsNormParams& p, bool vec, cudaStream_t s) {
  const dim3 grid(static_cast<unsigned>(p.rows));
  if (vec) {
    add_rms_norm_fwd_kernel<T, true><<<grid, kNormThreads, 0, s>>>(p);
  } else {
    add_rms_norm_fwd_kernel<T, false><<<grid, kNormThreads, 0, s>>>(p);
  }
  HYLAB_CUDA_CHECK_LAUNCH("add_rms_norm_fwd");
}

template <typename T>
void add_rms_norm_bwd(const AddRmsNormParams& p, bool vec, cudaStream_t s) {
  const dim3 grid(static_cast<unsigned>(p.rows));
  if (vec) {
    add_rms_norm_bwd_kernel<T, true><<<grid, kNormThreads, 0, s>>>(p);
  } else {
    add_rms_norm_bwd_kernel<T, false><<<grid, kNormThreads, 0, s>>>(p);
  }
  HYLAB_CUDA_CHECK_LAUNCH("add_rms_norm_bwd");
}

inline dim3 rope_grid(int64_t rows) {
  return dim3(static_cast<unsigned>((rows + kRopeRowsPerBlock - 1) / kRopeRowsPerBlock));
}

template <typename T>
void rope_qk_norm_fwd(const RopeQkNormParams& p, cudaStream_t s) {
  rope_qk_norm_fwd_kernel<T><<<rope_grid(p.rows), kRopeThreads, 0, s>>>(p);
  HYLAB_CUDA_CHECK_LAUNCH("rope_qk_norm_fwd");
}

template <typename T>
void rope_qk_norm_bwd(const RopeQkNormParams& p, cudaStream_t s) {
  rope_qk_norm_bwd_kernel<T><<<rope_grid(p.rows), kRopeThreads, 0, s>>>(p);
  HYLAB_CUDA_CHECK_LAUNCH("rope_qk_norm_bwd");
}

inline dim3 elt_grid(int64_t n, int per_thread) {
  const int64_t per_block = static_cast<int64_t>(kEltThreads) * per_thread;
  const int64_t blocks = (n + per_block - 1) / per_block;
  return dim3(static_cast<unsigned>(blocks < (1 << 20) ? blocks : (1 << 20)));
}

template <typename T>
void relu_square_fwd(const ReluSquareParams& p, bool vec, cudaStream_t s) {
  if (vec) {
    relu_square_fwd_kernel<T, true><<<elt_grid(p.n, VecWidth<T>::kValue), kEltThreads, 0, s>>>(p);
  } else {
    relu_square_fwd_kernel<T, false><<<elt_grid(p.n, 1), kEltThreads, 0, s>>>(p);
  }
  HYLAB_CUDA_CHECK_LAUNCH("relu_square_fwd");
}

template <typename T>
void relu_square_bwd(const ReluSquareParams& p, bool vec, cudaStream_t s) {
  if (vec) {
    relu_square_bwd_kernel<T, true><<<elt_grid(p.n, VecWidth<T>::kValue), kEltThreads, 0, s>>>(p);
  } else {
    relu_square_bwd_kernel<T, false><<<elt_grid(p.n, 1), kEltThreads, 0, s>>>(p);
  }
  HYLAB_CUDA_CHECK_LAUNCH("relu_square_bwd");
}

}  // namespace hylab::kernels::fused
