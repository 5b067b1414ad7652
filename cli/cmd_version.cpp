// `hylab --version`: version, commit, and the LibTorch/CUDA/NCCL this binary was built with
// (trainer/provenance.h). A flag of the root app, set up here rather than in main.cpp, which
// stays free of LibTorch headers (tests/kernels builds it into `hylab_bench_kernels`).
#include "cli/command.h"
#include "trainer/provenance.h"

namespace hylab::cli {
namespace {

void setup(CLI::App& root) { root.set_version_flag("--version", trainer::version_text()); }

HYLAB_REGISTER_COMMAND("--version", 0, setup);

}  // namespace
}  // namespace hylab::cli
