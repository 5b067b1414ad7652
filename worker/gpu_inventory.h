// What a worker can offer: its GPUs (count, name, memory) found with nvidia-smi, or CPU
// trial slots when it has none. Torch-free on purpose: the worker never loads CUDA itself
// (a CUDA error would poison it); only its trainer children do.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace hylab::worker {

struct GpuInfo {
  int index = 0;      // CUDA device index (CUDA_VISIBLE_DEVICES value)
  std::string name;
  double mem_gib = 0;
  std::string uuid;   // "GPU-..." when nvidia-smi gave it
};

struct Inventory {
  std::vector<GpuInfo> gpus;  // empty: a CPU worker
  int slots = 1;              // = gpus.size(), or CPU trial slots
  double mem_gib = 0;         // host memory
  int cpus = 0;
  std::string host;
};

// Parses `nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits`
// (memory in MiB; the uuid column may be left out). Malformed lines are skipped.
std::vector<GpuInfo> parse_nvidia_smi(const std::string& csv);

// Reads one environment variable: its value, or nullptr if unset (std::getenv in production).
using EnvLookup = std::function<const char*(const char*)>;

// The GPUs this process was given, out of the ones nvidia-smi lists (`listed`), decided by
// the first of these variables that is set:
//   CUDA_VISIBLE_DEVICES  indices or GPU-/MIG- UUIDs (prefixes allowed), as CUDA reads it;
//                         "", "-1" or "NoDevFiles" (SLURM, no GPU allocated) mean none.
//                         SLURM sets it for every job/step with --gpus/--gres=gpu.
//   SLURM_STEP_GPUS, SLURM_JOB_GPUS   the allocation's GPU indices (set by SLURM; the job's
//                         prolog/batch environment may have these without the above)
//   GPU_DEVICE_ORDINAL    SLURM's copy of the allocation for non-CUDA runtimes
// and all of `listed` when none is set. Each result's `index` is the id to put in a trial's
// CUDA_VISIBLE_DEVICES (the token given, resolved to nvidia-smi's index for a UUID). Under a
// cgroup that renumbers the allowed GPUs from 0 (SLURM ConstrainDevices), nvidia-smi lists
// exactly those, and an index not listed is taken by position. `source` gets the variable
// used ("" for none). Throws hylab::Error naming the variable for a GPU it cannot find.
std::vector<GpuInfo> visible_gpus(const std::vector<GpuInfo>& listed, const EnvLookup& env,
                                  std::string* source = nullptr);

// gpus_flag: "auto" (the GPUs this process was given: visible_gpus of every GPU nvidia-smi
// lists; CPU if none), "none" (CPU), or a list "0,1" of nvidia-smi indices.
// cpu_slots: slots offered when there is no GPU. Throws hylab::Error for a GPU index that
// does not exist or a malformed list.
Inventory detect_inventory(const std::string& gpus_flag, int cpu_slots);

}  // namespace hylab::worker
