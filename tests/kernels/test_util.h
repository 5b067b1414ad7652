// Helpers shared by the kernel tests: tensors <-> fp64 vectors, and a comparison that
// reports relative L2 error, worst element and NaNs.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "tests/kernels/oracle.h"

namespace hylab::testing {

inline Vec to_vec(const torch::Tensor& t) {
  if (!t.defined()) return {};
  torch::Tensor c = t.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  const double* p = c.data_ptr<double>();
  return Vec(p, p + c.numel());
}

struct Tolerance {
  double rel_l2;  // ||got - want|| / ||want||
  double atol;    // per element: |got - want| <= atol * max|want| + rtol * |want|
  double rtol;
};

inline Tolerance tolerance_for(torch::ScalarType t) {
  // fp32: the kernels compute in fp32 (ex2.approx, fp32 sums) against an fp64 oracle on the
  // same inputs. bf16: outputs are rounded to bf16 (relative 2^-9), inputs are identical.
  if (t == torch::kBFloat16) return {1.5e-2, 3e-2, 3e-2};
  return {1e-4, 1e-4, 1e-3};
}

// Compares a kernel result (any dtype, any device) with the oracle.
inline ::testing::AssertionResult close(const std::string& what, const torch::Tensor& got,
                                        const Vec& want, const Tolerance& tol) {
  if (!got.defined()) return ::testing::AssertionFailure() << what << ": undefined result";
  const Vec g = to_vec(got);
  if (g.size() != want.size()) {
    return ::testing::AssertionFailure() << what << ": " << g.size() << " elements, want "
                                         << want.size();
  }
  double num = 0, den = 0, wmax = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    if (!std::isfinite(g[i])) {
      return ::testing::AssertionFailure() << what << ": non-finite value " << g[i]
                                           << " at index " << i << " (want " << want[i] << ")";
    }
    num += (g[i] - want[i]) * (g[i] - want[i]);
    den += want[i] * want[i];
    wmax = std::max(wmax, std::abs(want[i]));
  }
  const double rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  size_t worst = 0;
  double worst_excess = -1;
  for (size_t i = 0; i < g.size(); ++i) {
    const double allowed = tol.atol * wmax + tol.rtol * std::abs(want[i]) + 1e-30;
    const double excess = std::abs(g[i] - want[i]) / allowed;
    if (excess > worst_excess) worst_excess = excess, worst = i;
  }
  std::ostringstream msg;
  msg << what << ": rel_l2 " << rel << " (tol " << tol.rel_l2 << "), worst element " << worst
      << " got " << (g.empty() ? 0 : g[worst]) << " want " << (want.empty() ? 0 : want[worst])
      << " (" << worst_excess << "x its allowance), max|want| " << wmax;
  if (rel > tol.rel_l2 || worst_excess > 1.0) return ::testing::AssertionFailure() << msg.str();
  // HYLAB_KERNELS_VERBOSE=1 logs the errors of passing comparisons too (for docs/KERNELS.md).
  if (const char* v = std::getenv("HYLAB_KERNELS_VERBOSE"); v != nullptr && v[0] == '1') {
    std::printf("    ok %s\n", msg.str().c_str());
  }
  return ::testing::AssertionSuccess() << msg.str();
}

// Fills the CUDA caching allocator's free blocks with NaN so an output element a kernel
// forgets to write shows up as NaN instead of a plausible stale value.
// Covers the large pool (one big block) and the small pool (blocks under 1 MiB).
inline void poison_cuda_allocator(int64_t bytes = int64_t{256} << 20) {
  const auto opts = torch::TensorOptions().device(torch::kCUDA);
  torch::full({bytes / 4}, std::nan(""), opts);
  std::vector<torch::Tensor> small;
  for (int i = 0; i < 64; ++i) small.push_back(torch::full({(int64_t{1} << 20) / 4 - 64}, std::nan(""), opts));
}

inline bool cuda_available() { return torch::cuda::is_available(); }

#define HYLAB_REQUIRE_GPU()                                              \
  do {                                                                   \
    if (!::hylab::testing::cuda_available()) GTEST_SKIP() << "no CUDA device"; \
  } while (0)

}  // namespace hylab::testing
