#include "coordinator/hyperband.h"

#include <cmath>
#include <limits>

#include <spdlog/fmt/fmt.h>

namespace hylab::coordinator {
namespace {

double tokens_of(const MetricSeries& s, int64_t step) {
  return static_cast<double>(step) *
         static_cast<double>(s.tokens_per_step > 0 ? s.tokens_per_step : 1);
}

double finite_or_worst(double v, bool minimize) {
  if (std::isfinite(v)) return v;
  return minimize ? std::numeric_limits<double>::infinity()
                  : -std::numeric_limits<double>::infinity();
}

}  // namespace

int hyperband_brackets(const proto::EarlyStop& rule) {
  const double ratio =
      static_cast<double>(rule.max_tokens()) / std::max<int64_t>(1, rule.min_tokens());
  int s_max = 0;
  double r = rule.eta();
  while (r <= ratio * (1 + 1e-9)) {
    ++s_max;
    r *= rule.eta();
  }
  return s_max + 1;
}

std::optional<double> value_at_tokens(const MetricSeries& s, double tokens) {
  if (s.points.empty() || tokens_of(s, s.points.back().first) < tokens) return std::nullopt;
  const std::pair<int64_t, double>* before = nullptr;
  for (const auto& p : s.points) {
    const double t = tokens_of(s, p.first);
    if (t == tokens) return p.second;
    if (t > tokens) {
      if (before == nullptr) return p.second;
      const double t0 = tokens_of(s, before->first);
      const double w = (tokens - t0) / (t - t0);
      return before->second + w * (p.second - before->second);
    }
    before = &p;
  }
  return before ? std::optional<double>(before->second) : std::nullopt;
}

std::optional<StopDecision> hyperband_rule(const proto::EarlyStop& rule, bool minimize,
                                           const MetricSeries& t,
                                           const std::vector<MetricSeries>& all) {
  if (t.points.empty() || rule.eta() < 2 || rule.min_tokens() < 1) return std::nullopt;
  const int brackets = hyperband_brackets(rule);
  const int bracket = static_cast<int>(t.trial_index % brackets);
  const double reached = tokens_of(t, t.points.back().first);
  double rung = -1;
  for (double r = rule.min_tokens() * std::pow(rule.eta(), bracket);
       r <= rule.max_tokens() * (1 + 1e-9); r *= rule.eta()) {
    if (reached >= r) rung = r;
  }
  if (rung < 0) return std::nullopt;
  const auto mine = value_at_tokens(t, rung);
  if (!mine) return std::nullopt;
  const double my_value = finite_or_worst(*mine, minimize);
  int n = 0, better = 0;
  for (const auto& o : all) {
    if (o.trial_index % brackets != bracket) continue;
    const auto v = value_at_tokens(o, rung);
    if (!v) continue;
    ++n;
    const double ov = finite_or_worst(*v, minimize);
    if (minimize ? ov < my_value : ov > my_value) ++better;
  }
  if (n < rule.eta()) return std::nullopt;
  const int keep = std::max(1, n / rule.eta());
  if (better < keep) return std::nullopt;
  return StopDecision{
      t.trial_id,
      fmt::format("early stop (hyperband, bracket {} of {}) at {:.0f} tokens: "
                  "value {:.4f} ranks {} of {} in its bracket, only the top {} continue",
                  bracket, brackets, rung, *mine, better + 1, n, keep)};
}

}  // namespace hylab::coordinator
