// Rotary + QK-norm + KV append for one decode token (see rope_append.h). One warp per head
// row; small, so one .cu for both dtypes.
#include <string>

#include "kernels/common/cuda_check.h"
#include "kernels/common/device_utils.cuh"
#include "kernels/decode_attention/rope_append.h"

namespace hylab::kernels {
namespace {

constexpr int kWarps = 4;
constexpr int kMaxPerLane = 8;  // head_dim <= 256

// Rounds to T as a LibTorch element-wise op on T tensors does.
template <typename T>
__device__ __forceinline__ float round_to(float v) {
  return to_float(from_float<T>(v));
}

template <typename T>
__global__ void __launch_bounds__(32 * kWarps) rope_append_kernel(const RopeAppendParams p) {
  const int rows = p.heads + 2 * p.kv_heads;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (row >= static_cast<int64_t>(p.batch) * rows) return;  // whole warps
  const int b = static_cast<int>(row / rows), j = static_cast<int>(row % rows);
  const int lane = threadIdx.x % 32, D = p.head_dim, half = D / 2;
  const T* x = static_cast<const T*>(p.qkv) + b * p.qkv_batch_stride + static_cast<int64_t>(j) * D;
  const int64_t pos = *p.pos;
  const int64_t cache_off = b * p.kv_batch_stride + pos * p.kv_row_stride;
  if (j >= p.heads + p.kv_heads) {  // a v head: straight into the cache
    T* dst = static_cast<T*>(p.v_cache) + cache_off + (j - p.heads - p.kv_heads) * p.kv_head_stride;
    for (int d = lane; d < D; d += 32) dst[d] = x[d];
    return;
  }
  const T* cs = static_cast<const T*>(p.cos_full);
  const T* sn = static_cast<const T*>(p.sin_full);
  float y[kMaxPerLane];
  float ss = 0.f;
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int d = lane + 32 * i;
    y[i] = 0.f;
    if (d < D) {
      const float a = round_to<T>(to_float(x[d]) * to_float(cs[d]));
      const float c = round_to<T>(to_float(x[d < half ? d + half : d - half]) * to_float(sn[d]));
      y[i] = round_to<T>(a + c);
      ss = fmaf(y[i], y[i], ss);
    }
  }
  ss = group_sum<32>(ss);
  const float inv = rsqrtf(ss / static_cast<float>(D) + p.eps);
  T* dst = j < p.heads ? static_cast<T*>(p.q_out) + (static_cast<int64_t>(b) * p.heads + j) * D
                       : static_cast<T*>(p.k_cache) + cache_off + (j - p.heads) * p.kv_head_stride;
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int d = lane + 32 * i;
    if (d < D) dst[d] = from_float<T>(y[i] * inv);
  }
}

}  // namespace

bool rope_append_supports_head_dim(int d) { return d >= 2 && d <= 32 * kMaxPerLane && d % 2 == 0; }

void rope_append(const RopeAppendParams& p, cudaStream_t stream) {
  const std::string w = "rope_append";
  if (p.batch <= 0 || p.heads <= 0 || p.kv_heads <= 0 || p.max_len <= 0) {
    throw CudaError(w + ": batch, heads, kv_heads, max_len must be positive (got " +
                    std::to_string(p.batch) + ", " + std::to_string(p.heads) + ", " +
                    std::to_string(p.kv_heads) + ", " + std::to_string(p.max_len) + ")");
  }
  if (!rope_append_supports_head_dim(p.head_dim)) {
    throw CudaError(w + ": head_dim = " + std::to_string(p.head_dim) +
                    " is not supported; allowed: even, at most 256");
  }
  if (p.qkv == nullptr || p.cos_full == nullptr || p.sin_full == nullptr || p.pos == nullptr ||
      p.q_out == nullptr || p.k_cache == nullptr || p.v_cache == nullptr) {
    throw CudaError(w + ": qkv, cos_full, sin_full, pos, q_out, k_cache, v_cache must be given");
  }
  const int64_t rows = static_cast<int64_t>(p.batch) * (p.heads + 2 * p.kv_heads);
  const auto blocks = static_cast<unsigned>((rows + kWarps - 1) / kWarps);
  if (p.dtype == DType::kFloat32) {
    rope_append_kernel<float><<<blocks, 32 * kWarps, 0, stream>>>(p);
  } else {
    rope_append_kernel<bf16><<<blocks, 32 * kWarps, 0, stream>>>(p);
  }
  HYLAB_CUDA_CHECK_LAUNCH("rope_append kernel");
}

}  // namespace hylab::kernels
