#include "tests/kernels/oracle.h"

#include <algorithm>
#include <cmath>

namespace hylab::testing {
namespace {

double softplus(double x) { return x > 20.0 ? x : std::log1p(std::exp(x)); }
double softplus_grad(double x) { return x > 20.0 ? 1.0 : 1.0 / (1.0 + std::exp(-x)); }
double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// d_t for channel (b, e): softplus(delta + bias) or delta + bias; raw holds delta + bias.
void channel_dt(const ScanProblem& p, int b, int e, Vec* d, Vec* raw) {
  for (int t = 0; t < p.T; ++t) {
    const size_t i = (static_cast<size_t>(b) * p.E + e) * p.T + t;
    const double r = p.delta[i] + (p.bias.empty() ? 0.0 : p.bias[e]);
    (*raw)[t] = r;
    (*d)[t] = p.softplus ? softplus(r) : r;
  }
}

}  // namespace

ScanForward scan_forward(const ScanProblem& p) {
  ScanForward f;
  f.y.assign(static_cast<size_t>(p.B) * p.E * p.T, 0.0);
  f.last_state.assign(static_cast<size_t>(p.B) * p.E * p.N, 0.0);
  Vec d(p.T), raw(p.T), x(p.N);
  for (int b = 0; b < p.B; ++b) {
    for (int e = 0; e < p.E; ++e) {
      channel_dt(p, b, e, &d, &raw);
      std::fill(x.begin(), x.end(), 0.0);
      for (int t = 0; t < p.T; ++t) {
        const size_t i = (static_cast<size_t>(b) * p.E + e) * p.T + t;
        double y = 0.0;
        for (int n = 0; n < p.N; ++n) {
          const size_t bn = (static_cast<size_t>(b) * p.N + n) * p.T + t;
          x[n] = std::exp(d[t] * p.A[e * p.N + n]) * x[n] + d[t] * p.Bm[bn] * p.u[i];
          y += x[n] * p.Cm[bn];
        }
        if (!p.D.empty()) y += p.D[e] * p.u[i];
        if (!p.z.empty()) y *= p.z[i] * sigmoid(p.z[i]);
        f.y[i] = y;
      }
      for (int n = 0; n < p.N; ++n) f.last_state[(static_cast<size_t>(b) * p.E + e) * p.N + n] = x[n];
    }
  }
  return f;
}

ScanGrads scan_backward(const ScanProblem& p, const Vec& dout) {
  const size_t BET = static_cast<size_t>(p.B) * p.E * p.T;
  ScanGrads g;
  g.du.assign(BET, 0.0);
  g.ddelta.assign(BET, 0.0);
  g.dA.assign(static_cast<size_t>(p.E) * p.N, 0.0);
  g.dB.assign(static_cast<size_t>(p.B) * p.N * p.T, 0.0);
  g.dC.assign(static_cast<size_t>(p.B) * p.N * p.T, 0.0);
  if (!p.D.empty()) g.dD.assign(p.E, 0.0);
  if (!p.z.empty()) g.dz.assign(BET, 0.0);
  if (!p.bias.empty()) g.dbias.assign(p.E, 0.0);

  Vec d(p.T), raw(p.T), ypre(p.T);
  Vec xs(static_cast<size_t>(p.T) * p.N);  // x_t for every t
  Vec carry(p.N);                           // exp(d_{t+1} A) h_{t+1}
  for (int b = 0; b < p.B; ++b) {
    for (int e = 0; e < p.E; ++e) {
      channel_dt(p, b, e, &d, &raw);
      // Forward, keeping every state and y before gating.
      for (int t = 0; t < p.T; ++t) {
        const size_t i = (static_cast<size_t>(b) * p.E + e) * p.T + t;
        double y = 0.0;
        for (int n = 0; n < p.N; ++n) {
          const size_t bn = (static_cast<size_t>(b) * p.N + n) * p.T + t;
          const double prev = t > 0 ? xs[static_cast<size_t>(t - 1) * p.N + n] : 0.0;
          const double x = std::exp(d[t] * p.A[e * p.N + n]) * prev + d[t] * p.Bm[bn] * p.u[i];
          xs[static_cast<size_t>(t) * p.N + n] = x;
          y += x * p.Cm[bn];
        }
        if (!p.D.empty()) y += p.D[e] * p.u[i];
        ypre[t] = y;
      }
      // Backward.
      std::fill(carry.begin(), carry.end(), 0.0);
      for (int t = p.T - 1; t >= 0; --t) {
        const size_t i = (static_cast<size_t>(b) * p.E + e) * p.T + t;
        double dy = dout[i];
        if (!p.z.empty()) {
          const double zz = p.z[i], s = sigmoid(zz);
          dy = dout[i] * zz * s;
          g.dz[i] = dout[i] * ypre[t] * s * (1.0 + zz * (1.0 - s));
        }
        double du = p.D.empty() ? 0.0 : dy * p.D[e];
        double dd = 0.0;
        for (int n = 0; n < p.N; ++n) {
          const size_t bn = (static_cast<size_t>(b) * p.N + n) * p.T + t;
          const double An = p.A[e * p.N + n];
          const double a = std::exp(d[t] * An);
          const double prev = t > 0 ? xs[static_cast<size_t>(t - 1) * p.N + n] : 0.0;
          const double h = dy * p.Cm[bn] + carry[n];
          g.dC[bn] += dy * xs[static_cast<size_t>(t) * p.N + n];
          g.dB[bn] += h * d[t] * p.u[i];
          du += h * d[t] * p.Bm[bn];
          dd += h * (prev * An * a + p.Bm[bn] * p.u[i]);
          g.dA[e * p.N + n] += h * prev * d[t] * a;
          carry[n] = a * h;
        }
        g.du[i] = du;
        const double ddl = p.softplus ? dd * softplus_grad(raw[t]) : dd;
        g.ddelta[i] = ddl;
        if (!p.bias.empty()) g.dbias[e] += ddl;
        if (!p.D.empty()) g.dD[e] += dy * p.u[i];
      }
    }
  }
  return g;
}

Vec conv_forward(const ConvProblem& p) {
  Vec out(static_cast<size_t>(p.B) * p.E * p.T);
  for (int b = 0; b < p.B; ++b) {
    for (int e = 0; e < p.E; ++e) {
      const size_t row = (static_cast<size_t>(b) * p.E + e) * p.T;
      for (int t = 0; t < p.T; ++t) {
        double acc = p.bias.empty() ? 0.0 : p.bias[e];
        for (int k = 0; k < p.K; ++k) {
          const int s = t - (p.K - 1) + k;
          if (s >= 0) acc += p.weight[e * p.K + k] * p.x[row + s];
        }
        out[row + t] = p.silu ? acc * sigmoid(acc) : acc;
      }
    }
  }
  return out;
}

ConvGrads conv_backward(const ConvProblem& p, const Vec& dout) {
  ConvGrads g;
  g.dx.assign(p.x.size(), 0.0);
  g.dweight.assign(static_cast<size_t>(p.E) * p.K, 0.0);
  if (!p.bias.empty()) g.dbias.assign(p.E, 0.0);
  Vec dpre(p.T);
  for (int b = 0; b < p.B; ++b) {
    for (int e = 0; e < p.E; ++e) {
      const size_t row = (static_cast<size_t>(b) * p.E + e) * p.T;
      for (int t = 0; t < p.T; ++t) {
        double pre = p.bias.empty() ? 0.0 : p.bias[e];
        for (int k = 0; k < p.K; ++k) {
          const int s = t - (p.K - 1) + k;
          if (s >= 0) pre += p.weight[e * p.K + k] * p.x[row + s];
        }
        const double sg = sigmoid(pre);
        dpre[t] = p.silu ? dout[row + t] * sg * (1.0 + pre * (1.0 - sg)) : dout[row + t];
      }
      for (int t = 0; t < p.T; ++t) {
        for (int k = 0; k < p.K; ++k) {
          const int s = t - (p.K - 1) + k;
          if (s < 0) continue;
          g.dx[row + s] += p.weight[e * p.K + k] * dpre[t];
          g.dweight[e * p.K + k] += dpre[t] * p.x[row + s];
        }
        if (!p.bias.empty()) g.dbias[e] += dpre[t];
      }
    }
  }
  return g;
}

}  // namespace hylab::testing
