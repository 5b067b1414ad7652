// Programmatic dependent launch (Hopper, sm_90): a kernel may start while the kernel before it
// in the stream drains, do the work that does not depend on it (load weights), and then wait
// for it. Used by the decode-step kernels (kernels/gemv, kernels/decode/mamba_step), where a
// step is a chain of small dependent launches and each launch's gap costs 1-3 us.
//
// The contract a kernel launched with `overlap` keeps:
//   - before grid_dependency_wait() it reads nothing that the kernel launched just before it
//     may write (weights, and data no kernel of the step writes);
//   - it calls launch_dependents() only after grid_dependency_wait() returns, unless what its
//     own dependents read before their wait is written by no kernel still running then.
// Then, whatever the chain, every kernel before the previous one has completed when a kernel
// starts, so the rule above only has to hold for neighbours.
#pragma once

#include <cuda_runtime.h>

#include "kernels/common/cuda_check.h"

namespace hylab::kernels {

// Blocks until the kernel before this one in the stream has completed and its writes are
// visible; returns at once when this kernel was launched without the attribute.
__device__ __forceinline__ void grid_dependency_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// The next kernel in the stream, if launched with the attribute, may start once every block
// of this one has called this (or exited).
__device__ __forceinline__ void launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// kernel<<<grid, block, smem, stream>>>(args...), with the programmatic-stream-serialization
// attribute when `overlap`. Works inside CUDA graph capture (the edge becomes programmatic).
template <typename... KArgs, typename... Args>
void launch_kernel(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem,
                   cudaStream_t stream, bool overlap, Args... args) {
  if (!overlap) {
    kernel<<<grid, block, smem, stream>>>(args...);
    return;
  }
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  HYLAB_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, args...), "programmatic dependent launch failed");
}

}  // namespace hylab::kernels
