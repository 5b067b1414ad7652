// Device helpers shared by every kernel: dtype conversion, 16-byte vector loads/stores,
// the fast exp2, softplus/silu and their derivatives. Header-only, device code.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace hylab::kernels {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(bf16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ bf16 from_float<bf16>(float v) { return __float2bfloat16_rn(v); }

// Elements of T in one 16-byte access.
template <typename T>
struct VecWidth {
  static constexpr int kValue = 16 / static_cast<int>(sizeof(T));
};

// 16-byte load of VecWidth<T> elements (p must be 16-byte aligned), converted to float.
template <typename T>
__device__ __forceinline__ void load_vec(const T* p, float* out) {
  constexpr int kN = VecWidth<T>::kValue;
  const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p));
  const T* v = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int i = 0; i < kN; ++i) out[i] = to_float(v[i]);
}

// 16-byte store of VecWidth<T> elements converted from float (p 16-byte aligned).
template <typename T>
__device__ __forceinline__ void store_vec(T* p, const float* in) {
  constexpr int kN = VecWidth<T>::kValue;
  uint4 raw;
  T* v = reinterpret_cast<T*>(&raw);
#pragma unroll
  for (int i = 0; i < kN; ++i) v[i] = from_float<T>(in[i]);
  *reinterpret_cast<uint4*>(p) = raw;
}

// 2^x on the special-function unit (max relative error ~2^-22; flushes results below
// 2^-126 to zero, which the scan's decays can ignore). Callers pre-scale by log2(e).
__device__ __forceinline__ float ex2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

constexpr float kLog2e = 1.4426950408889634f;

// softplus with PyTorch's threshold (beta 1, threshold 20): x for x > 20.
__device__ __forceinline__ float softplus(float x) { return x > 20.f ? x : log1pf(expf(x)); }
// d softplus / dx, matching PyTorch's backward (1 above the threshold).
__device__ __forceinline__ float softplus_grad(float x) {
  return x > 20.f ? 1.f : 1.f / (1.f + expf(-x));
}
__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + expf(-x)); }
__device__ __forceinline__ float silu(float x) { return x * sigmoid(x); }
// d silu / dx = s * (1 + x * (1 - s)), s = sigmoid(x)
__device__ __forceinline__ float silu_grad(float x) {
  const float s = sigmoid(x);
  return s * (1.f + x * (1.f - s));
}

// Sum over groups of kWidth consecutive lanes (kWidth a power of two <= 32); every lane of
// the group gets the group's sum. Fixed butterfly order: deterministic.
template <int kWidth>
__device__ __forceinline__ float group_sum(float v) {
#pragma unroll
  for (int m = kWidth / 2; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
  return v;
}

inline bool is_aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace hylab::kernels
