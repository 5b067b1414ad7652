// Thread layout and tile staging shared by the selective-scan forward and backward.
//
// Thread layout: each thread owns kNPT = 4 consecutive states of one channel, so a channel
// spans kTPC = N / 4 consecutive lanes (all in one warp) and a block of kThreads threads
// covers kChannels = kThreads / kTPC channels of one batch row. A thread scans its 4 states
// sequentially over time (fp32, registers); the lanes of a channel combine <x_t, C_t> with
// xor shuffles. Inputs are staged through shared memory in coalesced 16-byte tiles, Bm/Cm
// once per block (they are shared across channels).
#pragma once

#include <cstdint>

#include "kernels/common/device_utils.cuh"
#include "kernels/selective_scan/selective_scan.h"

namespace hylab::kernels::scan {

template <typename T, int kN_, int kThreads_>
struct Traits {
  using Elem = T;
  static constexpr int kN = kN_;
  static constexpr int kNPT = 4;                     // states per thread
  static constexpr int kTPC = kN / kNPT;             // threads per channel
  static constexpr int kThreads = kThreads_;
  static constexpr int kWarps = kThreads / 32;
  static constexpr int kChannels = kThreads / kTPC;  // channels per block
  static_assert(kN % kNPT == 0 && kTPC >= 1 && kTPC <= 32 && (kTPC & (kTPC - 1)) == 0,
                "N must be 4 * a power of two, at most 128");
  static_assert(kThreads % 32 == 0 && kChannels >= 1, "bad block size");
};

// Loads a (kRows x kL) tile of a row-strided matrix whose rows are at base + r * row_stride
// and whose columns are timesteps t0 .. t0 + kL - 1 (stride 1). Calls sink(r, tt, v, valid)
// once per element (tt = t - t0); elements with r >= nrows or t >= T come as (0, false).
// `vec`: 16-byte accesses are allowed (aligned base, row_stride and t0 multiples of the
// vector width); a vector that crosses T falls back to scalar loads.
template <typename Elem, int kRows, int kL, int kThreads, typename Sink>
__device__ __forceinline__ void load_tile(const Elem* __restrict__ base, int64_t row_stride,
                                          int nrows, int t0, int T, bool vec, Sink&& sink) {
  constexpr int kVec = VecWidth<Elem>::kValue;
  static_assert(kL % kVec == 0, "tile length must be a multiple of the vector width");
  constexpr int kVPR = kL / kVec;  // vectors per row
  constexpr int kTotal = kRows * kVPR;
#pragma unroll 2
  for (int i = threadIdx.x; i < kTotal; i += kThreads) {
    const int r = i / kVPR;
    const int tt = (i % kVPR) * kVec;
    const int t = t0 + tt;
    const Elem* row = base + static_cast<int64_t>(r) * row_stride;
    if (r < nrows && vec && t + kVec <= T) {
      float v[kVec];
      load_vec(row + t, v);
#pragma unroll
      for (int j = 0; j < kVec; ++j) sink(r, tt + j, v[j], true);
    } else {
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        const bool ok = r < nrows && t + j < T;
        sink(r, tt + j, ok ? to_float(row[t + j]) : 0.f, ok);
      }
    }
  }
}

// Stores a (kRows x kL) tile to a row-strided matrix (rows r < nrows, timesteps t < T only);
// src(r, tt) gives the float value.
template <typename Elem, int kRows, int kL, int kThreads, typename Src>
__device__ __forceinline__ void store_tile(Elem* __restrict__ base, int64_t row_stride, int nrows,
                                           int t0, int T, bool vec, Src&& src) {
  constexpr int kVec = VecWidth<Elem>::kValue;
  static_assert(kL % kVec == 0, "tile length must be a multiple of the vector width");
  constexpr int kVPR = kL / kVec;
  constexpr int kTotal = kRows * kVPR;
#pragma unroll 2
  for (int i = threadIdx.x; i < kTotal; i += kThreads) {
    const int r = i / kVPR;
    const int tt = (i % kVPR) * kVec;
    const int t = t0 + tt;
    if (r >= nrows) continue;
    Elem* row = base + static_cast<int64_t>(r) * row_stride;
    if (vec && t + kVec <= T) {
      float v[kVec];
#pragma unroll
      for (int j = 0; j < kVec; ++j) v[j] = src(r, tt + j);
      store_vec(row + t, v);
    } else {
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        if (t + j < T) row[t + j] = from_float<Elem>(src(r, tt + j));
      }
    }
  }
}

// Loads Bm or Cm (B, N, T) for timesteps t0 .. t0 + kL - 1 into dst[tt * kN + n] (time-major,
// so a thread reads its 4 states as one float4); zero beyond T.
template <typename Elem, int kN, int kL, int kThreads>
__device__ __forceinline__ void load_state_tile(const Elem* __restrict__ base, int64_t n_stride,
                                                int t0, int T, bool vec, float* dst) {
  load_tile<Elem, kN, kL, kThreads>(base, n_stride, kN, t0, T, vec,
                                 [&](int n, int tt, float v, bool) { dst[tt * kN + n] = v; });
}

}  // namespace hylab::kernels::scan
