// Host dispatch of the soft-capped cross-entropy (cross_entropy.h): dtype and the choice of
// 16-byte accesses (every row start and the width must be multiples of 16 bytes).
#include "kernels/cross_entropy/cross_entropy.h"

#include <cstdint>
#include <stdexcept>

namespace hylab::kernels {
namespace {

bool aligned16(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; }

bool can_vectorize(const SoftcapCrossEntropyParams& p, bool backward) {
  const int64_t per16 = 16 / dtype_size(p.dtype);
  bool ok = p.width % per16 == 0 && p.row_stride % per16 == 0 && aligned16(p.logits);
  if (backward) ok = ok && aligned16(p.dlogits);
  return ok;
}

void check(const SoftcapCrossEntropyParams& p) {
  if (p.rows < 0 || p.rows > 0x7fffffff || p.vocab < 1 || p.width < p.vocab ||
      p.row_stride < p.width) {
    throw std::invalid_argument("softcap_cross_entropy: bad sizes (rows, width, vocab, row_stride)");
  }
}

}  // namespace

void softcap_cross_entropy_fwd(const SoftcapCrossEntropyParams& p, cudaStream_t stream) {
  check(p);
  if (p.rows == 0) return;
  const bool vec = can_vectorize(p, false);
  if (p.dtype == DType::kBFloat16) {
    softcap_cross_entropy_fwd_bf16(p, vec, stream);
  } else {
    softcap_cross_entropy_fwd_f32(p, vec, stream);
  }
}

void softcap_cross_entropy_bwd(const SoftcapCrossEntropyParams& p, cudaStream_t stream) {
  check(p);
  if (p.rows == 0) return;
  const bool vec = can_vectorize(p, true);
  if (p.dtype == DType::kBFloat16) {
    softcap_cross_entropy_bwd_bf16(p, vec, stream);
  } else {
    softcap_cross_entropy_bwd_f32(p, vec, stream);
  }
}

}  // namespace hylab::kernels
