#include "trainer/profile.h"

#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <map>
#include <set>

#include "common/check.h"

namespace hylab::trainer {
namespace {

// Coarse kind of a CUDA kernel, from its (mangled or plain) name.
std::string kernel_group(const std::string& name) {
  auto has = [&](const char* s) { return name.find(s) != std::string::npos; };
  if (has("selective_scan") || has("causal_conv1d") || has("hylab")) return "hylab kernels";
  if (has("flash") || has("fmha") || has("attention") || has("cudnn")) return "attention";
  if (has("gemm") || has("nvjet") || has("xmma") || has("cutlass") || has("cublas") ||
      has("sm90_") || has("wgmma"))
    return "matmul";
  if (has("reduce") || has("Reduce") || has("softmax") || has("norm") || has("Norm"))
    return "reduction/softmax/norm";
  if (has("elementwise") || has("Elementwise") || has("vectorized") || has("unrolled"))
    return "elementwise";
  if (has("Memcpy") || has("Memset") || has("copy") || has("cat") || has("Cat"))
    return "copy/cat";
  return "other";
}

}  // namespace

nlohmann::ordered_json profile_gpu_work(const std::function<void()>& work,
                                        const std::string& trace_path, int top_n) {
  namespace prof = torch::profiler::impl;
  namespace ap = torch::autograd::profiler;
  const prof::ProfilerConfig config(prof::ProfilerState::KINETO);
  const std::set<prof::ActivityType> activities{prof::ActivityType::CPU, prof::ActivityType::CUDA};
  ap::prepareProfiler(config, activities);
  ap::enableProfiler(config, activities);
  const auto t0 = std::chrono::steady_clock::now();
  try {
    work();
  } catch (...) {
    ap::disableProfiler();
    throw;
  }
  const double wall_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  try {
    ap::disableProfiler()->save(trace_path);
  } catch (const c10::Error& e) {  // e.g. a LibTorch built without Kineto (Debian's 1.13)
    HYLAB_FAIL("profiler: cannot save a trace with this LibTorch ({}): {}", TORCH_VERSION,
               e.what_without_backtrace());
  }

  // The trace is the one source of kernel names and durations on every LibTorch version
  // (the KinetoEvent accessors changed between 1.13 and 2.x).
  std::ifstream in(trace_path);
  HYLAB_CHECK(in.good(), "profiler: cannot read the trace it wrote to {}", trace_path);
  const auto trace = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  HYLAB_CHECK(trace.is_object() && trace.contains("traceEvents"),
              "profiler: {} is not a chrome trace", trace_path);
  struct Sum { double us = 0; int64_t calls = 0; };
  std::map<std::string, Sum> by_name;
  std::map<std::string, double> by_group;
  double kernel_us = 0;
  for (const auto& e : trace["traceEvents"]) {
    if (!e.is_object() || !e.contains("cat") || !e.contains("dur")) continue;
    const std::string cat = e["cat"].get<std::string>();
    if (cat != "kernel" && cat != "gpu_memcpy" && cat != "gpu_memset") continue;
    const std::string name = e.value("name", std::string("?"));
    const double us = e["dur"].get<double>();
    by_name[name].us += us;
    by_name[name].calls += 1;
    by_group[cat == "kernel" ? kernel_group(name) : "copy/cat"] += us;
    kernel_us += us;
  }
  HYLAB_CHECK(kernel_us > 0, "profiler: no GPU activity in the trace (no CUDA device, or a "
                             "LibTorch without Kineto's CUDA support)");
  std::vector<std::pair<std::string, Sum>> rows(by_name.begin(), by_name.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.us > b.second.us; });
  nlohmann::ordered_json groups = nlohmann::ordered_json::object(), top = nlohmann::ordered_json::array();
  std::vector<std::pair<std::string, double>> g(by_group.begin(), by_group.end());
  std::sort(g.begin(), g.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  for (const auto& [k, us] : g) groups[k] = us / 1e3;
  for (size_t i = 0; i < rows.size() && static_cast<int>(i) < top_n; ++i) {
    const auto& [name, s] = rows[i];
    top.push_back({{"name", name.substr(0, 160)}, {"ms", s.us / 1e3}, {"calls", s.calls},
                   {"share", s.us / kernel_us}});
  }
  return {{"trace", trace_path}, {"wall_ms", wall_ms}, {"kernel_ms", kernel_us / 1e3},
          {"groups", groups}, {"top", top}};
}

}  // namespace hylab::trainer
