// Selective scan backward, second version (variants 1 and 2 of selective_scan.h; variant 0
// is scan_bwd.cuh, its twin). Same block layout, staging, dB/dC butterfly, partial layout and
// reductions as scan_bwd.cuh (so scan_reduce.cu and the workspace sizes are shared), with two
// changes to the per-chunk work:
//
// 1. Fewer live registers (occupancy). The chunk of kScanChunk = 16 steps is walked backwards
//    in kSeg segments of kSub steps. Only one segment's recomputed states x_{t-1} (kSub x 4
//    floats) are held in registers at a time: the forward recompute over the whole chunk
//    (which turns dout into dy and dz) stages the last segment and keeps the state entering
//    every other segment (a checkpoint, 4 floats); each earlier segment is recomputed from its
//    checkpoint just before its reverse walk. kSub = 8 costs 8 extra recompute steps per chunk
//    (no y, no shuffles) and frees 32 of the 64 staging registers; kSub = 16 is one segment.
// 2. Fewer instructions per state in the reverse walk: x_t is the next step's staged x_{t-1}
//    (the same instructions computed it, so it is bit-identical to recomputing it) except at
//    a segment's last step; the carry g = exp(d A) h_t is formed once and reused for the
//    dA/ddelta term q = g x_{t-1}; ddelta's sum over states uses A log2e (already in
//    registers for exp) and is scaled by ln 2 once per step, so A itself is not kept.
//
// 3. The per-channel sums over the channel's kTPC lanes leave the step loops: instead of xor-shuffling y (forward) and shb, dda (reverse) every step and letting
//    lane 0 alone do the per-channel math (dy, dz; du, ddelta, dD, ddelta_bias) while its
//    kTPC - 1 partners idle, every lane writes its partial to shared memory, and after the
//    forward pass (resp. each reverse segment) lane g finishes steps g, g + kTPC, ...: each
//    lane does 1/kTPC of that math, the shuffles are gone, and dD/ddelta_bias are summed over
//    the lanes once at the end. Sums are in a fixed lane order (deterministic).
//
// The outer loop is the chunk range [chunk_begin, chunk_end) of this block's split of T (all of
// T unless p.split_len is set, scan_split.cuh), walked from last to first with the adjoint
// carried in from the later splits (zero for the last), as in scan_bwd.cuh.
#pragma once

#include <string>

#include "kernels/common/cuda_check.h"
#include "kernels/selective_scan/scan_bwd.cuh"
#include "kernels/selective_scan/scan_common.cuh"

namespace hylab::kernels::scan {

constexpr float kLn2 = 0.6931471805599453f;

// kSub: steps per segment (states staged in registers); kTargetWarps: warps per SM the
// register budget is sized for (__launch_bounds__ min blocks). N <= 8 (128-thread blocks)
// are limited by shared memory long before registers, so they keep 2 blocks (no forced spills).
template <typename Elem, int kN_, int kSub_, int kTargetWarps_>
struct BwdV2Traits : BwdTraits<Elem, kN_> {
  using Base = BwdTraits<Elem, kN_>;
  static constexpr int kSub = kSub_;
  static constexpr int kSeg = Base::kL / kSub;
  static_assert(Base::kL % kSub == 0 && kSub >= 2, "segments must tile the chunk");
  static_assert(Base::kL % Base::kTPC == 0, "a channel's lanes split the chunk's steps evenly");
  static constexpr int kMinBlocks =
      (kN_ >= 16 && kTargetWarps_ / Base::kWarps > 2) ? kTargetWarps_ / Base::kWarps : 2;
  // Partials, in one region per channel (warps move between the forward pass and the reverse
  // walk independently, so a channel's region must not overlap another's in either use): y
  // [kL][kTPC] (forward), then (shb, dda) [kSub][kTPC][2] (reverse). The stride's padding
  // (+1 step) spreads a warp's channels over the banks: conflict-free (shb, dda) stores, at
  // most 2-way conflicts for the y stores.
  static constexpr int kYStride = (Base::kL + 1) * Base::kTPC;
  static constexpr int kSStride = (kSub + 1) * Base::kTPC * 2;
  static constexpr int kPartStride = ((kYStride > kSStride ? kYStride : kSStride) + 1) / 2 * 2;
  static constexpr int kPartFloats = Base::kChannels * kPartStride;
  static constexpr int kSmemBytes = (Base::kSmemFloats + kPartFloats) * 4;
};

// dout -> dy (in place in dys) and z -> dz (in place in zs) at smem index i, from the
// channel's <x_t, C_t> (yp) and u_t (uu).
__device__ __forceinline__ void dy_dz(bool has_z, float Dv, float yp, float uu, int i,
                                      float* dys, float* zs) {
  const float dout_v = dys[i];
  float dy = dout_v;
  if (has_z) {
    const float zz = zs[i];
    const float y = fmaf(Dv, uu, yp);
    const float s = sigmoid(zz);
    dy = dout_v * zz * s;
    zs[i] = dout_v * y * s * (1.f + zz * (1.f - s));
  }
  dys[i] = dy;
}

// du and ddelta at smem index i from the channel's sums shb = <h_t, B_t> and
// dda2 = sum_n q_n A_n log2(e) (and d_t, u_t, dy_t); accumulates dD and ddelta_bias.
__device__ __forceinline__ void du_ddelta(float Dv, float shb, float dda2, float d, float uu,
                                          float dy, int i, const float* sgs, float* duo,
                                          float* ddo, float& dD_acc, float& dbias_acc) {
  duo[i] = fmaf(dy, Dv, d * shb);
  const float ddl = fmaf(uu, shb, dda2 * kLn2) * sgs[i];
  ddo[i] = ddl;
  dD_acc = fmaf(dy, uu, dD_acc);
  dbias_acc += ddl;
}

template <class K>
__global__ void __launch_bounds__(K::kThreads, K::kMinBlocks)
    scan_bwd_v2_kernel(const SelectiveScanParams p, const bool vec) {
  using In = typename K::Elem;
  constexpr int kN = K::kN, kTPC = K::kTPC, kL = K::kL, kPitch = K::kPitch;
  constexpr int kChannels = K::kChannels, kThreads = K::kThreads, kWarps = K::kWarps;
  constexpr int kSub = K::kSub, kSeg = K::kSeg;
  constexpr int kPartStride = K::kPartStride;

  extern __shared__ float4 smem4[];
  float* Bs = reinterpret_cast<float*>(smem4);  // [kL][kN]
  float* Cs = Bs + kL * kN;
  float* ds = Cs + kL * kN;                     // [kChannels][kPitch] each
  float* sgs = ds + kChannels * kPitch;         // d(d)/d(delta): softplus' or 1
  float* us = sgs + kChannels * kPitch;
  float* dys = us + kChannels * kPitch;         // dout, then dy (in place)
  float* zs = dys + kChannels * kPitch;         // z, then dz (in place)
  float* duo = zs + kChannels * kPitch;
  float* ddo = duo + kChannels * kPitch;
  float* red = ddo + kChannels * kPitch;        // [kWarps][2N][kPitch]
  float* part = red + kWarps * 2 * kN * kPitch;  // [kChannels][kPartStride]

  const int b = blockIdx.y;
  const int blk = blockIdx.x;
  const int e0 = blk * kChannels;
  const int c = threadIdx.x / kTPC;
  const int g = threadIdx.x % kTPC;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int e = e0 + c;
  const bool active = e < p.dim;
  const int nrows = min(kChannels, p.dim - e0);
  const int T = p.seqlen;
  const int nchunks = (T + kScanChunk - 1) / kScanChunk;
  // Split scan (grid.z = split, see scan_split.cuh): chunks [chunk_begin, chunk_end), entered
  // with the adjoint carried in from the later splits (ws_split slot split; none for the last).
  const int split = blockIdx.z;
  const int chunk_begin = p.split_len > 0 ? split * (p.split_len / kScanChunk) : 0;
  const int chunk_end =
      p.split_len > 0 ? min(nchunks, chunk_begin + p.split_len / kScanChunk) : nchunks;

  float A2[4];  // A * log2(e): exp(d A) = 2^(d A2)
#pragma unroll
  for (int i = 0; i < 4; ++i) A2[i] = active ? p.A[e * kN + g * 4 + i] * kLog2e : 0.f;
  const float Dv = (active && p.D != nullptr) ? p.D[e] : 0.f;
  const bool has_z = p.z != nullptr;
  const bool softplus_on = p.delta_softplus;
  const float* bias = p.delta_bias;

  const int64_t row0 = static_cast<int64_t>(b) * p.dim + e0;  // contiguous (B,E,T) tensors
  const In* u = static_cast<const In*>(p.u) + b * p.u_batch_stride + e0 * p.u_dim_stride;
  const In* delta =
      static_cast<const In*>(p.delta) + b * p.delta_batch_stride + e0 * p.delta_dim_stride;
  const In* z = has_z ? static_cast<const In*>(p.z) + b * p.z_batch_stride + e0 * p.z_dim_stride
                      : nullptr;
  const In* dout = static_cast<const In*>(p.dout) + row0 * T;
  In* du_out = static_cast<In*>(p.du) + row0 * T;
  In* ddelta_out = static_cast<In*>(p.ddelta) + row0 * T;
  In* dz_out = has_z ? static_cast<In*>(p.dz) + row0 * T : nullptr;
  const In* Bm = static_cast<const In*>(p.Bm) + b * p.B_batch_stride;
  const In* Cm = static_cast<const In*>(p.Cm) + b * p.C_batch_stride;
  float* ws = p.ws_dBC + (static_cast<int64_t>(b) * gridDim.x + blk) * 2 * kN * T;

  float gcarry[4] = {0.f, 0.f, 0.f, 0.f};  // exp(d_{t+1} A) * h_{t+1}
  if (split + 1 < static_cast<int>(gridDim.z) && active) {
    const int64_t idx = ((static_cast<int64_t>(split) * p.batch + b) * p.dim + e) * kN + g * 4;
    const float4 s = *reinterpret_cast<const float4*>(p.ws_split + idx);
    gcarry[0] = s.x, gcarry[1] = s.y, gcarry[2] = s.z, gcarry[3] = s.w;
  }
  float dA_acc[4] = {0.f, 0.f, 0.f, 0.f};
  float dD_acc = 0.f, dbias_acc = 0.f;

  for (int ch = chunk_end - 1; ch >= chunk_begin; --ch) {
    const int t0 = ch * kL;
    load_tile<In, kChannels, kL, kThreads>(
        delta, p.delta_dim_stride, nrows, t0, T, vec, [&](int r, int tt, float v, bool ok) {
          float d = 0.f, sg = 0.f;
          if (ok) {
            const float raw = v + (bias != nullptr ? bias[e0 + r] : 0.f);
            d = softplus_on ? softplus(raw) : raw;
            sg = softplus_on ? softplus_grad(raw) : 1.f;
          }
          ds[r * kPitch + tt] = d;
          sgs[r * kPitch + tt] = sg;
        });
    load_tile<In, kChannels, kL, kThreads>(
        u, p.u_dim_stride, nrows, t0, T, vec,
        [&](int r, int tt, float v, bool) { us[r * kPitch + tt] = v; });
    load_tile<In, kChannels, kL, kThreads>(
        dout, T, nrows, t0, T, vec,
        [&](int r, int tt, float v, bool) { dys[r * kPitch + tt] = v; });
    if (has_z) {
      load_tile<In, kChannels, kL, kThreads>(
          z, p.z_dim_stride, nrows, t0, T, vec,
          [&](int r, int tt, float v, bool) { zs[r * kPitch + tt] = v; });
    }
    load_state_tile<In, kN, kL, kThreads>(Bm, p.B_dstate_stride, t0, T, vec, Bs);
    load_state_tile<In, kN, kL, kThreads>(Cm, p.C_dstate_stride, t0, T, vec, Cs);

    float x[4] = {0.f, 0.f, 0.f, 0.f};  // state entering the chunk
    if (ch > 0 && active) {
      const int64_t idx =
          ((static_cast<int64_t>(b) * nchunks + (ch - 1)) * p.dim + e) * kN + g * 4;
      const float4 s = *reinterpret_cast<const float4*>(p.chunk_states + idx);
      x[0] = s.x, x[1] = s.y, x[2] = s.z, x[3] = s.w;
    }
    __syncthreads();

    // Forward recompute over the chunk: dout -> dy, z -> dz; stage[jj] = x_{t0+j-1} for the
    // last segment (j = (kSeg-1) kSub + jj), ckpt[s] = the state entering segment s < kSeg-1.
    float stage[kSub][4];
    float ckpt[kSeg][4];
#pragma unroll
    for (int j = 0; j < kL; ++j) {
      const float d = ds[c * kPitch + j];
      const float uu = us[c * kPitch + j];
      const float4 bv = *reinterpret_cast<const float4*>(&Bs[j * kN + g * 4]);
      const float4 cv = *reinterpret_cast<const float4*>(&Cs[j * kN + g * 4]);
      const float du = d * uu;
      if (j % kSub == 0 && j / kSub < kSeg - 1) {
#pragma unroll
        for (int i = 0; i < 4; ++i) ckpt[j / kSub][i] = x[i];
      }
      if (j >= kL - kSub) {
#pragma unroll
        for (int i = 0; i < 4; ++i) stage[j - (kL - kSub)][i] = x[i];
      }
      x[0] = fmaf(ex2_approx(d * A2[0]), x[0], du * bv.x);
      x[1] = fmaf(ex2_approx(d * A2[1]), x[1], du * bv.y);
      x[2] = fmaf(ex2_approx(d * A2[2]), x[2], du * bv.z);
      x[3] = fmaf(ex2_approx(d * A2[3]), x[3], du * bv.w);
      float yp = x[0] * cv.x;
      yp = fmaf(x[1], cv.y, yp);
      yp = fmaf(x[2], cv.z, yp);
      yp = fmaf(x[3], cv.w, yp);
      part[c * kPartStride + j * kTPC + g] = yp;
    }
    {
      __syncwarp();
#pragma unroll
      for (int k = 0; k < kL / kTPC; ++k) {  // lane g: steps g, g + kTPC, ...
        const int j = k * kTPC + g;
        const float* yparts = part + c * kPartStride + j * kTPC;
        float yp = 0.f;
#pragma unroll
        for (int gg = 0; gg < kTPC; ++gg) yp += yparts[gg];
        dy_dz(has_z, Dv, yp, us[c * kPitch + j], c * kPitch + j, dys, zs);
      }
    }
    __syncwarp();

    // Reverse walk, segment by segment from the last.
#pragma unroll
    for (int s = kSeg - 1; s >= 0; --s) {
      if (s < kSeg - 1) {  // recompute this segment's x_{t-1} from its checkpoint
        float xr[4] = {ckpt[s][0], ckpt[s][1], ckpt[s][2], ckpt[s][3]};
#pragma unroll
        for (int jj = 0; jj < kSub; ++jj) {
          const int j = s * kSub + jj;
          const float d = ds[c * kPitch + j];
          const float du = d * us[c * kPitch + j];
          const float4 bv = *reinterpret_cast<const float4*>(&Bs[j * kN + g * 4]);
#pragma unroll
          for (int i = 0; i < 4; ++i) stage[jj][i] = xr[i];
          xr[0] = fmaf(ex2_approx(d * A2[0]), xr[0], du * bv.x);
          xr[1] = fmaf(ex2_approx(d * A2[1]), xr[1], du * bv.y);
          xr[2] = fmaf(ex2_approx(d * A2[2]), xr[2], du * bv.z);
          xr[3] = fmaf(ex2_approx(d * A2[3]), xr[3], du * bv.w);
        }
      }
#pragma unroll
      for (int jj = kSub - 1; jj >= 0; --jj) {
        const int j = s * kSub + jj;
        const float d = ds[c * kPitch + j];
        const float uu = us[c * kPitch + j];
        const float dy = dys[c * kPitch + j];
        const float4 bv = *reinterpret_cast<const float4*>(&Bs[j * kN + g * 4]);
        const float4 cv = *reinterpret_cast<const float4*>(&Cs[j * kN + g * 4]);
        const float bb[4] = {bv.x, bv.y, bv.z, bv.w};
        const float cc[4] = {cv.x, cv.y, cv.z, cv.w};
        const float du = d * uu;
        float v[8];
        float shb = 0.f, dda2 = 0.f;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const float a = ex2_approx(d * A2[i]);
          const float xp = stage[jj][i];
          // x_t: staged as the next step's x_{t-1}, except at the segment's end.
          const float xt = jj + 1 < kSub ? stage[jj + 1 < kSub ? jj + 1 : 0][i]
                                         : fmaf(a, xp, du * bb[i]);
          const float h = fmaf(dy, cc[i], gcarry[i]);
          v[i] = h * du;       // dB_t[n] contribution
          v[4 + i] = dy * xt;  // dC_t[n] contribution
          shb = fmaf(h, bb[i], shb);
          const float gh = a * h;   // carried to step t-1
          const float q = gh * xp;  // h_t * d x_t / d(dA_t) ... times dA_t
          dA_acc[i] = fmaf(q, d, dA_acc[i]);
          dda2 = fmaf(q, A2[i], dda2);
          gcarry[i] = gh;
        }
        *reinterpret_cast<float2*>(part + c * kPartStride + (jj * kTPC + g) * 2) =
            make_float2(shb, dda2);
        Butterfly<kTPC>::template reduce<kN, kPitch>(v, lane, g, j,
                                                     red + warp * 2 * kN * kPitch);
      }
      {
        __syncwarp();
        if (g < kSub) {
#pragma unroll
          for (int k = 0; k < (kSub + kTPC - 1) / kTPC; ++k) {  // lane g: g, g + kTPC, ...
            const int jj = k * kTPC + g;
            if (jj < kSub) {
              const float* sparts = part + c * kPartStride + jj * kTPC * 2;
              float shb = 0.f, dda2 = 0.f;
#pragma unroll
              for (int gg = 0; gg < kTPC; ++gg) {
                const float2 sd = *reinterpret_cast<const float2*>(sparts + gg * 2);
                shb += sd.x;
                dda2 += sd.y;
              }
              const int i = c * kPitch + s * kSub + jj;
              du_ddelta(Dv, shb, dda2, ds[i], us[i], dys[i], i, sgs, duo, ddo, dD_acc,
                        dbias_acc);
            }
          }
        }
        __syncwarp();
      }
    }
    __syncthreads();

    store_tile<In, kChannels, kL, kThreads>(du_out, T, nrows, t0, T, vec,
                                            [&](int r, int tt) { return duo[r * kPitch + tt]; });
    store_tile<In, kChannels, kL, kThreads>(ddelta_out, T, nrows, t0, T, vec,
                                            [&](int r, int tt) { return ddo[r * kPitch + tt]; });
    if (has_z) {
      store_tile<In, kChannels, kL, kThreads>(dz_out, T, nrows, t0, T, vec,
                                              [&](int r, int tt) { return zs[r * kPitch + tt]; });
    }
    for (int k = threadIdx.x; k < 2 * kN * kL; k += kThreads) {
      const int kn = k / kL, j = k % kL;
      float sum = 0.f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) sum += red[(w * 2 * kN + kn) * kPitch + j];
      if (t0 + j < T) ws[static_cast<int64_t>(kn) * T + t0 + j] = sum;
    }
    __syncthreads();
  }

  {  // each lane summed its own steps
    dD_acc = group_sum<kTPC>(dD_acc);
    dbias_acc = group_sum<kTPC>(dbias_acc);
  }
  if (active) {  // this (split, b)'s partials: (S, B, E, N) / (S, B, E)
    const int64_t be = (static_cast<int64_t>(split) * p.batch + b) * p.dim + e;
    *reinterpret_cast<float4*>(p.ws_dA + be * kN + g * 4) =
        make_float4(dA_acc[0], dA_acc[1], dA_acc[2], dA_acc[3]);
    if (g == 0) {
      p.ws_dD[be] = dD_acc;
      p.ws_ddelta_bias[be] = dbias_acc;
    }
  }
}

template <class K>
void launch_scan_bwd_v2(const SelectiveScanParams& p, bool vec, cudaStream_t stream) {
  const dim3 grid((p.dim + K::kChannels - 1) / K::kChannels, p.batch,
                  selective_scan_splits_of(p));
  auto kernel = scan_bwd_v2_kernel<K>;
  HYLAB_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        K::kSmemBytes),
                   "selective_scan bwd v2: could not raise the shared-memory limit");
  kernel<<<grid, K::kThreads, K::kSmemBytes, stream>>>(p, vec);
  HYLAB_CUDA_CHECK_LAUNCH(
      "selective_scan bwd v2 launch failed (is this build for the GPU's arch?)");
}

template <typename Elem, int kSub, int kTargetWarps>
void scan_bwd_v2_dispatch_n(const SelectiveScanParams& p, bool vec, cudaStream_t stream) {
  switch (p.dstate) {
    case 4:
      return launch_scan_bwd_v2<BwdV2Traits<Elem, 4, kSub, kTargetWarps>>(p, vec, stream);
    case 8:
      return launch_scan_bwd_v2<BwdV2Traits<Elem, 8, kSub, kTargetWarps>>(p, vec, stream);
    case 16:
      return launch_scan_bwd_v2<BwdV2Traits<Elem, 16, kSub, kTargetWarps>>(p, vec, stream);
    case 32:
      return launch_scan_bwd_v2<BwdV2Traits<Elem, 32, kSub, kTargetWarps>>(p, vec, stream);
    case 64:
      return launch_scan_bwd_v2<BwdV2Traits<Elem, 64, kSub, kTargetWarps>>(p, vec, stream);
    default: throw CudaError("selective_scan bwd v2: unsupported N (dstate)");
  }
}

// Variants 1 and 2 (selective_scan.h): (kSub, target warps/SM) = (16, 16), (8, 24).
template <typename Elem>
void scan_bwd_v2_dispatch(const SelectiveScanParams& p, int variant, bool vec,
                          cudaStream_t stream) {
  switch (variant) {
    case 1: return scan_bwd_v2_dispatch_n<Elem, 16, 16>(p, vec, stream);
    case 2: return scan_bwd_v2_dispatch_n<Elem, 8, 24>(p, vec, stream);
    default: throw CudaError("selective_scan bwd v2: unknown variant " + std::to_string(variant));
  }
}

}  // namespace hylab::kernels::scan
