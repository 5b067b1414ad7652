// fp64 oracles for the kernel tests: plain loops, written from the definitions in
// kernels/selective_scan/selective_scan.h and kernels/causal_conv1d/causal_conv1d.h with a
// hand-derived backward. oracle_test.cpp checks them against LibTorch autograd, so the GPU
// tests compare the kernels to something that was itself checked independently.
//
// Layouts (row-major, contiguous): u, delta, z, y: (B, E, T); Bm, Cm: (B, N, T);
// A: (E, N); D, bias: (E); states: (B, E, N). Conv x: (B, E, T), weight (E, K), bias (E).
#pragma once

#include <vector>

namespace hylab::testing {

using Vec = std::vector<double>;

struct ScanProblem {
  int B = 0, E = 0, T = 0, N = 0;
  bool softplus = true;
  Vec u, delta, A, Bm, Cm;
  Vec D, z, bias;  // empty when absent
};

struct ScanForward {
  Vec y, last_state;
};

struct ScanGrads {
  Vec du, ddelta, dA, dB, dC, dD, dz, dbias;  // dD/dz/dbias empty when absent
};

ScanForward scan_forward(const ScanProblem& p);
ScanGrads scan_backward(const ScanProblem& p, const Vec& dout);

struct ConvProblem {
  int B = 0, E = 0, T = 0, K = 0;
  bool silu = false;
  Vec x, weight, bias;  // bias empty when absent
};

struct ConvGrads {
  Vec dx, dweight, dbias;
};

Vec conv_forward(const ConvProblem& p);
ConvGrads conv_backward(const ConvProblem& p, const Vec& dout);

}  // namespace hylab::testing
