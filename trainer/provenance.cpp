#include "trainer/provenance.h"

#include <torch/version.h>
#include <unistd.h>

#include <cctype>
#include <fstream>
#include <sstream>

#include "common/check.h"
#include "common/version.h"
#include "trainer/device.h"
#if HYLAB_TORCH_CUDA
#include <cuda_runtime.h>
#endif
#if HYLAB_HAS_NCCL
#include <nccl.h>
#endif

namespace hylab::trainer {
namespace {

std::string cuda_version() {
#if HYLAB_TORCH_CUDA
  int v = 0;
  if (cudaRuntimeGetVersion(&v) == cudaSuccess && v > 0) {
    return fmt::format("{}.{}", v / 1000, (v % 1000) / 10);  // 12080 -> 12.8
  }
  return "unknown";
#else
  return "none";
#endif
}

std::string nccl_version() {
#if HYLAB_HAS_NCCL
  int v = 0;
  if (ncclGetVersion(&v) == ncclSuccess && v > 0) {
    // NCCL >= 2.9 encodes major*10000 + minor*100 + patch.
    return fmt::format("{}.{}.{}", v / 10000, (v % 10000) / 100, v % 100);
  }
  return "unknown";
#else
  return "none";
#endif
}

std::string driver_version() {
  std::ifstream in("/proc/driver/nvidia/version");
  if (!in) return "none";
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string v = parse_nvidia_driver_version(ss.str());
  return v.empty() ? "unknown" : v;
}

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0) return "unknown";
  return buf;
}

}  // namespace

std::string parse_nvidia_driver_version(const std::string& text) {
  // "NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.86.15  Thu Jan 16 ..." (also
  // "... Open Kernel Module for x86_64  570.86.15 ..."): the first dotted number on the line.
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.find("NVRM version") == std::string::npos) continue;
    std::istringstream words(line);
    std::string w;
    while (words >> w) {
      if (w.find('.') != std::string::npos &&
          w.find_first_not_of("0123456789.") == std::string::npos && std::isdigit(w[0])) {
        return w;
      }
    }
  }
  return "";
}

nlohmann::ordered_json build_provenance() {
  return {{"hylab_version", hylab_version()},
          {"hylab_commit", hylab_commit()},
          {"torch_version", TORCH_VERSION},
          {"cuda_version", cuda_version()},
          {"nccl_version", nccl_version()}};
}

nlohmann::ordered_json collect_provenance(const c10::Device& device) {
  nlohmann::ordered_json p = build_provenance();
  p["driver_version"] = driver_version();
  p["gpu_name"] = device_name(device);
  p["host"] = host_name();
  return p;
}

std::string version_text() {
  const auto p = build_provenance();
  return fmt::format("hylab {} (commit {})\nLibTorch {}, CUDA {}, NCCL {}\n",
                     p["hylab_version"].get<std::string>(), p["hylab_commit"].get<std::string>(),
                     p["torch_version"].get<std::string>(), p["cuda_version"].get<std::string>(),
                     p["nccl_version"].get<std::string>());
}

}  // namespace hylab::trainer
