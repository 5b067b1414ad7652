// Host entry points of the selective scan: checks the parameters the kernels rely on and
// dispatches on dtype (the LibTorch glue in model/cuda_ops.cpp validates tensors first).
#include "kernels/selective_scan/selective_scan.h"

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

}  // namespace

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

const char* selective_scan_bwd_variant_name(int variant) {
  switch (variant) {
    case 0: return "v1";
    case 1: return "v2_seg16";
    case 2: return "v2_seg8";
    case 3: return "v2_seg4";
    case 4: return "v2_seg16_defer";
    case 5: return "v2_seg8_defer";
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

void selective_scan_fwd(const SelectiveScanParams& p, cudaStream_t stream) {
  check_common(p, "selective_scan fwd");
  if (p.out == nullptr) throw CudaError("selective_scan fwd: out must be given");
  const int variant = p.fwd_variant < 0 ? kScanFwdDefaultVariant : p.fwd_variant;
  if (variant >= kScanFwdVariants) {
    throw CudaError("selective_scan fwd: unknown kernel variant " + std::to_string(variant) +
                    " (0.." + std::to_string(kScanFwdVariants - 1) + ")");
  }
  const bool vec = selective_scan_vectorizable(p);
  const bool f32 = p.dtype == DType::kFloat32;
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

void selective_scan_bwd(const SelectiveScanParams& p, cudaStream_t stream) {
  check_common(p, "selective_scan bwd");
  if (p.chunk_states == nullptr || p.dout == nullptr || p.du == nullptr ||
      p.ddelta == nullptr || p.dB == nullptr || p.dC == nullptr || p.dA == nullptr ||
      p.ws_dBC == nullptr || p.ws_dA == nullptr || p.ws_dD == nullptr ||
      p.ws_ddelta_bias == nullptr || (p.z != nullptr && p.dz == nullptr)) {
    throw CudaError("selective_scan bwd: missing chunk states, dout, a gradient or a workspace");
  }
  const int variant = p.bwd_variant < 0 ? kScanBwdDefaultVariant : p.bwd_variant;
  if (variant >= kScanBwdVariants) {
    throw CudaError("selective_scan bwd: unknown kernel variant " + std::to_string(variant) +
                    " (0.." + std::to_string(kScanBwdVariants - 1) + ")");
  }
  const bool vec = selective_scan_vectorizable(p);
  const bool f32 = p.dtype == DType::kFloat32;
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
