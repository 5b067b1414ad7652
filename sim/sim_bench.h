// Many seeds of the simulator as the benchmark's JSON (`hylab sim`, `hylab_sim_bench`):
// {seeds, start, trials, faults: {kind: count}, violations, failing: [{seed, violations,
// trace}], wall_s}. Failing seeds are also reported on stderr with the command that replays
// them.
#pragma once

#include <cstdint>

#include <nlohmann/json.hpp>

#include "sim/simulator.h"

namespace hylab::sim {

nlohmann::json run_seeds(int64_t start, int64_t count, const SimOptions& opt);

}  // namespace hylab::sim
