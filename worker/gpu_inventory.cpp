#include "worker/gpu_inventory.h"

#include <unistd.h>

#include <array>
#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/check.h"

namespace hylab::worker {
namespace {

std::string trim(std::string s) {
  const char* ws = " \t\r\n";
  s.erase(0, s.find_first_not_of(ws));
  s.erase(s.find_last_not_of(ws) + 1);
  return s;
}

std::string run_capture(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return out;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  ::pclose(p);
  return out;
}

double host_mem_gib() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  double kb = 0;
  while (in >> key >> kb) {
    if (key == "MemTotal:") return kb / (1024.0 * 1024.0);
    in.ignore(1 << 10, '\n');
  }
  return 0;
}

}  // namespace

std::vector<GpuInfo> parse_nvidia_smi(const std::string& csv) {
  std::vector<GpuInfo> out;
  std::istringstream in(csv);
  std::string line;
  while (std::getline(in, line)) {
    const size_t a = line.find(','), b = line.rfind(',');
    if (a == std::string::npos || b == a) continue;
    try {
      GpuInfo g;
      g.index = std::stoi(trim(line.substr(0, a)));
      std::string middle = trim(line.substr(a + 1, b - a - 1));  // [uuid,] name
      const size_t c = middle.find(',');
      if (c != std::string::npos && (middle.rfind("GPU-", 0) == 0 || middle.rfind("MIG-", 0) == 0)) {
        g.uuid = trim(middle.substr(0, c));
        middle = trim(middle.substr(c + 1));
      }
      g.name = middle;
      g.mem_gib = std::stod(trim(line.substr(b + 1))) / 1024.0;
      out.push_back(g);
    } catch (const std::exception&) {
      continue;
    }
  }
  return out;
}

std::vector<GpuInfo> visible_gpus(const std::vector<GpuInfo>& listed, const EnvLookup& env,
                                  std::string* source) {
  const char* vars[] = {"CUDA_VISIBLE_DEVICES", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS", "GPU_DEVICE_ORDINAL"};
  const char* var = nullptr;
  std::string value;
  for (const char* v : vars) {
    if (const char* x = env(v)) {
      var = v;
      value = trim(x);
      break;
    }
  }
  if (source != nullptr) *source = var ? var : "";
  if (var == nullptr) return listed;
  if (value.empty() || value == "-1" || value == "NoDevFiles") return {};
  std::vector<std::string> tokens;
  std::stringstream ss(value);
  std::string item;
  while (std::getline(ss, item, ',')) tokens.push_back(trim(item));
  std::vector<GpuInfo> out;
  for (size_t pos = 0; pos < tokens.size(); ++pos) {
    const std::string& tok = tokens[pos];
    if (tok.empty()) continue;
    const bool is_uuid = tok.rfind("GPU-", 0) == 0 || tok.rfind("MIG-", 0) == 0;
    int idx = -1;
    if (!is_uuid) {
      try {
        size_t used = 0;
        idx = std::stoi(tok, &used);
        if (used != tok.size() || idx < 0) idx = -1;
      } catch (const std::exception&) {
        idx = -1;
      }
      // CUDA stops at the first invalid entry; so do we, but loudly.
      if (idx < 0) HYLAB_FAIL("{}={}: \"{}\" is not a GPU index or UUID", var, value, tok);
    }
    const GpuInfo* found = nullptr;
    for (const auto& g : listed) {
      if (is_uuid ? (!g.uuid.empty() && g.uuid.rfind(tok, 0) == 0) : g.index == idx) found = &g;
    }
    if (found == nullptr && !is_uuid && tokens.size() == listed.size()) found = &listed[pos];
    if (found == nullptr) {
      HYLAB_FAIL("{}={}: GPU \"{}\" is not among the {} GPUs nvidia-smi lists", var, value, tok,
                 listed.size());
    }
    GpuInfo g = *found;
    if (!is_uuid) g.index = idx;  // the id the trial's CUDA_VISIBLE_DEVICES must carry
    out.push_back(g);
  }
  return out;
}

Inventory detect_inventory(const std::string& gpus_flag, int cpu_slots) {
  Inventory inv;
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  inv.host = host;
  inv.mem_gib = host_mem_gib();
  inv.cpus = static_cast<int>(std::thread::hardware_concurrency());
  if (cpu_slots < 1) HYLAB_FAIL("--slots {}: expected >= 1", cpu_slots);
  std::vector<GpuInfo> all;
  if (gpus_flag != "none") {
    all = parse_nvidia_smi(run_capture(
        "nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits 2>/dev/null"));
  }
  if (gpus_flag == "auto" || gpus_flag.empty()) {
    inv.gpus = visible_gpus(all, [](const char* name) { return std::getenv(name); });
  } else if (gpus_flag != "none") {
    std::stringstream ss(gpus_flag);
    std::string item;
    while (std::getline(ss, item, ',')) {
      int idx = -1;
      try {
        idx = std::stoi(trim(item));
      } catch (const std::exception&) {
        HYLAB_FAIL("--gpus {}: \"{}\" is not a GPU index; expected auto, none or a list such as 0,1",
                   gpus_flag, item);
      }
      bool found = false;
      for (const auto& g : all) {
        if (g.index == idx) {
          inv.gpus.push_back(g);
          found = true;
        }
      }
      if (!found) {
        HYLAB_FAIL("--gpus {}: GPU {} not found (nvidia-smi lists {} GPUs)", gpus_flag, idx, all.size());
      }
    }
  }
  inv.slots = inv.gpus.empty() ? cpu_slots : static_cast<int>(inv.gpus.size());
  return inv;
}

}  // namespace hylab::worker
