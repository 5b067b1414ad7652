// Selective scan forward, second version (forward variant 1 of selective_scan.h; variant 0 is
// scan_fwd.cuh, its twin). Same thread layout, staging, chunk-state output and split scan
// support (p.split_len: grid.z splits of T, each from its carried start state), with:
//   - short tiles (kTileT = 16 timesteps: one chunk) and a register budget for 4 blocks of
//     256 threads per SM (32 warps; scan_fwd.cuh runs 3 blocks, limited by its 75 KB of
//     shared memory at N = 16 and by 80 registers). The kernel is latency-bound (DRAM ~20 %),
//     so more warps per SM should hide more of the exp / shared-memory latency;
//   - no per-step shuffle for y: each lane writes its partial <x_t, C_t> over its 4 states to
//     shared memory, and the output stage sums a channel's kTPC partials (fixed order) when it
//     writes y * silu(z). Per step this drops 2 shuffles, 2 adds and a lane-0 store branch.
#pragma once

#include "kernels/common/cuda_check.h"
#include "kernels/selective_scan/scan_common.cuh"

namespace hylab::kernels::scan {

template <typename Elem, int kN_, int kTileT_, int kMinBlocks_>
struct FwdV2Traits : Traits<Elem, kN_, 256> {
  using Base = Traits<Elem, kN_, 256>;
  static constexpr int kTileT = kTileT_;
  static_assert(kTileT % kScanChunk == 0, "tile must hold whole chunks");
  static constexpr int kPitch = kTileT + 1;
  // y partials per channel: [kTileT][kTPC] + one step of padding (a warp's channels land in
  // different banks: kPartStride = 4 mod 32 floats at kTPC = 4).
  static constexpr int kPartStride = kPitch * Base::kTPC;
  // Floats: Bs, Cs [kTileT][N]; us, ds, zs [kChannels][kPitch]; yparts [kChannels][kPartStride];
  // Ds [kChannels].
  static constexpr int kSmemFloats = 2 * kTileT * kN_ + 3 * Base::kChannels * kPitch +
                                     Base::kChannels * kPartStride + Base::kChannels;
  static constexpr int kSmemBytes = kSmemFloats * 4;
  // N <= 8 (64-256 channels per block) is limited by shared memory: no forced register cap.
  static constexpr int kMinBlocks = kN_ >= 16 ? kMinBlocks_ : 2;
};

template <class K>
__global__ void __launch_bounds__(K::kThreads, K::kMinBlocks)
    scan_fwd_v2_kernel(const SelectiveScanParams p, const bool vec) {
  using In = typename K::Elem;
  constexpr int kN = K::kN, kTPC = K::kTPC, kTileT = K::kTileT, kPitch = K::kPitch;
  constexpr int kChannels = K::kChannels, kThreads = K::kThreads, kPartStride = K::kPartStride;

  extern __shared__ float4 smem4[];
  float* Bs = reinterpret_cast<float*>(smem4);  // [kTileT][kN]
  float* Cs = Bs + kTileT * kN;                  // [kTileT][kN]
  float* us = Cs + kTileT * kN;                  // [kChannels][kPitch]
  float* ds = us + kChannels * kPitch;           // softplus(delta + bias), 0 past T
  float* zs = ds + kChannels * kPitch;
  float* yparts = zs + kChannels * kPitch;       // [kChannels][kPartStride]
  float* Ds = yparts + kChannels * kPartStride;  // [kChannels]

  const int b = blockIdx.y;
  const int e0 = blockIdx.x * kChannels;
  const int c = threadIdx.x / kTPC;  // channel within the block
  const int g = threadIdx.x % kTPC;  // which 4 states of the channel
  const int e = e0 + c;
  const bool active = e < p.dim;
  const int nrows = min(kChannels, p.dim - e0);
  const int T = p.seqlen;
  const int nchunks = (T + kScanChunk - 1) / kScanChunk;

  // Split scan (grid.z = split, see scan_split.cuh): timesteps [tb, te), starting from the
  // carried state.
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
  for (int r = threadIdx.x; r < kChannels; r += kThreads) {
    Ds[r] = (r < nrows && p.D != nullptr) ? p.D[e0 + r] : 0.f;
  }

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
        yparts[c * kPartStride + tt * kTPC + g] = yp;
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
      const float* yp = yparts + r * kPartStride + tt * kTPC;
      float y = 0.f;
      if constexpr (kTPC % 4 == 0) {  // 16-byte aligned: kPartStride and kTPC are 4k
#pragma unroll
        for (int k = 0; k < kTPC; k += 4) {
          const float4 v = *reinterpret_cast<const float4*>(yp + k);
          y += v.x, y += v.y, y += v.z, y += v.w;
        }
      } else {
#pragma unroll
        for (int k = 0; k < kTPC; ++k) y += yp[k];
      }
      y = fmaf(Ds[r], us[r * kPitch + tt], y);
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
void launch_scan_fwd_v2(const SelectiveScanParams& p, bool vec, cudaStream_t stream) {
  const dim3 grid((p.dim + K::kChannels - 1) / K::kChannels, p.batch,
                  selective_scan_splits_of(p));
  auto kernel = scan_fwd_v2_kernel<K>;
  HYLAB_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        K::kSmemBytes),
                   "selective_scan fwd v2: could not raise the shared-memory limit");
  kernel<<<grid, K::kThreads, K::kSmemBytes, stream>>>(p, vec);
  HYLAB_CUDA_CHECK_LAUNCH(
      "selective_scan fwd v2 launch failed (is this build for the GPU's arch?)");
}

// Forward variant 1 (selective_scan.h): 16-step tiles, 4 blocks per SM.
template <typename Elem>
void scan_fwd_v2_dispatch(const SelectiveScanParams& p, bool vec, cudaStream_t stream) {
  switch (p.dstate) {
    case 4: return launch_scan_fwd_v2<FwdV2Traits<Elem, 4, 16, 4>>(p, vec, stream);
    case 8: return launch_scan_fwd_v2<FwdV2Traits<Elem, 8, 16, 4>>(p, vec, stream);
    case 16: return launch_scan_fwd_v2<FwdV2Traits<Elem, 16, 16, 4>>(p, vec, stream);
    case 32: return launch_scan_fwd_v2<FwdV2Traits<Elem, 32, 16, 4>>(p, vec, stream);
    case 64: return launch_scan_fwd_v2<FwdV2Traits<Elem, 64, 16, 4>>(p, vec, stream);
    default: throw CudaError("selective_scan fwd v2: unsupported N (dstate)");
  }
}

}  // namespace hylab::kernels::scan
