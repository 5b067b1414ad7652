// What a worker can offer: its GPUs (count, name, memory) found with nvidia-smi, or CPU
// trial slots when it has none. Torch-free on purpose: the worker never loads CUDA itself
// (a CUDA error would poison it); only its trainer children do.
#pragma once

#include <string>
#include <vector>

namespace hylab::worker {

struct GpuInfo {
  int index = 0;      // CUDA device index (CUDA_VISIBLE_DEVICES value)
  std::string name;
  double mem_gib = 0;
};

struct Inventory {
  std::vector<GpuInfo> gpus;  // empty: a CPU worker
  int slots = 1;              // = gpus.size(), or CPU trial slots
  double mem_gib = 0;         // host memory
  int cpus = 0;
  std::string host;
};

// Parses `nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits`
// (memory in MiB). Malformed lines are skipped.
std::vector<GpuInfo> parse_nvidia_smi(const std::string& csv);

// gpus_flag: "auto" (every GPU nvidia-smi lists, else CPU), "none" (CPU), or a list "0,1".
// cpu_slots: slots offered when there is no GPU. Throws hylab::Error for a GPU index that
// does not exist or a malformed list.
Inventory detect_inventory(const std::string& gpus_flag, int cpu_slots);

}  // namespace hylab::worker
