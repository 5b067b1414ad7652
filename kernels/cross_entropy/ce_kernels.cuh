// Kernels of kernels/cross_entropy/cross_entropy.h: one block of kThreads per row.
// Forward: each thread keeps a running (max, sum of exp) over its columns, then the block
// merges the pairs (warp shuffles, then shared memory) in a fixed order. Backward recomputes
// z from x and writes the gradient row in one pass.
#pragma once

#include <cmath>

#include "kernels/common/cuda_check.h"
#include "kernels/common/device_utils.cuh"
#include "kernels/cross_entropy/cross_entropy.h"

namespace hylab::kernels::ce {

constexpr int kThreads = 256;

__device__ __forceinline__ float softcap(float x, float cap, float inv_cap) {
  return cap > 0.f ? cap * tanhf(x * inv_cap) : x;
}

// (m, s) represents sum exp(z - m) = s; merging keeps the larger max.
__device__ __forceinline__ void merge(float& m, float& s, float m2, float s2) {
  if (m2 == -INFINITY) return;
  if (m == -INFINITY) {
    m = m2, s = s2;
    return;
  }
  if (m2 > m) {
    s = s * fast_exp(m - m2) + s2;
    m = m2;
  } else {
    s += s2 * fast_exp(m2 - m);
  }
}

template <typename T, bool kVec>
__global__ void __launch_bounds__(kThreads) ce_fwd_kernel(SoftcapCrossEntropyParams p) {
  const int64_t row = blockIdx.x;
  const T* x = static_cast<const T*>(p.logits) + row * p.row_stride;
  const float cap = p.softcap, inv_cap = cap > 0.f ? 1.f / cap : 0.f;
  float m = -INFINITY, s = 0.f;
  if constexpr (kVec) {
    constexpr int kN = VecWidth<T>::kValue;
    for (int c0 = threadIdx.x * kN; c0 < p.vocab; c0 += kThreads * kN) {
      float v[kN];
      load_vec(x + c0, v);
      float vm = -INFINITY;
#pragma unroll
      for (int i = 0; i < kN; ++i) {
        v[i] = c0 + i < p.vocab ? softcap(v[i], cap, inv_cap) : -INFINITY;
        vm = fmaxf(vm, v[i]);
      }
      float vs = 0.f;
#pragma unroll
      for (int i = 0; i < kN; ++i) vs += fast_exp(v[i] - vm);
      merge(m, s, vm, vs);
    }
  } else {
    for (int c = threadIdx.x; c < p.vocab; c += kThreads) {
      merge(m, s, softcap(to_float(x[c]), cap, inv_cap), 1.f);
    }
  }
  // Block reduction of (m, s): butterfly within warps, then warp 0 over the warps' results.
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, off);
    const float s2 = __shfl_xor_sync(0xffffffffu, s, off);
    merge(m, s, m2, s2);
  }
  __shared__ float sm[kThreads / 32], ss[kThreads / 32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) sm[warp] = m, ss[warp] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    float bm = sm[0], bs = ss[0];
    for (int w = 1; w < kThreads / 32; ++w) merge(bm, bs, sm[w], ss[w]);
    const float lse = bm + logf(bs);
    const int64_t t = p.targets[row];
    float loss;
    if (t == -1) {
      loss = 0.f;
    } else if (t < 0 || t >= p.vocab) {
      loss = NAN;
    } else {
      loss = lse - softcap(to_float(x[t]), cap, inv_cap);
    }
    p.lse[row] = lse;
    p.loss[row] = loss;
  }
}

template <typename T, bool kVec>
__global__ void __launch_bounds__(kThreads) ce_bwd_kernel(SoftcapCrossEntropyParams p) {
  const int64_t row = blockIdx.x;
  const T* x = static_cast<const T*>(p.logits) + row * p.row_stride;
  T* dx = static_cast<T*>(p.dlogits) + row * static_cast<int64_t>(p.width);
  const float cap = p.softcap, inv_cap = cap > 0.f ? 1.f / cap : 0.f;
  const int64_t t = p.targets[row];
  const float g = t == -1 ? 0.f : p.dloss[row];
  const float lse = p.lse[row];
  auto grad = [&](int c, float xv) {
    if (c >= p.vocab || g == 0.f) return 0.f;
    const float z = softcap(xv, cap, inv_cap);
    float d = g * (fast_exp(z - lse) - (c == t ? 1.f : 0.f));
    if (cap > 0.f) {
      const float th = z * inv_cap;
      d *= 1.f - th * th;
    }
    return d;
  };
  if constexpr (kVec) {
    constexpr int kN = VecWidth<T>::kValue;
    for (int c0 = threadIdx.x * kN; c0 < p.width; c0 += kThreads * kN) {
      float v[kN];
      load_vec(x + c0, v);
#pragma unroll
      for (int i = 0; i < kN; ++i) v[i] = grad(c0 + i, v[i]);
      store_vec(dx + c0, v);
    }
  } else {
    for (int c = threadIdx.x; c < p.width; c += kThreads) {
      dx[c] = from_float<T>(c < p.vocab ? grad(c, to_float(x[c])) : 0.f);
    }
  }
}

template <typename T>
void fwd(const SoftcapCrossEntropyParams& p, bool vec, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(p.rows));
  if (vec) {
    ce_fwd_kernel<T, true><<<grid, kThreads, 0, stream>>>(p);
  } else {
    ce_fwd_kernel<T, false><<<grid, kThreads, 0, stream>>>(p);
  }
  HYLAB_CUDA_CHECK_LAUNCH("softcap_cross_entropy_fwd");
}

template <typename T>
void bwd(const SoftcapCrossEntropyParams& p, bool vec, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(p.rows));
  if (vec) {
    ce_bwd_kernel<T, true><<<grid, kThreads, 0, stream>>>(p);
  } else {
    ce_bwd_kernel<T, false><<<grid, kThreads, 0, stream>>>(p);
  }
  HYLAB_CUDA_CHECK_LAUNCH("softcap_cross_entropy_bwd");
}

}  // namespace hylab::kernels::ce
