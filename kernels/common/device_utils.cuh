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

// exp(x) as one MUFU op: 2^(x * log2 e) (what __expf does). Relative error about
// 2^-22 + |x| * 2^-24 (the rounding of x * log2 e): ~1.2e-6 at |x| = 20. Underflows to 0
// below x ~ -87 and overflows to +inf above ~88, which the callers below rely on.
__device__ __forceinline__ float fast_exp(float x) { return ex2_approx(x * kLog2e); }

// 1 / x on the special-function unit (rcp.approx.ftz: max error ~1 ulp; 1/inf = 0).
__device__ __forceinline__ float fast_rcp(float x) {
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// The elementwise activations below are the per-element hot spots of the scan and conv
// kernels (ncu: instruction-bound), so they use the MUFU forms (fast_exp, fast_rcp: two
// special-function ops instead of an accurate expf plus an IEEE division). Their relative
// error (~1e-6 for |x| <= 20) is far below the fp32 test tolerances; every kernel (full
// scan, conv and the decode steps) uses these same functions, so decode still reproduces
// the full scan's rounding.

// softplus with PyTorch's threshold (beta 1, threshold 20): x for x > 20. log1pf stays
// accurate (small exp(x) would lose its relative precision in a plain log(1 + e)).
__device__ __forceinline__ float softplus(float x) { return x > 20.f ? x : log1pf(fast_exp(x)); }
__device__ __forceinline__ float sigmoid(float x) { return fast_rcp(1.f + fast_exp(-x)); }
// d softplus / dx, matching PyTorch's backward (1 above the threshold).
__device__ __forceinline__ float softplus_grad(float x) { return x > 20.f ? 1.f : sigmoid(x); }
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
