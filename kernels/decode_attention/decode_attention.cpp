// Host entry of the decode attention: parameter checks, split count, dtype dispatch.
#include "kernels/decode_attention/decode_attention.h"

#include <algorithm>
#include <string>

#include "kernels/common/cuda_check.h"

namespace hylab::kernels {
namespace {

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

int device_sms() {
  static int sms = [] {
    int dev = 0, n = 0;
    HYLAB_CUDA_CHECK(cudaGetDevice(&dev), "decode_attention: no current device");
    HYLAB_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev),
                     "decode_attention: multiprocessor count");
    return n;
  }();
  return sms;
}

}  // namespace

bool decode_attention_supports_head_dim(int d) {
  return d == 16 || d == 32 || d == 64 || d == 128 || d == 256;
}

int decode_attention_num_splits(int batch, int heads, int64_t max_len) {
  // At least 64 keys a split (two passes of a block); about 32 blocks per multiprocessor, so
  // the last of the ~6 waves (5 blocks fit at once) leaves little idle, and a short cache at
  // batch 1 still spreads over many multiprocessors.
  constexpr int64_t kMinKeys = 64;
  const int64_t by_len = (max_len + kMinKeys - 1) / kMinKeys;
  const int64_t bh = std::max<int64_t>(1, static_cast<int64_t>(batch) * heads);
  const int64_t by_device = (32 * static_cast<int64_t>(device_sms()) + bh - 1) / bh;
  return static_cast<int>(std::max<int64_t>(1, std::min(by_len, by_device)));
}

void decode_attention(const DecodeAttentionParams& p, cudaStream_t stream) {
  const std::string w = "decode_attention";
  if (p.batch <= 0 || p.heads <= 0 || p.kv_heads <= 0 || p.max_len <= 0) {
    throw CudaError(w + ": batch, heads, kv_heads, max_len must be positive (got " +
                    std::to_string(p.batch) + ", " + std::to_string(p.heads) + ", " +
                    std::to_string(p.kv_heads) + ", " + std::to_string(p.max_len) + ")");
  }
  if (p.heads % p.kv_heads != 0) {
    throw CudaError(w + ": kv_heads = " + std::to_string(p.kv_heads) +
                    " must divide heads = " + std::to_string(p.heads));
  }
  if (!decode_attention_supports_head_dim(p.head_dim)) {
    throw CudaError(w + ": head_dim = " + std::to_string(p.head_dim) +
                    " is not supported; allowed: 16, 32, 64, 128, 256");
  }
  if (p.num_splits < 1 || p.split_len < 1 ||
      static_cast<int64_t>(p.num_splits) * p.split_len < p.max_len) {
    throw CudaError(w + ": num_splits * split_len must cover max_len (got " +
                    std::to_string(p.num_splits) + " * " + std::to_string(p.split_len) + " < " +
                    std::to_string(p.max_len) + ")");
  }
  if (p.q == nullptr || p.k == nullptr || p.v == nullptr || p.pos == nullptr || p.out == nullptr ||
      p.partial_acc == nullptr || p.partial_ml == nullptr) {
    throw CudaError(w + ": q, k, v, pos, out and both workspaces must be given");
  }
  if (!aligned16(p.q) || !aligned16(p.k) || !aligned16(p.v) || !aligned16(p.out) ||
      p.q_batch_stride % 8 != 0 || p.q_head_stride % 8 != 0 || p.kv_batch_stride % 8 != 0 ||
      p.kv_head_stride % 8 != 0 || p.kv_row_stride % 8 != 0) {
    throw CudaError(w + ": q, k, v, out must be 16-byte aligned with strides in multiples of 8");
  }
  if (p.dtype == DType::kFloat32) {
    decode_attention_f32(p, stream);
  } else {
    decode_attention_bf16(p, stream);
  }
}

}  // namespace hylab::kernels
