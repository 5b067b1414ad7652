// Host entry points of the selective scan: checks the parameters the kernels rely on and
// dispatches on dtype (the LibTorch glue in model/cuda_ops.cpp validates tensors first).
#include "kernels/selective_scan/selective_scan.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "kernels/common/cuda_check.h"

namespace hylab::kernels {
namespace {

bool aligned(const void* p) {
  return p == nullptr || (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

void check_common(const SelectiveScanParams& p, const char* who) {
  const std::string w = who;
  if (p.batch <= 0 || p.dim <= 0 || p.seqlen <= 0) {
    throw CudaError(w + ": B, E, T must be positive (got " + std::to_string(p.batch) + ", " +
                    std::to_string(p.dim) + ", " + std::to_string(p.seqlen) + ")");
  }
  if (!selective_scan_supports_dstate(p.dstate)) {
    throw CudaError(w + ": N (dstate) = " + std::to_string(p.dstate) +
                    " is not supported; allowed: 4, 8, 16, 32, 64");
  }
  if (p.u == nullptr || p.delta == nullptr || p.A == nullptr || p.Bm == nullptr ||
      p.Cm == nullptr) {
    throw CudaError(w + ": u, delta, A, Bm, Cm must be given");
  }
}

// HYLAB_SCAN_SPLITS, read once (the one place it is read): same meaning as
// SelectiveScanParams::force_splits (unset or 0 = automatic, 1 = off, > 1 = that many).
int env_splits() {
  static const int value = [] {
    const char* v = std::getenv("HYLAB_SCAN_SPLITS");
    if (v == nullptr || *v == '\0') return 0;
    char* end = nullptr;
    const long n = std::strtol(v, &end, 10);
    if (*end != '\0' || n < 0) {
      throw CudaError(std::string("HYLAB_SCAN_SPLITS must be a non-negative integer (0 auto, ") +
                      "1 off, > 1 that many splits), got '" + v + "'");
    }
    return static_cast<int>(std::min<long>(n, 65535));
  }();
  return value;
}

// Multiprocessors of the device current at the first call, queried once (one GPU model per
// process is what hylab runs).
int sm_count() {
  static const int value = [] {
    int dev = 0, n = 0;
    HYLAB_CUDA_CHECK(cudaGetDevice(&dev), "selective_scan: cudaGetDevice failed");
    HYLAB_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev),
                     "selective_scan: could not query the multiprocessor count");
    return std::max(n, 1);
  }();
  return value;
}

// Forward blocks cover 1024 / N channels (256 threads, N / 4 per channel).
int fwd_channels_per_block(int dstate) { return 256 / (dstate / 4); }

// Automatic splits: the S that minimises a wave model of the time,
//   cost(S) = waves(blocks * S) * L + 0.5 * waves(blocks * (S - 1)) * L,   L = split length,
// where a wave is 2 resident blocks per SM (the kernels' __launch_bounds__ minimum) and the
// pre-pass (the second term; lighter than the scan) counts half. S > 1 must beat S = 1 by
// 20 % (the extra launches and workspace are not free) and keep L >= kMinAutoSplitLen. In
// effect: no split once B x channel blocks fills the GPU (d12 training: 768 blocks), ~10
// splits for B2 x E1536 x T32768 (48 blocks).
int auto_splits(int blocks, int seqlen) {
  const int max_s = std::min(seqlen / kMinAutoSplitLen, 1024);
  if (max_s < 2) return 1;
  const int64_t slots = 2 * static_cast<int64_t>(sm_count());
  auto waves = [&](int64_t n) { return static_cast<double>((n + slots - 1) / slots); };
  auto cost = [&](int s) {
    const int len = selective_scan_split_len(seqlen, s);
    const int eff = (seqlen + len - 1) / len;
    return waves(static_cast<int64_t>(blocks) * eff) * len +
           (eff > 1 ? 0.5 * waves(static_cast<int64_t>(blocks) * (eff - 1)) * len : 0.0);
  };
  const double base = cost(1);
  int best = 1;
  double best_cost = 0.8 * base;
  for (int s = 2; s <= max_s; ++s) {
    if (selective_scan_split_len(seqlen, s) < kMinAutoSplitLen) break;
    const double c = cost(s);
    if (c < best_cost) best = s, best_cost = c;
  }
  return best;
}

}  // namespace

int selective_scan_split_len(int seqlen, int splits) {
  const int per = (seqlen + splits - 1) / splits;
  return (per + kSplitAlign - 1) / kSplitAlign * kSplitAlign;
}

int selective_scan_num_splits(const SelectiveScanParams& p, bool bwd) {
  if (p.seqlen <= kSplitAlign || p.batch <= 0 || p.dim <= 0 ||
      !selective_scan_supports_dstate(p.dstate)) {
    return 1;
  }
  const int want = p.force_splits != 0 ? p.force_splits : env_splits();
  int s = 1;
  if (want > 1) {
    s = std::min(want, 65535);
  } else if (want == 0) {
    const int cpb =
        bwd ? selective_scan_bwd_channels_per_block(p.dstate) : fwd_channels_per_block(p.dstate);
    s = auto_splits(p.batch * ((p.dim + cpb - 1) / cpb), p.seqlen);
  }
  if (s <= 1) return 1;
  const int len = selective_scan_split_len(p.seqlen, s);
  return (p.seqlen + len - 1) / len;  // fewer when the splits' rounding to kSplitAlign ends early
}

int64_t selective_scan_split_ws_floats(const SelectiveScanParams& p, bool bwd) {
  const int s = selective_scan_num_splits(p, bwd);
  if (s <= 1) return 0;
  return 2 * static_cast<int64_t>(s - 1) * p.batch * p.dim * p.dstate;
}

bool selective_scan_supports_dstate(int n) {
  return n == 4 || n == 8 || n == 16 || n == 32 || n == 64;
}

const char* selective_scan_fwd_variant_name(int variant) {
  switch (variant) {
    case 0: return "v1";
    case 1: return "v2_tile16";
    default:
      throw CudaError("selective_scan fwd: unknown kernel variant " + std::to_string(variant));
  }
}

int selective_scan_bwd_default_variant(const SelectiveScanParams& p) {
  if (p.split_len > 0) return 1;  // split: the grid is sized to ~2 waves, 16-step segments win
  const int64_t blocks =
      static_cast<int64_t>(p.batch) * selective_scan_bwd_blocks_per_batch(p.dim, p.dstate);
  return blocks > 2 * static_cast<int64_t>(sm_count()) ? 2 : 1;
}

const char* selective_scan_bwd_variant_name(int variant) {
  switch (variant) {
    case 0: return "v1";
    case 1: return "v2_seg16_defer";
    case 2: return "v2_seg8_defer";
    default:
      throw CudaError("selective_scan bwd: unknown kernel variant " + std::to_string(variant));
  }
}

// Every backward variant uses this block shape (the workspace layout is shared).
int selective_scan_bwd_channels_per_block(int dstate) {
  const int threads = dstate <= 8 ? 128 : 256;
  return threads / (dstate / 4);
}

int selective_scan_bwd_blocks_per_batch(int dim, int dstate) {
  const int cpb = selective_scan_bwd_channels_per_block(dstate);
  return (dim + cpb - 1) / cpb;
}

bool selective_scan_vectorizable(const SelectiveScanParams& p) {
  const int64_t v = p.dtype == DType::kFloat32 ? 4 : 8;
  auto strides_ok = [&](int64_t a, int64_t b) { return a % v == 0 && b % v == 0; };
  return p.seqlen % v == 0 && aligned(p.u) && aligned(p.delta) && aligned(p.z) &&
         aligned(p.Bm) && aligned(p.Cm) && aligned(p.out) && aligned(p.dout) &&
         aligned(p.du) && aligned(p.ddelta) && aligned(p.dz) &&
         strides_ok(p.u_batch_stride, p.u_dim_stride) &&
         strides_ok(p.delta_batch_stride, p.delta_dim_stride) &&
         (p.z == nullptr || strides_ok(p.z_batch_stride, p.z_dim_stride)) &&
         strides_ok(p.B_batch_stride, p.B_dstate_stride) &&
         strides_ok(p.C_batch_stride, p.C_dstate_stride);
}

namespace {

// A copy of p with split_len set for `splits` (0 when not split); throws when the split
// workspace is missing.
SelectiveScanParams with_splits(const SelectiveScanParams& in, int splits, const char* who) {
  SelectiveScanParams p = in;
  p.split_len = splits > 1 ? selective_scan_split_len(p.seqlen, splits) : 0;
  if (splits > 1 && p.ws_split == nullptr) {
    throw CudaError(std::string(who) + ": " + std::to_string(splits) +
                    " splits of T need ws_split (selective_scan_split_ws_floats floats)");
  }
  return p;
}

}  // namespace

void selective_scan_fwd(const SelectiveScanParams& params, cudaStream_t stream) {
  check_common(params, "selective_scan fwd");
  if (params.out == nullptr) throw CudaError("selective_scan fwd: out must be given");
  const SelectiveScanParams p =
      with_splits(params, selective_scan_num_splits(params, /*bwd=*/false), "selective_scan fwd");
  const int variant = p.fwd_variant < 0 ? kScanFwdDefaultVariant : p.fwd_variant;
  if (variant >= kScanFwdVariants) {
    throw CudaError("selective_scan fwd: unknown kernel variant " + std::to_string(variant) +
                    " (0.." + std::to_string(kScanFwdVariants - 1) + ")");
  }
  const bool vec = selective_scan_vectorizable(p);
  const bool f32 = p.dtype == DType::kFloat32;
  if (p.split_len > 0) {  // local end states + decays, then the true start states
    if (f32) {
      selective_scan_split_fwd_f32(p, vec, stream);
    } else {
      selective_scan_split_fwd_bf16(p, vec, stream);
    }
    selective_scan_split_carry(p, /*bwd=*/false, stream);
  }
  if (variant == 0 && f32) {
    selective_scan_fwd_f32(p, vec, stream);
  } else if (variant == 0) {
    selective_scan_fwd_bf16(p, vec, stream);
  } else if (f32) {
    selective_scan_fwd_v2_f32(p, vec, stream);
  } else {
    selective_scan_fwd_v2_bf16(p, vec, stream);
  }
}

void selective_scan_bwd(const SelectiveScanParams& params, cudaStream_t stream) {
  check_common(params, "selective_scan bwd");
  const SelectiveScanParams& q = params;
  if (q.chunk_states == nullptr || q.dout == nullptr || q.du == nullptr ||
      q.ddelta == nullptr || q.dB == nullptr || q.dC == nullptr || q.dA == nullptr ||
      q.ws_dBC == nullptr || q.ws_dA == nullptr || q.ws_dD == nullptr ||
      q.ws_ddelta_bias == nullptr || (q.z != nullptr && q.dz == nullptr)) {
    throw CudaError("selective_scan bwd: missing chunk states, dout, a gradient or a workspace");
  }
  const SelectiveScanParams p =
      with_splits(params, selective_scan_num_splits(params, /*bwd=*/true), "selective_scan bwd");
  const int variant = p.bwd_variant < 0 ? selective_scan_bwd_default_variant(p) : p.bwd_variant;
  if (variant >= kScanBwdVariants) {
    throw CudaError("selective_scan bwd: unknown kernel variant " + std::to_string(variant) +
                    " (0.." + std::to_string(kScanBwdVariants - 1) + ")");
  }
  const bool vec = selective_scan_vectorizable(p);
  const bool f32 = p.dtype == DType::kFloat32;
  if (p.split_len > 0) {  // local outgoing adjoints + decays, then the true incoming ones
    if (f32) {
      selective_scan_split_bwd_f32(p, vec, stream);
    } else {
      selective_scan_split_bwd_bf16(p, vec, stream);
    }
    selective_scan_split_carry(p, /*bwd=*/true, stream);
  }
  if (variant == 0 && f32) {
    selective_scan_bwd_f32(p, vec, stream);
  } else if (variant == 0) {
    selective_scan_bwd_bf16(p, vec, stream);
  } else if (f32) {
    selective_scan_bwd_v2_f32(p, variant, vec, stream);
  } else {
    selective_scan_bwd_v2_bf16(p, variant, vec, stream);
  }
  selective_scan_bwd_reduce(p, stream);
}

}  // namespace hylab::kernels
