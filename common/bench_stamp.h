// The `commit` and `date` fields of a benchmark's JSON (`hylab bench kernels`, `bench search`,
// `bench load`, `sim`), so a figure in docs/benchmarks/ names the tree that produced it, and
// the one way those commands print and save it. Torch-free.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace hylab {

// $HYLAB_COMMIT when set (a GPU machine fed a copied tree may have stale git metadata), else
// `git rev-parse --short=12 HEAD` in the working directory, else "unknown".
std::string bench_commit();

// Now, UTC, as "2026-12-02T06:41:11Z".
std::string utc_timestamp();

// Prints a benchmark's JSON document (indented) on stdout and, when out_path is not empty,
// writes the same text there; throws Error naming --out when it cannot.
void emit_bench_json(const nlohmann::json& doc, const std::string& out_path);

}  // namespace hylab
