// The `commit` and `date` fields of a benchmark's JSON (`hylab bench kernels`, `hylab bench
// search`), so a figure in docs/benchmarks/ names the tree that produced it. Torch-free.
#pragma once

#include <string>

namespace hylab {

// $HYLAB_COMMIT when set (a GPU machine fed a copied tree may have stale git metadata), else
// `git rev-parse --short=12 HEAD` in the working directory, else "unknown".
std::string bench_commit();

// Now, UTC, as "2026-12-02T06:41:11Z".
std::string utc_timestamp();

}  // namespace hylab
