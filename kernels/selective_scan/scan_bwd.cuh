// Selective scan backward kernel. Same thread layout as the forward; the block walks the
// chunks of kScanChunk = 16 timesteps of its split of T (all of T unless p.split_len is set,
// see scan_split.cuh) from last to first. Per chunk:
//   1. stage u, d = softplus(delta + bias), d', dout, z, Bm, Cm in shared memory;
//   2. recompute the forward over the chunk from its saved start state, keeping x_{t-1} for
//      all 16 steps in registers (16 x 4 floats) and turning dout into dy and dz;
//   3. walk the chunk backwards with the adjoint h_t = dy_t C_t + exp(d_{t+1} A) h_{t+1},
//      producing du, ddelta (per channel), dA/dD/ddelta_bias (accumulated in registers),
//      and dB_t, dC_t contributions that are summed over the warp's channels with a
//      recursive-halving butterfly (one shuffle per value) into shared memory;
//   4. write du/ddelta/dz and this block's dB/dC partial (summed over its warps in order).
// Partials are reduced in a fixed order by selective_scan_bwd_reduce: deterministic.
#pragma once

#include "kernels/common/cuda_check.h"
#include "kernels/selective_scan/scan_common.cuh"

namespace hylab::kernels::scan {

template <typename Elem, int kN_>
struct BwdTraits : Traits<Elem, kN_, (kN_ <= 8 ? 128 : 256)> {
  using Base = Traits<Elem, kN_, (kN_ <= 8 ? 128 : 256)>;
  static constexpr int kL = kScanChunk;
  static constexpr int kPitch = kL + 1;
  // Floats: Bs, Cs [kL][N]; ds, sgs, us, dys, zs, duo, ddo [kChannels][kPitch];
  // red [kWarps][2N][kPitch].
  static constexpr int kSmemFloats =
      2 * kL * kN_ + 7 * Base::kChannels * kPitch + Base::kWarps * 2 * kN_ * kPitch;
  static constexpr int kSmemBytes = kSmemFloats * 4;
};

// Sums v (per lane: 4 dB then 4 dC values of this lane's states) over the channels of the
// warp (the lane bits >= kTPC) by recursive halving: at mask m a lane keeps one half of its
// values and sends the other half to lane ^ m. Ends with kCnt values per lane, standing for
// value indices offset .. offset + kCnt - 1.
template <int kCnt, int kMask, int kMinMask>
struct Halving {
  template <int kV>
  __device__ __forceinline__ static void run(float (&v)[kV], int lane, int& offset) {
    if constexpr (kMask >= kMinMask && kMask > 0) {
      if constexpr (kCnt >= 2) {
        constexpr int kHalf = kCnt / 2;
        const bool up = (lane & kMask) != 0;
#pragma unroll
        for (int i = 0; i < kHalf; ++i) {
          const float send = up ? v[i] : v[i + kHalf];
          const float keep = up ? v[i + kHalf] : v[i];
          v[i] = keep + __shfl_xor_sync(0xffffffffu, send, kMask);
        }
        if (up) offset += kHalf;
        Halving<kHalf, kMask / 2, kMinMask>::run(v, lane, offset);
      } else {
        v[0] += __shfl_xor_sync(0xffffffffu, v[0], kMask);
        Halving<1, kMask / 2, kMinMask>::run(v, lane, offset);
      }
    }
  }
};

constexpr int log2_int(int v) { return v <= 1 ? 0 : 1 + log2_int(v / 2); }
constexpr int min_int(int a, int b) { return a < b ? a : b; }

template <int kTPC>
struct Butterfly {
  static constexpr int kV = 8;                                    // values per lane
  static constexpr int kHalvings = min_int(log2_int(kV), log2_int(32 / kTPC));
  static constexpr int kCntOut = kV >> kHalvings;                 // values left per lane
  // Lanes that differ only in these bits hold the same sums after the plain-add levels.
  static constexpr int kDupMask = ((32 >> kHalvings) - 1) & ~(kTPC - 1);

  // red: this warp's [2N][kPitch] slab; j: step within the chunk; g: lane's state group.
  template <int kN, int kPitch>
  __device__ __forceinline__ static void reduce(float (&v)[kV], int lane, int g, int j,
                                                float* red) {
    int offset = 0;
    Halving<kV, 16, kTPC>::run(v, lane, offset);
    if ((lane & kDupMask) == 0) {
#pragma unroll
      for (int i = 0; i < kCntOut; ++i) {
        const int idx = offset + i;                        // 0..7
        const int kind = idx >> 2;                          // 0: dB, 1: dC
        const int n = g * 4 + (idx & 3);
        red[(kind * kN + n) * kPitch + j] = v[i];
      }
    }
  }
};

template <class K>
__global__ void __launch_bounds__(K::kThreads, 2)
    scan_bwd_kernel(const SelectiveScanParams p, const bool vec) {
  using In = typename K::Elem;
  constexpr int kN = K::kN, kTPC = K::kTPC, kL = K::kL, kPitch = K::kPitch;
  constexpr int kChannels = K::kChannels, kThreads = K::kThreads, kWarps = K::kWarps;

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

  float A[4], A2[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    A[i] = active ? p.A[e * kN + g * 4 + i] : 0.f;
    A2[i] = A[i] * kLog2e;
  }
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

  // Split scan (grid.z = split): chunks [ch_begin, ch_end), entered with the adjoint carried
  // in from the later splits (ws_split slot split, scan_split.cu; none for the last split).
  const int split = blockIdx.z;
  const int ch_begin = p.split_len > 0 ? split * (p.split_len / kScanChunk) : 0;
  const int ch_end =
      p.split_len > 0 ? min(nchunks, ch_begin + p.split_len / kScanChunk) : nchunks;

  float gcarry[4] = {0.f, 0.f, 0.f, 0.f};  // exp(d_{t+1} A) * h_{t+1}
  if (split + 1 < static_cast<int>(gridDim.z) && active) {
    const int64_t idx = ((static_cast<int64_t>(split) * p.batch + b) * p.dim + e) * kN + g * 4;
    const float4 s = *reinterpret_cast<const float4*>(p.ws_split + idx);
    gcarry[0] = s.x, gcarry[1] = s.y, gcarry[2] = s.z, gcarry[3] = s.w;
  }
  float dA_acc[4] = {0.f, 0.f, 0.f, 0.f};
  float dD_acc = 0.f, dbias_acc = 0.f;

  for (int ch = ch_end - 1; ch >= ch_begin; --ch) {
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

    // Forward recompute: stage[j] = x_{t0+j-1}; dout -> dy, z -> dz.
    float stage[kL][4];
#pragma unroll
    for (int j = 0; j < kL; ++j) {
      const float d = ds[c * kPitch + j];
      const float uu = us[c * kPitch + j];
      const float4 bv = *reinterpret_cast<const float4*>(&Bs[j * kN + g * 4]);
      const float4 cv = *reinterpret_cast<const float4*>(&Cs[j * kN + g * 4]);
      const float du = d * uu;
#pragma unroll
      for (int i = 0; i < 4; ++i) stage[j][i] = x[i];
      x[0] = fmaf(ex2_approx(d * A2[0]), x[0], du * bv.x);
      x[1] = fmaf(ex2_approx(d * A2[1]), x[1], du * bv.y);
      x[2] = fmaf(ex2_approx(d * A2[2]), x[2], du * bv.z);
      x[3] = fmaf(ex2_approx(d * A2[3]), x[3], du * bv.w);
      float yp = x[0] * cv.x;
      yp = fmaf(x[1], cv.y, yp);
      yp = fmaf(x[2], cv.z, yp);
      yp = fmaf(x[3], cv.w, yp);
      yp = group_sum<kTPC>(yp);
      if (g == 0) {
        const float dout_v = dys[c * kPitch + j];
        float dy = dout_v;
        if (has_z) {
          const float zz = zs[c * kPitch + j];
          const float y = fmaf(Dv, uu, yp);
          const float s = sigmoid(zz);
          dy = dout_v * zz * s;
          zs[c * kPitch + j] = dout_v * y * s * (1.f + zz * (1.f - s));
        }
        dys[c * kPitch + j] = dy;
      }
    }
    __syncwarp();

    // Reverse walk over the chunk.
#pragma unroll
    for (int j = kL - 1; j >= 0; --j) {
      const float d = ds[c * kPitch + j];
      const float uu = us[c * kPitch + j];
      const float dy = dys[c * kPitch + j];
      const float4 bv = *reinterpret_cast<const float4*>(&Bs[j * kN + g * 4]);
      const float4 cv = *reinterpret_cast<const float4*>(&Cs[j * kN + g * 4]);
      const float bb[4] = {bv.x, bv.y, bv.z, bv.w};
      const float cc[4] = {cv.x, cv.y, cv.z, cv.w};
      const float du = d * uu;
      float v[8];
      float shb = 0.f, dda = 0.f;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float a = ex2_approx(d * A2[i]);
        const float xp = stage[j][i];
        const float xt = fmaf(a, xp, du * bb[i]);
        const float h = fmaf(dy, cc[i], gcarry[i]);
        v[i] = h * du;       // dB_t[n] contribution
        v[4 + i] = dy * xt;  // dC_t[n] contribution
        shb = fmaf(h, bb[i], shb);
        const float q = h * xp * a;  // h_t * d x_t / d(dA_t) ... times dA_t
        dA_acc[i] = fmaf(q, d, dA_acc[i]);
        dda = fmaf(q, A[i], dda);
        gcarry[i] = a * h;
      }
      shb = group_sum<kTPC>(shb);
      dda = group_sum<kTPC>(dda);
      if (g == 0) {
        duo[c * kPitch + j] = fmaf(dy, Dv, d * shb);
        const float ddl = fmaf(uu, shb, dda) * sgs[c * kPitch + j];
        ddo[c * kPitch + j] = ddl;
        dD_acc = fmaf(dy, uu, dD_acc);
        dbias_acc += ddl;
      }
      Butterfly<kTPC>::template reduce<kN, kPitch>(v, lane, g, j, red + warp * 2 * kN * kPitch);
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
      float s = 0.f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) s += red[(w * 2 * kN + kn) * kPitch + j];
      if (t0 + j < T) ws[static_cast<int64_t>(kn) * T + t0 + j] = s;
    }
    __syncthreads();
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
void launch_scan_bwd(const SelectiveScanParams& p, bool vec, cudaStream_t stream) {
  const dim3 grid((p.dim + K::kChannels - 1) / K::kChannels, p.batch,
                  selective_scan_splits_of(p));
  auto kernel = scan_bwd_kernel<K>;
  HYLAB_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        K::kSmemBytes),
                   "selective_scan bwd: could not raise the shared-memory limit");
  kernel<<<grid, K::kThreads, K::kSmemBytes, stream>>>(p, vec);
  HYLAB_CUDA_CHECK_LAUNCH("selective_scan bwd launch failed (is this build for the GPU's arch?)");
}

template <typename Elem>
void scan_bwd_dispatch(const SelectiveScanParams& p, bool vec, cudaStream_t stream) {
  switch (p.dstate) {
    case 4: return launch_scan_bwd<BwdTraits<Elem, 4>>(p, vec, stream);
    case 8: return launch_scan_bwd<BwdTraits<Elem, 8>>(p, vec, stream);
    case 16: return launch_scan_bwd<BwdTraits<Elem, 16>>(p, vec, stream);
    case 32: return launch_scan_bwd<BwdTraits<Elem, 32>>(p, vec, stream);
    case 64: return launch_scan_bwd<BwdTraits<Elem, 64>>(p, vec, stream);
    default: throw CudaError("selective_scan bwd: unsupported N (dstate)");
  }
}

}  // namespace hylab::kernels::scan
