// The activation dtypes the kernels take (fp32 state and accumulation everywhere).
#pragma once

namespace hylab::kernels {

enum class DType { kFloat32, kBFloat16 };

inline const char* dtype_name(DType t) { return t == DType::kFloat32 ? "float32" : "bfloat16"; }
inline int dtype_size(DType t) { return t == DType::kFloat32 ? 4 : 2; }

}  // namespace hylab::kernels
