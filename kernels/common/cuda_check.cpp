#include "kernels/common/cuda_check.h"

namespace hylab::kernels {

void throw_cuda_error(cudaError_t err, const char* expr, const char* file, int line,
                      const char* hint) {
  std::string msg = std::string(file) + ":" + std::to_string(line) + ": CUDA error " +
                    cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ") in " + expr;
  if (hint != nullptr && hint[0] != '\0') msg += "; hint: " + std::string(hint);
  throw CudaError(msg);
}

}  // namespace hylab::kernels
