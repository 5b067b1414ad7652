// Checked CUDA calls for the torch-free kernels library.
//
// HYLAB_CUDA_CHECK(expr, hint) throws hylab::kernels::CudaError with file:line, the failing
// expression, CUDA's error string and a hint; HYLAB_CUDA_CHECK_LAUNCH(hint) does the same for
// the last kernel launch (bad grid, too much shared memory, missing sm_90 image).
// A CUDA error poisons the process (see docs/KERNELS.md): callers report and exit.
#pragma once

#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

namespace hylab::kernels {

class CudaError : public std::runtime_error {
 public:
  explicit CudaError(const std::string& what) : std::runtime_error(what) {}
};

[[noreturn]] void throw_cuda_error(cudaError_t err, const char* expr, const char* file, int line,
                                   const char* hint);

}  // namespace hylab::kernels

#define HYLAB_CUDA_CHECK(expr, hint)                                                   \
  do {                                                                                 \
    const cudaError_t hylab_err_ = (expr);                                             \
    if (hylab_err_ != cudaSuccess) {                                                   \
      ::hylab::kernels::throw_cuda_error(hylab_err_, #expr, __FILE__, __LINE__, hint); \
    }                                                                                  \
  } while (0)

#define HYLAB_CUDA_CHECK_LAUNCH(hint) HYLAB_CUDA_CHECK(cudaGetLastError(), hint)
