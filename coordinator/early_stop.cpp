#include "coordinator/early_stop.h"

#include "coordinator/hyperband.h"

#include <algorithm>
#include <cmath>
#include <optional>

#include <spdlog/fmt/fmt.h>

namespace hylab::coordinator {
namespace {

std::optional<double> best_up_to(const MetricSeries& s, int64_t step, bool minimize) {
  std::optional<double> best;
  for (const auto& [st, v] : s.points) {
    if (st > step) break;
    if (!std::isfinite(v)) continue;
    if (!best || (minimize ? v < *best : v > *best)) best = v;
  }
  return best;
}

int64_t last_step(const MetricSeries& s) { return s.points.empty() ? -1 : s.points.back().first; }

bool worse(double a, double b, bool minimize) { return minimize ? a > b : a < b; }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::optional<StopDecision> median_rule(const proto::EarlyStop& rule, bool minimize,
                                        const MetricSeries& t,
                                        const std::vector<MetricSeries>& all) {
  const int64_t s = last_step(t);
  if (s < rule.min_steps()) return std::nullopt;
  const auto mine = best_up_to(t, s, minimize);
  if (!mine) return std::nullopt;
  std::vector<double> others;
  for (const auto& o : all) {
    if (o.trial_id == t.trial_id || last_step(o) < s) continue;
    if (auto b = best_up_to(o, s, minimize)) others.push_back(*b);
  }
  if (static_cast<int>(others.size()) < rule.min_trials()) return std::nullopt;
  const double med = median(others);
  if (!worse(*mine, med, minimize)) return std::nullopt;
  return StopDecision{t.trial_id,
                      fmt::format("early stop (median rule) at step {}: best {:.4f} is worse than "
                                  "the median {:.4f} of {} other trials",
                                  s, *mine, med, others.size())};
}

std::optional<StopDecision> asha_rule(const proto::EarlyStop& rule, bool minimize,
                                      const MetricSeries& t, const std::vector<MetricSeries>& all) {
  const int64_t s = last_step(t);
  // The highest rung this trial reached.
  int64_t rung = -1;
  int64_t r = rule.min_steps();
  for (int k = 0; k < rule.rungs(); ++k, r *= rule.eta()) {
    if (s >= r) rung = r;
  }
  if (rung < 0) return std::nullopt;
  const auto mine = best_up_to(t, rung, minimize);
  if (!mine) return std::nullopt;
  std::vector<double> peers;  // includes this trial
  for (const auto& o : all) {
    if (last_step(o) < rung) continue;
    if (auto b = best_up_to(o, rung, minimize)) peers.push_back(*b);
  }
  const int n = static_cast<int>(peers.size());
  if (n < rule.eta()) return std::nullopt;
  const int keep = std::max(1, n / rule.eta());
  int better = 0;  // peers strictly better than this trial
  for (double p : peers) better += worse(*mine, p, minimize) ? 1 : 0;
  if (better < keep) return std::nullopt;
  return StopDecision{t.trial_id,
                      fmt::format("early stop (asha) at rung {} (step {}): best {:.4f} ranks {} of {}, "
                                  "only the top {} continue",
                                  rung, s, *mine, better + 1, n, keep)};
}

}  // namespace

std::vector<StopDecision> early_stop(const proto::EarlyStop& rule, bool minimize,
                                     const std::vector<MetricSeries>& series) {
  std::vector<StopDecision> out;
  if (rule.type().empty()) return out;
  for (const auto& t : series) {
    if (!t.running) continue;
    std::optional<StopDecision> d = rule.type() == "hyperband" ? hyperband_rule(rule, minimize, t, series)
                                    : rule.type() == "asha"    ? asha_rule(rule, minimize, t, series)
                                                               : median_rule(rule, minimize, t, series);
    if (d) out.push_back(*d);
  }
  return out;
}

}  // namespace hylab::coordinator
