// Decode attention kernels (see decode_attention.h), templated on the element type and the
// head dim. Included by one .cu per dtype.
//
// Split kernel: block = 4 warps for one (split, b, h). Each key is handled by Dh/8 lanes
// holding 8 channels each (one 16-byte load of bf16, two of fp32), so a warp covers 256/Dh
// keys per pass; kUnroll passes are loaded before any is used, to keep enough bytes in
// flight. Every lane group keeps its own online-softmax state (max in log2 units, sum,
// 8 accumulators); the groups of a warp merge by shuffles, the warps through shared memory,
// and the block writes its unnormalised partial result. The combine kernel rescales the
// splits to their common max and divides by the total sum.
#pragma once

#include <cmath>

#include "kernels/common/cuda_check.h"
#include "kernels/common/device_utils.cuh"
#include "kernels/decode_attention/decode_attention.h"

namespace hylab::kernels::attn {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kUnroll = 4;

template <typename T>
__device__ __forceinline__ void load8(const T* p, float* out) {
  if constexpr (sizeof(T) == 2) {
    load_vec(p, out);
  } else {
    load_vec(p, out);
    load_vec(p + 4, out + 4);
  }
}

// 8 elements kept as loaded (16 bytes of bf16, 32 of fp32) until used: fewer registers than
// 8 floats, so more blocks fit on a multiprocessor and more loads are in flight.
template <typename T>
struct Raw8 {
  uint4 v[sizeof(T) / 2];
};

template <typename T>
__device__ __forceinline__ void load_raw(const T* p, Raw8<T>& r) {
#pragma unroll
  for (int i = 0; i < static_cast<int>(sizeof(T)) / 2; ++i) {
    r.v[i] = __ldg(reinterpret_cast<const uint4*>(p) + i);
  }
}

template <typename T>
__device__ __forceinline__ void unpack(const Raw8<T>& r, float* out) {
  const T* e = reinterpret_cast<const T*>(r.v);
#pragma unroll
  for (int i = 0; i < 8; ++i) out[i] = to_float(e[i]);
}

// exp2(a - b) where a may be -inf (gives 0); b is finite or a is -inf too.
__device__ __forceinline__ float rescale(float a, float b) {
  return a == -INFINITY ? 0.f : ex2_approx(a - b);
}

template <typename T, int kHeadDim>
__global__ void __launch_bounds__(kThreads) split_kernel(const DecodeAttentionParams p) {
  constexpr int kLanesPerKey = kHeadDim / 8;
  constexpr int kKeysPerWarp = 32 / kLanesPerKey;
  constexpr int kKeysPerPass = kWarps * kKeysPerWarp;
  __shared__ float s_acc[kWarps][kHeadDim];
  __shared__ float s_m[kWarps], s_l[kWarps];

  const int bh = blockIdx.y;
  const int b = bh / p.heads, h = bh % p.heads;
  const int kvh = h / (p.heads / p.kv_heads);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int sub = lane / kLanesPerKey, li = lane % kLanesPerKey;
  int64_t len = p.pos[b * p.pos_batch_stride] + 1;
  len = len < p.max_len ? len : p.max_len;
  const int64_t start = static_cast<int64_t>(blockIdx.x) * p.split_len;
  const int64_t end = start + p.split_len < len ? start + p.split_len : len;

  float q[8];
  load8(static_cast<const T*>(p.q) + b * p.q_batch_stride + h * p.q_head_stride + li * 8, q);
  const float qscale = p.scale * kLog2e;
#pragma unroll
  for (int i = 0; i < 8; ++i) q[i] *= qscale;
  const int64_t base_off = b * p.kv_batch_stride + kvh * p.kv_head_stride + li * 8;
  const T* kp = static_cast<const T*>(p.k) + base_off;
  const T* vp = static_cast<const T*>(p.v) + base_off;

  float m = -INFINITY, l = 0.f, acc[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) acc[i] = 0.f;
  // `base` is the same for every lane of a warp: the shuffles below see all 32 lanes.
  for (int64_t base = start + warp * kKeysPerWarp; base < end; base += kKeysPerPass * kUnroll) {
    Raw8<T> kr[kUnroll], vr[kUnroll];
    bool valid[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t j = base + u * kKeysPerPass + sub;
      valid[u] = j < end;
      if (valid[u]) {
        load_raw(kp + j * p.kv_row_stride, kr[u]);
        load_raw(vp + j * p.kv_row_stride, vr[u]);
      } else {
        kr[u] = Raw8<T>{};
        vr[u] = Raw8<T>{};
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      float kf[8];
      unpack(kr[u], kf);
      float s = 0.f;
#pragma unroll
      for (int i = 0; i < 8; ++i) s = fmaf(q[i], kf[i], s);
      s = group_sum<kLanesPerKey>(s);
      if (valid[u]) {
        float vf[8];
        unpack(vr[u], vf);
        const float m_new = fmaxf(m, s);
        const float c = rescale(m, m_new), w = ex2_approx(s - m_new);
        l = fmaf(l, c, w);
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[i] = fmaf(acc[i], c, w * vf[i]);
        m = m_new;
      }
    }
  }
  // Merge the lane groups of the warp (lanes li, li + kLanesPerKey, ...).
#pragma unroll
  for (int off = kLanesPerKey; off < 32; off <<= 1) {
    const float m_o = __shfl_xor_sync(0xffffffffu, m, off);
    const float l_o = __shfl_xor_sync(0xffffffffu, l, off);
    const float m_new = fmaxf(m, m_o);
    const float c = rescale(m, m_new), c_o = rescale(m_o, m_new);
    l = l * c + l_o * c_o;
#pragma unroll
    for (int i = 0; i < 8; ++i)
      acc[i] = acc[i] * c + __shfl_xor_sync(0xffffffffu, acc[i], off) * c_o;
    m = m_new;
  }
  if (sub == 0) {
#pragma unroll
    for (int i = 0; i < 8; ++i) s_acc[warp][li * 8 + i] = acc[i];
    if (li == 0) {
      s_m[warp] = m;
      s_l[warp] = l;
    }
  }
  __syncthreads();
  float mb = -INFINITY;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) mb = fmaxf(mb, s_m[w]);
  float scale_w[kWarps], lb = 0.f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    scale_w[w] = rescale(s_m[w], mb);
    lb += s_l[w] * scale_w[w];
  }
  const int64_t slot = static_cast<int64_t>(blockIdx.x) * gridDim.y + bh;
  for (int d = threadIdx.x; d < kHeadDim; d += kThreads) {
    float o = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) o += s_acc[w][d] * scale_w[w];
    p.partial_acc[slot * kHeadDim + d] = o;
  }
  if (threadIdx.x == 0) {
    p.partial_ml[slot * 2] = mb;
    p.partial_ml[slot * 2 + 1] = lb;
  }
}

// One block per (b, h): rescale the splits to their common max, sum, divide. Thread t takes
// 4 columns (chunk t % (Dh/4)) of every (kThreads / (Dh/4))-th split, so the splits' loads
// run in parallel; the slots then add up through shared memory. The splits' weights
// exp2(m_s - max) sit in dynamic shared memory (num_splits floats).
template <typename T, int kHeadDim>
__global__ void __launch_bounds__(kThreads) combine_kernel(const DecodeAttentionParams p) {
  constexpr int kChunks = kHeadDim / 4;
  constexpr int kSlots = kThreads / kChunks;
  extern __shared__ float s_w[];  // (num_splits)
  __shared__ float s_red[kWarps];
  __shared__ float s_part[kSlots][kHeadDim];
  const int bh = blockIdx.x, tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int64_t BH = static_cast<int64_t>(p.batch) * p.heads;
  const int S = p.num_splits;
  const float* ml = p.partial_ml;
  float mloc = -INFINITY;
  for (int s = tid; s < S; s += kThreads) mloc = fmaxf(mloc, ml[(s * BH + bh) * 2]);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) mloc = fmaxf(mloc, __shfl_xor_sync(0xffffffffu, mloc, o));
  if (lane == 0) s_red[warp] = mloc;
  __syncthreads();
  float mb = -INFINITY;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) mb = fmaxf(mb, s_red[w]);
  __syncthreads();
  float lloc = 0.f;
  for (int s = tid; s < S; s += kThreads) {
    const float w = rescale(ml[(s * BH + bh) * 2], mb);
    s_w[s] = w;
    lloc += ml[(s * BH + bh) * 2 + 1] * w;
  }
  lloc = group_sum<32>(lloc);
  if (lane == 0) s_red[warp] = lloc;
  __syncthreads();
  float lb = 0.f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) lb += s_red[w];
  const int chunk = tid % kChunks, slot = tid / kChunks;
  float o[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll 4
  for (int s = slot; s < S; s += kSlots) {
    const float4 a =
        *reinterpret_cast<const float4*>(p.partial_acc + (s * BH + bh) * kHeadDim + chunk * 4);
    const float w = s_w[s];
    o[0] = fmaf(a.x, w, o[0]);
    o[1] = fmaf(a.y, w, o[1]);
    o[2] = fmaf(a.z, w, o[2]);
    o[3] = fmaf(a.w, w, o[3]);
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) s_part[slot][chunk * 4 + i] = o[i];
  __syncthreads();
  const float inv = 1.f / lb;
  T* out = static_cast<T*>(p.out) + static_cast<int64_t>(bh) * kHeadDim;
  for (int d = tid; d < kHeadDim; d += kThreads) {
    float sum = 0.f;
#pragma unroll
    for (int sl = 0; sl < kSlots; ++sl) sum += s_part[sl][d];
    out[d] = from_float<T>(sum * inv);
  }
}

template <typename T, int kHeadDim>
void launch_dim(const DecodeAttentionParams& p, cudaStream_t s) {
  const dim3 grid(static_cast<unsigned>(p.num_splits), static_cast<unsigned>(p.batch * p.heads));
  split_kernel<T, kHeadDim><<<grid, kThreads, 0, s>>>(p);
  HYLAB_CUDA_CHECK_LAUNCH("decode_attention split kernel");
  combine_kernel<T, kHeadDim>
      <<<p.batch * p.heads, kThreads, static_cast<size_t>(p.num_splits) * sizeof(float), s>>>(p);
  HYLAB_CUDA_CHECK_LAUNCH("decode_attention combine kernel");
}

template <typename T>
void launch(const DecodeAttentionParams& p, cudaStream_t s) {
  switch (p.head_dim) {
    case 16:
      return launch_dim<T, 16>(p, s);
    case 32:
      return launch_dim<T, 32>(p, s);
    case 64:
      return launch_dim<T, 64>(p, s);
    case 128:
      return launch_dim<T, 128>(p, s);
    case 256:
      return launch_dim<T, 256>(p, s);
    default:
      throw CudaError("decode_attention: unsupported head_dim " + std::to_string(p.head_dim));
  }
}

}  // namespace hylab::kernels::attn
