#include "worker/gpu_inventory.h"

#include <unistd.h>

#include <array>
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
      g.name = trim(line.substr(a + 1, b - a - 1));
      g.mem_gib = std::stod(trim(line.substr(b + 1))) / 1024.0;
      out.push_back(g);
    } catch (const std::exception&) {
      continue;
    }
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
        "nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits 2>/dev/null"));
  }
  if (gpus_flag == "auto" || gpus_flag.empty()) {
    inv.gpus = all;
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
