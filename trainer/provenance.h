// What produced a run: hylab's version and commit, the LibTorch, CUDA and NCCL it was built
// with, the NVIDIA driver, the GPU and the host. The trainer writes it to
// <run_dir>/provenance.json at the start and into the run summary at the end (so every trial
// row in SQLite says where its numbers came from); `hylab --version` prints the build part.
#pragma once

#include <c10/core/Device.h>

#include <nlohmann/json.hpp>
#include <string>

namespace hylab::trainer {

// The keys, in order: hylab_version, hylab_commit, torch_version, cuda_version (the CUDA
// runtime LibTorch uses, "none" in a CPU build), nccl_version ("none" without NCCL),
// driver_version (the NVIDIA kernel driver, "none" when there is none), gpu_name (the
// device's name; "cpu" on CPU), host. Every value is a string.
nlohmann::ordered_json collect_provenance(const c10::Device& device);

// The build-time part only (no device, no driver): version, commit, LibTorch, CUDA, NCCL.
nlohmann::ordered_json build_provenance();

// "hylab 0.1.0 (commit e9b77d8c1a2f)\nLibTorch 1.13.0, CUDA none, NCCL none\n".
std::string version_text();

// The NVIDIA driver version from a /proc/driver/nvidia/version text ("570.86.15"), or "".
std::string parse_nvidia_driver_version(const std::string& proc_text);

}  // namespace hylab::trainer
