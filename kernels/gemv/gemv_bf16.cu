// Small-batch GEMV, bf16 (see gemv.h). One warp per output column.
#include "kernels/common/cuda_check.h"
#include "kernels/common/device_utils.cuh"
#include "kernels/gemv/gemv.h"

namespace hylab::kernels {
namespace {

constexpr int kWarps = 8;
constexpr int kUnroll = 4;

template <int kRows>
__global__ void __launch_bounds__(32 * kWarps) gemv_kernel(const GemvParams p) {
  const int lane = threadIdx.x % 32;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (n >= p.out_features) return;  // whole warps only
  const int64_t chunks = p.in_features / 8;  // 8 elements = 16 bytes
  const bf16* wrow = static_cast<const bf16*>(p.w) + n * p.in_features;
  const bf16* x = static_cast<const bf16*>(p.x);
  float acc[kRows];
#pragma unroll
  for (int m = 0; m < kRows; ++m) acc[m] = 0.f;
  for (int64_t c0 = lane; c0 < chunks; c0 += 32 * kUnroll) {
    float wv[kUnroll][8];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t c = c0 + 32 * u;
      if (c < chunks) {
        load_vec(wrow + c * 8, wv[u]);
      } else {
#pragma unroll
        for (int i = 0; i < 8; ++i) wv[u][i] = 0.f;
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t c = c0 + 32 * u;
      if (c >= chunks) break;
#pragma unroll
      for (int m = 0; m < kRows; ++m) {
        float xv[8];
        load_vec(x + m * p.x_row_stride + c * 8, xv);
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[m] = fmaf(wv[u][i], xv[i], acc[m]);
      }
    }
  }
#pragma unroll
  for (int m = 0; m < kRows; ++m) {
    const float s = group_sum<32>(acc[m]);
    if (lane == 0) static_cast<bf16*>(p.y)[m * p.y_row_stride + n] = from_float<bf16>(s);
  }
}

template <int kRows>
void launch(const GemvParams& p, cudaStream_t s) {
  const auto blocks = static_cast<unsigned>((p.out_features + kWarps - 1) / kWarps);
  gemv_kernel<kRows><<<blocks, 32 * kWarps, 0, s>>>(p);
  HYLAB_CUDA_CHECK_LAUNCH("gemv kernel");
}

}  // namespace

void gemv_bf16(const GemvParams& p, cudaStream_t s) {
  switch (p.rows) {
    case 1: return launch<1>(p, s);
    case 2: return launch<2>(p, s);
    case 3: return launch<3>(p, s);
    case 4: return launch<4>(p, s);
    case 5: return launch<5>(p, s);
    case 6: return launch<6>(p, s);
    case 7: return launch<7>(p, s);
    case 8: return launch<8>(p, s);
    default: throw CudaError("gemv: rows " + std::to_string(p.rows) + " is not in 1..8");
  }
}

}  // namespace hylab::kernels
