// Small-batch GEMV, bf16 (see gemv.h), with the optional input norm and epilogues.
#include "kernels/common/cuda_check.h"
#include "kernels/common/device_utils.cuh"
#include "kernels/common/launch.cuh"
#include "kernels/gemv/gemv.h"

namespace hylab::kernels {
namespace {

constexpr int kWarps = 8;
constexpr int kUnroll = 4;

// Warps of a block split into groups of wpr (1, 2, 4 or 8); a group computes one output
// column, its warps taking interleaved 16-byte chunks of the row; partial sums meet in shared
// memory. With p.norm_input the block first computes the rms of each x row (fp32), and every
// x element is normalised and rounded to bf16 as it is loaded.
template <int kRows>
__global__ void __launch_bounds__(32 * kWarps) gemv_kernel(const GemvParams p, int wpr) {
  __shared__ float s_acc[kWarps][kRows];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int part = warp % wpr;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * (kWarps / wpr) + warp / wpr;
  const bool active = n < p.out_features;
  const int64_t chunks = p.in_features / 8;  // 8 elements = 16 bytes
  const int64_t step = static_cast<int64_t>(wpr) * 32;
  const bf16* wrow = static_cast<const bf16*>(p.w) + (active ? n : 0) * p.in_features;
  const bf16* x = static_cast<const bf16*>(p.x);

  // The first kUnroll chunks of the weight row (at d768 and d1280 the whole share of a lane)
  // are loaded before anything that depends on the previous kernel: with overlap_launches
  // they arrive while that kernel drains (kernels/common/launch.cuh).
  const int64_t c_first = part * 32 + lane;
  float wv[kUnroll][8];
  auto load_weights = [&](int64_t c0) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t c = c0 + step * u;
      if (active && c < chunks) {
        load_vec(wrow + c * 8, wv[u]);
      } else {
#pragma unroll
        for (int i = 0; i < 8; ++i) wv[u][i] = 0.f;
      }
    }
  };
  load_weights(c_first);
  grid_dependency_wait();  // x (and the residual) may be the previous kernel's output
  launch_dependents();     // the next kernel's pre-wait loads are weights only

  float rstd[kRows];
#pragma unroll
  for (int m = 0; m < kRows; ++m) rstd[m] = 1.f;
  if (p.norm_input) {  // the same for the whole grid: every thread reaches the barriers
#pragma unroll
    for (int m = 0; m < kRows; ++m) {
      float ss = 0.f;
      for (int64_t c = threadIdx.x; c < chunks; c += 32 * kWarps) {
        float xv[8];
        load_vec(x + m * p.x_row_stride + c * 8, xv);
#pragma unroll
        for (int i = 0; i < 8; ++i) ss = fmaf(xv[i], xv[i], ss);
      }
      ss = group_sum<32>(ss);
      if (lane == 0) s_acc[warp][m] = ss;
    }
    __syncthreads();
#pragma unroll
    for (int m = 0; m < kRows; ++m) {
      float t = 0.f;
      for (int w = 0; w < kWarps; ++w) t += s_acc[w][m];
      rstd[m] = rsqrtf(t / static_cast<float>(p.in_features) + p.norm_eps);
    }
    __syncthreads();  // s_acc is reused below
  }

  float acc[kRows];
#pragma unroll
  for (int m = 0; m < kRows; ++m) acc[m] = 0.f;
  if (active) {
    for (int64_t c0 = c_first; c0 < chunks; c0 += step * kUnroll) {
      if (c0 != c_first) load_weights(c0);
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t c = c0 + step * u;
        if (c >= chunks) break;
#pragma unroll
        for (int m = 0; m < kRows; ++m) {
          float xv[8];
          load_vec(x + m * p.x_row_stride + c * 8, xv);
          if (p.norm_input) {
#pragma unroll
            for (int i = 0; i < 8; ++i) xv[i] = to_float(from_float<bf16>(xv[i] * rstd[m]));
          }
#pragma unroll
          for (int i = 0; i < 8; ++i) acc[m] = fmaf(wv[u][i], xv[i], acc[m]);
        }
      }
    }
  }
#pragma unroll
  for (int m = 0; m < kRows; ++m) {
    const float s = group_sum<32>(acc[m]);
    if (lane == 0) s_acc[warp][m] = s;
  }
  __syncthreads();
  if (active && part == 0 && lane < kRows) {
    float s = 0.f;
    for (int w = warp; w < warp + wpr; ++w) s += s_acc[w][lane];
    float y = to_float(from_float<bf16>(s));  // the matmul's bf16 result
    if (p.epilogue == GemvEpilogue::kRelu2) {
      const float r = fmaxf(y, 0.f);
      y = to_float(from_float<bf16>(r * r));
    } else if (p.epilogue == GemvEpilogue::kAddResidual) {
      y += to_float(static_cast<const bf16*>(p.residual)[lane * p.residual_row_stride + n]);
    }
    static_cast<bf16*>(p.y)[lane * p.y_row_stride + n] = from_float<bf16>(y);
  }
}

template <int kRows>
void launch(const GemvParams& p, cudaStream_t s) {
  // Default: two warps per column for matrices of at most 2048 columns (too few warps
  // otherwise), one for wider ones. Measured on an H200 at d20's shapes, batch 1 (`hylab
  // bench kernels --gemv_only`, us a call, wpr 1/2/4/8): 1280->1280 4.0/3.2/4.4/5.0,
  // 5120->1280 10.3/6.5/7.2/7.0, 1280->3840 4.4/5.4/7.6/11.1, 1280->5120 7.0/6.8/9.4/13.9.
  const int wpr = p.warps_per_row > 0 ? p.warps_per_row : (p.out_features <= 2048 ? 2 : 1);
  const int64_t cols_per_block = kWarps / wpr;
  const auto blocks = static_cast<unsigned>((p.out_features + cols_per_block - 1) / cols_per_block);
  launch_kernel(gemv_kernel<kRows>, dim3(blocks), dim3(32 * kWarps), 0, s, p.overlap_launches, p,
                wpr);
  HYLAB_CUDA_CHECK_LAUNCH("gemv kernel");
}

}  // namespace

void gemv_bf16(const GemvParams& p, cudaStream_t s) {
  switch (p.rows) {
    case 1:
      return launch<1>(p, s);
    case 2:
      return launch<2>(p, s);
    case 3:
      return launch<3>(p, s);
    case 4:
      return launch<4>(p, s);
    case 5:
      return launch<5>(p, s);
    case 6:
      return launch<6>(p, s);
    case 7:
      return launch<7>(p, s);
    case 8:
      return launch<8>(p, s);
    default:
      throw CudaError("gemv: rows " + std::to_string(p.rows) + " is not in 1..8");
  }
}

}  // namespace hylab::kernels
