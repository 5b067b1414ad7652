// Selective scan forward kernel. One block per (channel group, batch row, split of T: one
// split unless p.split_len is set, see scan_split.cuh); the block walks its timesteps in
// tiles of kTileT timesteps: stage u, softplus(delta + bias), z, Bm, Cm in shared memory
// (coalesced), scan kTileT steps per thread in registers, write y * silu(z) out.
// The state after every kScanChunk steps goes to chunk_states for the backward.
#pragma once

#include "kernels/common/cuda_check.h"
#include "kernels/selective_scan/scan_common.cuh"

namespace hylab::kernels::scan {

template <typename Elem, int kN_, int kThreads_ = 256>
struct FwdTraits : Traits<Elem, kN_, kThreads_> {
  using Base = Traits<Elem, kN_, kThreads_>;
  // Timesteps per shared-memory tile: ~4K elements per staged tensor.
  static constexpr int kTileT = Base::kChannels >= 128 ? (4096 / Base::kChannels < kScanChunk
                                                              ? kScanChunk
                                                              : 4096 / Base::kChannels)
                                                       : 64;
  static constexpr int kPitch = kTileT + 1;  // +1: rows land in different banks
  static_assert(kTileT % kScanChunk == 0, "tile must hold whole chunks");
  // Floats: Bs, Cs [kTileT][N]; us, ds, zs, ys [kChannels][kPitch].
  static constexpr int kSmemFloats = 2 * kTileT * kN_ + 4 * Base::kChannels * kPitch;
  static constexpr int kSmemBytes = kSmemFloats * 4;
};

template <class K>
__global__ void __launch_bounds__(K::kThreads, 2)
    scan_fwd_kernel(const SelectiveScanParams p, const bool vec) {
  using In = typename K::Elem;
  constexpr int kN = K::kN, kTPC = K::kTPC, kTileT = K::kTileT, kPitch = K::kPitch;
  constexpr int kChannels = K::kChannels, kThreads = K::kThreads;

  extern __shared__ float4 smem4[];
  float* Bs = reinterpret_cast<float*>(smem4);  // [kTileT][kN]
  float* Cs = Bs + kTileT * kN;                  // [kTileT][kN]
  float* us = Cs + kTileT * kN;                  // [kChannels][kPitch]
  float* ds = us + kChannels * kPitch;           // softplus(delta + bias), 0 past T
  float* zs = ds + kChannels * kPitch;
  float* ys = zs + kChannels * kPitch;

  const int b = blockIdx.y;
  const int e0 = blockIdx.x * kChannels;
  const int c = threadIdx.x / kTPC;  // channel within the block
  const int g = threadIdx.x % kTPC;  // which 4 states of the channel
  const int e = e0 + c;
  const bool active = e < p.dim;
  const int nrows = min(kChannels, p.dim - e0);
  const int T = p.seqlen;
  const int nchunks = (T + kScanChunk - 1) / kScanChunk;

  // Split scan (grid.z = split): timesteps [tb, te), starting from the carried state.
  const int split = blockIdx.z;
  const int tb = p.split_len > 0 ? split * p.split_len : 0;
  const int te = p.split_len > 0 ? min(T, tb + p.split_len) : T;

  float A2[4];  // A * log2(e): exp(d * A) = 2^(d * A2)
  float x[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int i = 0; i < 4; ++i) A2[i] = active ? p.A[e * kN + g * 4 + i] * kLog2e : 0.f;
  if (split > 0 && active) {  // ws_split slot split - 1: the start state (scan_split.cu)
    const int64_t idx =
        ((static_cast<int64_t>(split - 1) * p.batch + b) * p.dim + e) * kN + g * 4;
    const float4 s = *reinterpret_cast<const float4*>(p.ws_split + idx);
    x[0] = s.x, x[1] = s.y, x[2] = s.z, x[3] = s.w;
  }
  const float Dv = (active && p.D != nullptr) ? p.D[e] : 0.f;

  const In* u = static_cast<const In*>(p.u) + b * p.u_batch_stride + e0 * p.u_dim_stride;
  const In* delta =
      static_cast<const In*>(p.delta) + b * p.delta_batch_stride + e0 * p.delta_dim_stride;
  const In* z = p.z == nullptr ? nullptr
                              : static_cast<const In*>(p.z) + b * p.z_batch_stride +
                                    e0 * p.z_dim_stride;
  const In* Bm = static_cast<const In*>(p.Bm) + b * p.B_batch_stride;
  const In* Cm = static_cast<const In*>(p.Cm) + b * p.C_batch_stride;
  In* out = static_cast<In*>(p.out) + (static_cast<int64_t>(b) * p.dim + e0) * T;
  const float* bias = p.delta_bias;
  const bool softplus_on = p.delta_softplus;

  for (int t0 = tb; t0 < te; t0 += kTileT) {
    load_tile<In, kChannels, kTileT, kThreads>(
        u, p.u_dim_stride, nrows, t0, T, vec,
        [&](int r, int tt, float v, bool) { us[r * kPitch + tt] = v; });
    load_tile<In, kChannels, kTileT, kThreads>(
        delta, p.delta_dim_stride, nrows, t0, T, vec, [&](int r, int tt, float v, bool ok) {
          float d = 0.f;  // past T: d = 0 keeps the state unchanged
          if (ok) {
            d = v + (bias != nullptr ? bias[e0 + r] : 0.f);
            if (softplus_on) d = softplus(d);
          }
          ds[r * kPitch + tt] = d;
        });
    if (z != nullptr) {
      load_tile<In, kChannels, kTileT, kThreads>(
          z, p.z_dim_stride, nrows, t0, T, vec,
          [&](int r, int tt, float v, bool) { zs[r * kPitch + tt] = v; });
    }
    load_state_tile<In, kN, kTileT, kThreads>(Bm, p.B_dstate_stride, t0, T, vec, Bs);
    load_state_tile<In, kN, kTileT, kThreads>(Cm, p.C_dstate_stride, t0, T, vec, Cs);
    __syncthreads();

    for (int cc = 0; cc < kTileT; cc += kScanChunk) {
#pragma unroll
      for (int j = 0; j < kScanChunk; ++j) {
        const int tt = cc + j;
        const float d = ds[c * kPitch + tt];
        const float uu = us[c * kPitch + tt];
        const float4 bv = *reinterpret_cast<const float4*>(&Bs[tt * kN + g * 4]);
        const float4 cv = *reinterpret_cast<const float4*>(&Cs[tt * kN + g * 4]);
        const float du = d * uu;
        x[0] = fmaf(ex2_approx(d * A2[0]), x[0], du * bv.x);
        x[1] = fmaf(ex2_approx(d * A2[1]), x[1], du * bv.y);
        x[2] = fmaf(ex2_approx(d * A2[2]), x[2], du * bv.z);
        x[3] = fmaf(ex2_approx(d * A2[3]), x[3], du * bv.w);
        float yp = x[0] * cv.x;
        yp = fmaf(x[1], cv.y, yp);
        yp = fmaf(x[2], cv.z, yp);
        yp = fmaf(x[3], cv.w, yp);
        yp = group_sum<kTPC>(yp);
        if (g == 0) ys[c * kPitch + tt] = fmaf(Dv, uu, yp);
      }
      const int chunk = (t0 + cc) / kScanChunk;
      if (p.chunk_states != nullptr && active && chunk < nchunks) {
        const int64_t idx =
            ((static_cast<int64_t>(b) * nchunks + chunk) * p.dim + e) * kN + g * 4;
        *reinterpret_cast<float4*>(p.chunk_states + idx) = make_float4(x[0], x[1], x[2], x[3]);
      }
    }
    __syncthreads();

    const bool gate = z != nullptr;
    store_tile<In, kChannels, kTileT, kThreads>(out, T, nrows, t0, T, vec, [&](int r, int tt) {
      const float y = ys[r * kPitch + tt];
      return gate ? y * silu(zs[r * kPitch + tt]) : y;
    });
    __syncthreads();
  }

  if (p.last_state != nullptr && active && split == static_cast<int>(gridDim.z) - 1) {
    const int64_t idx = (static_cast<int64_t>(b) * p.dim + e) * kN + g * 4;
    *reinterpret_cast<float4*>(p.last_state + idx) = make_float4(x[0], x[1], x[2], x[3]);
  }
}

template <class K>
void launch_scan_fwd(const SelectiveScanParams& p, bool vec, cudaStream_t stream) {
  const dim3 grid((p.dim + K::kChannels - 1) / K::kChannels, p.batch,
                  selective_scan_splits_of(p));
  auto kernel = scan_fwd_kernel<K>;
  HYLAB_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        K::kSmemBytes),
                   "selective_scan fwd: could not raise the shared-memory limit");
  kernel<<<grid, K::kThreads, K::kSmemBytes, stream>>>(p, vec);
  HYLAB_CUDA_CHECK_LAUNCH("selective_scan fwd launch failed (is this build for the GPU's arch?)");
}

template <typename Elem>
void scan_fwd_dispatch(const SelectiveScanParams& p, bool vec, cudaStream_t stream) {
  switch (p.dstate) {
    case 4: return launch_scan_fwd<FwdTraits<Elem, 4>>(p, vec, stream);
    case 8: return launch_scan_fwd<FwdTraits<Elem, 8>>(p, vec, stream);
    case 16: return launch_scan_fwd<FwdTraits<Elem, 16>>(p, vec, stream);
    case 32: return launch_scan_fwd<FwdTraits<Elem, 32>>(p, vec, stream);
    case 64: return launch_scan_fwd<FwdTraits<Elem, 64>>(p, vec, stream);
    default: throw CudaError("selective_scan fwd: unsupported N (dstate)");
  }
}

}  // namespace hylab::kernels::scan
