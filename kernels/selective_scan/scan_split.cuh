// The split scan's pre-passes (docs/KERNELS.md "Split scan"): lean scans of one split each
// from a zero start, run before the forward / backward kernels so that those can start every
// split from its true state / adjoint. Same thread layout and tile staging as the forward
// (FwdTraits: 4 states per thread, kTileT-step tiles in shared memory); grid
// (channel groups, B, S - 1).
//
// Both write into p.ws_split, (2, S - 1, B, E, N) fp32: [0] the split's local result, [1] its
// decay product prod_t exp(d_t A) over the split's timesteps. The product multiplies the same
// per-step factors ex2_approx(d_t * A * log2 e) that the scan applies to the state (one FMUL
// per step), rather than one ex2 of the summed d: the carried state then sees the decays the
// sequential scan would have applied, up to the rounding of the products (~sqrt(L) ulp).
//
//   forward, z-block k = split k (0 .. S-2): x_end of the split scanned from x = 0
//     (the carry then gives start_{k+1} = P_k start_k + x_end_k);
//   backward, z-block k = split k + 1 (1 .. S-1): the adjoint carry the backward kernel
//     hands to the previous split, g = exp(d_{t_s} A) h_{t_s} at the split's first step
//     t_s, from a zero incoming carry (then in_k = P_{k+1} in_{k+1} + g_{k+1}). The
//     backward kernel's carry g_t = exp(d_t A) h_t multiplies the incoming one by exp(d_t A)
//     at every step t of the split, first included: the decay is the same product as the
//     forward's, over the split's own steps (no shift).
#pragma once

#include "kernels/common/cuda_check.h"
#include "kernels/selective_scan/scan_fwd.cuh"

namespace hylab::kernels::scan {

template <class K>
struct SplitSmem {
  // Floats: one [kTileT][N] state tile (Bm or Cm) and three [kChannels][kPitch] rows
  // (forward: u, d; backward: d, dout -> dy, z).
  static constexpr int kFloats = K::kTileT * K::kN + 3 * K::kChannels * K::kPitch;
  static constexpr int kBytes = kFloats * 4;
};

template <class K>
__global__ void __launch_bounds__(K::kThreads, 2)
    split_fwd_local_kernel(const SelectiveScanParams p, const bool vec) {
  using In = typename K::Elem;
  constexpr int kN = K::kN, kTPC = K::kTPC, kTileT = K::kTileT, kPitch = K::kPitch;
  constexpr int kChannels = K::kChannels, kThreads = K::kThreads;

  extern __shared__ float4 smem4[];
  float* Bs = reinterpret_cast<float*>(smem4);  // [kTileT][kN]
  float* us = Bs + kTileT * kN;                  // [kChannels][kPitch]
  float* ds = us + kChannels * kPitch;

  const int b = blockIdx.y;
  const int split = blockIdx.z;  // 0 .. S-2: never the ragged last split
  const int e0 = blockIdx.x * kChannels;
  const int c = threadIdx.x / kTPC;
  const int g = threadIdx.x % kTPC;
  const int e = e0 + c;
  const bool active = e < p.dim;
  const int nrows = min(kChannels, p.dim - e0);
  const int T = p.seqlen;
  const int tb = split * p.split_len;
  const int te = min(T, tb + p.split_len);

  float A2[4];
  float x[4] = {0.f, 0.f, 0.f, 0.f};
  float P[4] = {1.f, 1.f, 1.f, 1.f};
#pragma unroll
  for (int i = 0; i < 4; ++i) A2[i] = active ? p.A[e * kN + g * 4 + i] * kLog2e : 0.f;

  const In* u = static_cast<const In*>(p.u) + b * p.u_batch_stride + e0 * p.u_dim_stride;
  const In* delta =
      static_cast<const In*>(p.delta) + b * p.delta_batch_stride + e0 * p.delta_dim_stride;
  const In* Bm = static_cast<const In*>(p.Bm) + b * p.B_batch_stride;
  const float* bias = p.delta_bias;
  const bool softplus_on = p.delta_softplus;

  for (int t0 = tb; t0 < te; t0 += kTileT) {
    load_tile<In, kChannels, kTileT, kThreads>(
        u, p.u_dim_stride, nrows, t0, T, vec,
        [&](int r, int tt, float v, bool) { us[r * kPitch + tt] = v; });
    load_tile<In, kChannels, kTileT, kThreads>(
        delta, p.delta_dim_stride, nrows, t0, T, vec, [&](int r, int tt, float v, bool ok) {
          float d = 0.f;
          if (ok) {
            d = v + (bias != nullptr ? bias[e0 + r] : 0.f);
            if (softplus_on) d = softplus(d);
          }
          ds[r * kPitch + tt] = d;
        });
    load_state_tile<In, kN, kTileT, kThreads>(Bm, p.B_dstate_stride, t0, T, vec, Bs);
    __syncthreads();
#pragma unroll 16
    for (int tt = 0; tt < kTileT; ++tt) {
      const float d = ds[c * kPitch + tt];
      const float du = d * us[c * kPitch + tt];
      const float4 bv = *reinterpret_cast<const float4*>(&Bs[tt * kN + g * 4]);
      const float bb[4] = {bv.x, bv.y, bv.z, bv.w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float a = ex2_approx(d * A2[i]);  // as scan_fwd_kernel applies it
        x[i] = fmaf(a, x[i], du * bb[i]);
        P[i] *= a;
      }
    }
    __syncthreads();
  }

  if (active) {
    const int64_t ben = static_cast<int64_t>(p.batch) * p.dim * kN;
    const int64_t idx = ((static_cast<int64_t>(split) * p.batch + b) * p.dim + e) * kN + g * 4;
    const int64_t skip = static_cast<int64_t>(gridDim.z) * ben;  // to the decay products
    *reinterpret_cast<float4*>(p.ws_split + idx) = make_float4(x[0], x[1], x[2], x[3]);
    *reinterpret_cast<float4*>(p.ws_split + skip + idx) = make_float4(P[0], P[1], P[2], P[3]);
  }
}

template <class K>
__global__ void __launch_bounds__(K::kThreads, 2)
    split_bwd_local_kernel(const SelectiveScanParams p, const bool vec) {
  using In = typename K::Elem;
  constexpr int kN = K::kN, kTileT = K::kTileT, kPitch = K::kPitch, kTPC = K::kTPC;
  constexpr int kChannels = K::kChannels, kThreads = K::kThreads;

  extern __shared__ float4 smem4[];
  float* Cs = reinterpret_cast<float*>(smem4);  // [kTileT][kN]
  float* ds = Cs + kTileT * kN;                  // [kChannels][kPitch]
  float* dys = ds + kChannels * kPitch;          // dout, then dy = dout * silu(z)
  float* zs = dys + kChannels * kPitch;

  const int b = blockIdx.y;
  const int slot = blockIdx.z;      // ws_split slot
  const int split = slot + 1;       // 1 .. S-1
  const int e0 = blockIdx.x * kChannels;
  const int c = threadIdx.x / kTPC;
  const int g = threadIdx.x % kTPC;
  const int e = e0 + c;
  const bool active = e < p.dim;
  const int nrows = min(kChannels, p.dim - e0);
  const int T = p.seqlen;
  const int tb = split * p.split_len;
  const int te = min(T, tb + p.split_len);
  const bool has_z = p.z != nullptr;

  float A2[4];
  float gc[4] = {0.f, 0.f, 0.f, 0.f};  // exp(d_t A) h_t, as scan_bwd_kernel's gcarry
  float P[4] = {1.f, 1.f, 1.f, 1.f};
#pragma unroll
  for (int i = 0; i < 4; ++i) A2[i] = active ? p.A[e * kN + g * 4 + i] * kLog2e : 0.f;

  const int64_t row0 = static_cast<int64_t>(b) * p.dim + e0;
  const In* delta =
      static_cast<const In*>(p.delta) + b * p.delta_batch_stride + e0 * p.delta_dim_stride;
  const In* z = has_z ? static_cast<const In*>(p.z) + b * p.z_batch_stride + e0 * p.z_dim_stride
                      : nullptr;
  const In* dout = static_cast<const In*>(p.dout) + row0 * T;
  const In* Cm = static_cast<const In*>(p.Cm) + b * p.C_batch_stride;
  const float* bias = p.delta_bias;
  const bool softplus_on = p.delta_softplus;

  const int t_last = tb + ((te - tb - 1) / kTileT) * kTileT;  // first step of the last tile
  for (int t0 = t_last; t0 >= tb; t0 -= kTileT) {
    load_tile<In, kChannels, kTileT, kThreads>(
        delta, p.delta_dim_stride, nrows, t0, T, vec, [&](int r, int tt, float v, bool ok) {
          float d = 0.f;  // past T: d = 0, dout = 0 leave the carry unchanged
          if (ok) {
            d = v + (bias != nullptr ? bias[e0 + r] : 0.f);
            if (softplus_on) d = softplus(d);
          }
          ds[r * kPitch + tt] = d;
        });
    load_tile<In, kChannels, kTileT, kThreads>(
        dout, T, nrows, t0, T, vec,
        [&](int r, int tt, float v, bool) { dys[r * kPitch + tt] = v; });
    if (has_z) {
      load_tile<In, kChannels, kTileT, kThreads>(
          z, p.z_dim_stride, nrows, t0, T, vec,
          [&](int r, int tt, float v, bool) { zs[r * kPitch + tt] = v; });
    }
    load_state_tile<In, kN, kTileT, kThreads>(Cm, p.C_dstate_stride, t0, T, vec, Cs);
    __syncthreads();
    if (has_z) {  // dy = dout * z * sigmoid(z), as scan_bwd_kernel computes it
      for (int i = threadIdx.x; i < kChannels * kTileT; i += kThreads) {
        const int r = i / kTileT, tt = i % kTileT;
        const float zz = zs[r * kPitch + tt];
        dys[r * kPitch + tt] = dys[r * kPitch + tt] * zz * sigmoid(zz);
      }
      __syncthreads();
    }
#pragma unroll 16
    for (int tt = kTileT - 1; tt >= 0; --tt) {
      const float d = ds[c * kPitch + tt];
      const float dy = dys[c * kPitch + tt];
      const float4 cv = *reinterpret_cast<const float4*>(&Cs[tt * kN + g * 4]);
      const float cc[4] = {cv.x, cv.y, cv.z, cv.w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float a = ex2_approx(d * A2[i]);
        const float h = fmaf(dy, cc[i], gc[i]);
        gc[i] = a * h;
        P[i] *= a;
      }
    }
    __syncthreads();
  }

  if (active) {
    const int64_t ben = static_cast<int64_t>(p.batch) * p.dim * kN;
    const int64_t idx = ((static_cast<int64_t>(slot) * p.batch + b) * p.dim + e) * kN + g * 4;
    const int64_t skip = static_cast<int64_t>(gridDim.z) * ben;
    *reinterpret_cast<float4*>(p.ws_split + idx) = make_float4(gc[0], gc[1], gc[2], gc[3]);
    *reinterpret_cast<float4*>(p.ws_split + skip + idx) = make_float4(P[0], P[1], P[2], P[3]);
  }
}

template <class K, bool kBwd>
void launch_split_local(const SelectiveScanParams& p, bool vec, cudaStream_t stream) {
  const int splits = selective_scan_splits_of(p);
  if (splits <= 1) return;
  const dim3 grid((p.dim + K::kChannels - 1) / K::kChannels, p.batch, splits - 1);
  void (*kernel)(const SelectiveScanParams, const bool) = nullptr;
  if constexpr (kBwd) {
    kernel = split_bwd_local_kernel<K>;
  } else {
    kernel = split_fwd_local_kernel<K>;
  }
  HYLAB_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        SplitSmem<K>::kBytes),
                   "selective_scan split pre-pass: could not raise the shared-memory limit");
  kernel<<<grid, K::kThreads, SplitSmem<K>::kBytes, stream>>>(p, vec);
  HYLAB_CUDA_CHECK_LAUNCH("selective_scan split pre-pass launch failed");
}

template <typename Elem, bool kBwd>
void split_local_dispatch(const SelectiveScanParams& p, bool vec, cudaStream_t stream) {
  switch (p.dstate) {
    case 4: return launch_split_local<FwdTraits<Elem, 4>, kBwd>(p, vec, stream);
    case 8: return launch_split_local<FwdTraits<Elem, 8>, kBwd>(p, vec, stream);
    case 16: return launch_split_local<FwdTraits<Elem, 16>, kBwd>(p, vec, stream);
    case 32: return launch_split_local<FwdTraits<Elem, 32>, kBwd>(p, vec, stream);
    case 64: return launch_split_local<FwdTraits<Elem, 64>, kBwd>(p, vec, stream);
    default: throw CudaError("selective_scan split pre-pass: unsupported N (dstate)");
  }
}

}  // namespace hylab::kernels::scan
