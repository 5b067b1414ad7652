#include "cli/sweep_progress.h"

#include <spdlog/fmt/fmt.h>

#include <cmath>

namespace hylab::cli {

SweepProgress sweep_progress(const nlohmann::json& sweep, double now) {
  SweepProgress p;
  p.state = parse_sweep_state(sweep.value("state", ""));
  p.finished = p.state == proto::SWEEP_STATE_COMPLETED || p.state == proto::SWEEP_STATE_CANCELLED;
  const nlohmann::json counts = sweep.value("counts", nlohmann::json::object());
  for (auto it = counts.begin(); it != counts.end(); ++it) {
    const int64_t n = it.value().get<int64_t>();
    const proto::TrialState s = parse_trial_state(it.key());
    p.total += n;
    if (s == proto::TRIAL_STATE_RUNNING) p.running += n;
    if (!is_final(s)) continue;
    p.done += n;
    if (s != proto::TRIAL_STATE_SUCCEEDED && s != proto::TRIAL_STATE_STOPPED) p.failed += n;
  }
  p.percent =
      p.total > 0 ? 100.0 * static_cast<double>(p.done) / static_cast<double>(p.total) : 100.0;
  const double elapsed = now - sweep.value("created_at", now);
  if (p.done >= p.total) {
    p.eta_s = 0;
  } else if (p.done > 0 && elapsed > 0) {
    p.eta_s = elapsed / static_cast<double>(p.done) * static_cast<double>(p.total - p.done);
  }
  return p;
}

std::string format_duration(double seconds) {
  const int64_t s = static_cast<int64_t>(std::llround(std::max(0.0, seconds)));
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m{:02d}s", s / 60, s % 60);
  return fmt::format("{}h{:02d}m", s / 3600, (s % 3600) / 60);
}

std::string progress_line(const nlohmann::json& sweep, const SweepProgress& p) {
  std::string eta;
  if (p.finished)
    eta = to_string(p.state);
  else if (p.eta_s < 0)
    eta = "ETA unknown until a trial finishes";
  else
    eta = "ETA " + format_duration(p.eta_s);
  return fmt::format("sweep {} ({}): {}/{} trials done ({:.0f}%), {} running, {} failed, {}",
                     sweep.value("sweep_id", int64_t{0}), sweep.value("name", ""), p.done, p.total,
                     std::floor(p.percent), p.running, p.failed, eta);
}

int sweep_exit_status(const SweepProgress& p) {
  if (p.state == proto::SWEEP_STATE_CANCELLED) return kSweepCancelled;
  return p.failed > 0 ? kSweepTrialsFailed : kSweepSucceeded;
}

int local_exit_status(const nlohmann::json& sweep) {
  const nlohmann::json trials = sweep.value("trials", nlohmann::json::array());
  bool ok = !trials.empty();
  for (const auto& t : trials) {
    const proto::TrialState state = parse_trial_state(t.value("state", ""));
    ok = ok && (state == proto::TRIAL_STATE_SUCCEEDED || state == proto::TRIAL_STATE_STOPPED);
  }
  return ok ? 0 : 1;
}

}  // namespace hylab::cli
