#include "trainer/device.h"

#if HYLAB_TORCH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <cuda_runtime.h>
#endif

#include <cstring>

#include "common/check.h"

namespace hylab::trainer {

torch::Device pick_device(const RunConfig& c, int local_rank) {
  const bool cuda = torch::cuda::is_available();
  if (c.device() == "cpu" || (c.device() == "auto" && !cuda)) return torch::Device(torch::kCPU);
  if (!cuda) {
    throw ConfigError("device = \"cuda\" but no CUDA device is available (this build's LibTorch "
                      "has no CUDA, or no GPU is visible); use device: cpu or auto");
  }
  const int n = static_cast<int>(torch::cuda::device_count());
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(local_rank % n));
}

bool use_bf16_autocast(const RunConfig& c, const torch::Device& device) {
  if (c.dtype() == "fp32") return false;
  if (c.dtype() == "bf16" && !device.is_cuda()) {
    throw ConfigError("dtype = \"bf16\" needs CUDA (bf16 autocast); CPU runs are fp32: use dtype: "
                      "auto or fp32");
  }
  return device.is_cuda();
}

std::string device_name(const torch::Device& device) {
#if HYLAB_TORCH_CUDA
  if (device.is_cuda()) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, device.index()) == cudaSuccess) return prop.name;
    return "cuda";
  }
#endif
  return device.is_cuda() ? "cuda" : "cpu";
}

void synchronize(const torch::Device& device) {
#if HYLAB_TORCH_CUDA
  if (device.is_cuda()) {
    const cudaError_t e = cudaDeviceSynchronize();
    HYLAB_CHECK(e == cudaSuccess, "cudaDeviceSynchronize: {}", cudaGetErrorString(e));
  }
#endif
  (void)device;
}

MemoryStats peak_memory(const torch::Device& device) {
  MemoryStats m;
#if HYLAB_TORCH_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    m.peak_allocated_gib = static_cast<double>(stats.allocated_bytes[0].peak) / (1ull << 30);
    m.peak_reserved_gib = static_cast<double>(stats.reserved_bytes[0].peak) / (1ull << 30);
  }
#endif
  (void)device;
  return m;
}

void reset_peak_memory(const torch::Device& device) {
#if HYLAB_TORCH_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
#endif
  (void)device;
}

std::map<std::string, torch::Tensor> rng_state(const torch::Device& device) {
  std::map<std::string, torch::Tensor> out;
  {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    out["rng.cpu"] = gen.get_state();
  }
  if (device.is_cuda()) {
    auto gen = at::globalContext().defaultGenerator(device);
    std::lock_guard<std::mutex> lock(gen.mutex());
    out["rng.cuda"] = gen.get_state();
  }
  return out;
}

void set_rng_state(const std::map<std::string, torch::Tensor>& state, const torch::Device& device) {
  if (auto it = state.find("rng.cpu"); it != state.end()) {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(it->second.to(torch::kCPU));  // states are CPU byte tensors, whatever the device
  }
  if (auto it = state.find("rng.cuda"); it != state.end() && device.is_cuda()) {
    auto gen = at::globalContext().defaultGenerator(device);
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(it->second.to(torch::kCPU));
  }
}

bool is_out_of_memory(const std::exception& e) {
  if (dynamic_cast<const c10::OutOfMemoryError*>(&e)) return true;
  const char* what = e.what();
  return std::strstr(what, "CUDA out of memory") || std::strstr(what, "out of memory");
}

}  // namespace hylab::trainer
