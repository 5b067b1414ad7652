// A GPU-time breakdown of a piece of work, through LibTorch's Kineto profiler: which kernels
// ran, how often and for how long. `hylab bench train --profile FILE` uses it to say where a
// training step's time goes (the chrome trace lands in FILE; open it in chrome://tracing or
// Perfetto). Where LibTorch was built without Kineto, profiling fails with a clear error.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>

namespace hylab::trainer {

// Runs `work` under the profiler, saves the chrome trace to trace_path, and returns
//   {"trace": path, "wall_ms": ..., "kernel_ms": total GPU kernel time, "groups": {...},
//    "top": [{"name", "ms", "calls", "share"}...]}
// where groups sums kernel time by kind (matmul, attention, hylab kernels, elementwise,
// reduction, copy, other) and top lists the `top_n` kernels with the most time.
nlohmann::ordered_json profile_gpu_work(const std::function<void()>& work,
                                        const std::string& trace_path, int top_n = 25);

}  // namespace hylab::trainer
