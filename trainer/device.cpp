#include "trainer/device.h"

#if HYLAB_TORCH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAStream.h>
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

PhaseTimer::PhaseTimer(const torch::Device& device, int phases)
    : cuda_(device.is_cuda()), ms_(static_cast<size_t>(phases), 0.0) {}

PhaseTimer::~PhaseTimer() {
#if HYLAB_TORCH_CUDA
  for (void* e : events_) cudaEventDestroy(static_cast<cudaEvent_t>(e));
#endif
}

void PhaseTimer::mark() { record(-1); }

void PhaseTimer::lap(int phase) {
  HYLAB_CHECK(phase >= 0 && phase < static_cast<int>(ms_.size()), "PhaseTimer: no phase {}", phase);
  record(phase);
}

// Entry k with phase p >= 0 closes a lap of phase p that began at entry k - 1.
void PhaseTimer::record(int phase) {
#if HYLAB_TORCH_CUDA
  if (cuda_) {
    cudaEvent_t e = nullptr;
    HYLAB_CHECK(cudaEventCreate(&e) == cudaSuccess, "PhaseTimer: cudaEventCreate failed");
    HYLAB_CHECK(cudaEventRecord(e, c10::cuda::getCurrentCUDAStream().stream()) == cudaSuccess,
                "PhaseTimer: cudaEventRecord failed");
    events_.push_back(e);
    phase_of_lap_.push_back(phase);
    return;
  }
#endif
  const auto now = std::chrono::steady_clock::now();
  if (phase >= 0) ms_[static_cast<size_t>(phase)] += std::chrono::duration<double, std::milli>(now - last_).count();
  last_ = now;
}

std::vector<double> PhaseTimer::ms() {
#if HYLAB_TORCH_CUDA
  if (cuda_ && !events_.empty()) {
    HYLAB_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(events_.back())) == cudaSuccess,
                "PhaseTimer: cudaEventSynchronize failed");
    std::vector<double> out(ms_.size(), 0.0);
    for (size_t k = 1; k < events_.size(); ++k) {
      if (phase_of_lap_[k] < 0) continue;
      float t = 0;
      HYLAB_CHECK(cudaEventElapsedTime(&t, static_cast<cudaEvent_t>(events_[k - 1]),
                                       static_cast<cudaEvent_t>(events_[k])) == cudaSuccess,
                  "PhaseTimer: cudaEventElapsedTime failed");
      out[static_cast<size_t>(phase_of_lap_[k])] += t;
    }
    return out;
  }
#endif
  return ms_;
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
