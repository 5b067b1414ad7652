// Small pure decisions of the coordinator: what an attempt's outcome means for its trial
// (retry or record), and when a silent peer is given up (liveness).
#pragma once

#include <cstdint>
#include <string>

#include "proto/wire.pb.h"

namespace hylab::coordinator {

struct AttemptDecision {
  proto::TrialState trial_state = proto::TRIAL_STATE_UNSPECIFIED;  // pending (run again) or final
  bool count_failure = false;
  bool retry = false;
  bool count_loss = false;  // an infrastructure loss (counted against kMaxLosses)
};

// Attempts a trial may lose to the infrastructure (lost workers, SIGKILLed trainers) before
// it fails: a budget apart from the sweep's max_retries, which is for trainer errors, so that
// restarting workers does not fail healthy trials.
constexpr int kMaxLosses = 5;

// failures: failed attempts so far (before this one); max_retries: from the sweep.
//   succeeded -> succeeded;  diverged -> diverged;  oom -> oom  (results, not retried)
//   bad config -> failed, not retried (the trainer rejected the config: rerunning cannot help)
//   cancelled -> cancelled
//   preempted -> pending, not counted as a failure
//   failed (also: the trainer could not start) -> pending while failures + 1 <= max_retries,
//   else failed
//   lost (worker lost, trainer killed by SIGKILL) -> pending while losses + 1 <= kMaxLosses,
//   else failed; `losses`: lost attempts so far
AttemptDecision decide_after_attempt(proto::TrialOutcome outcome, int failures, int max_retries,
                                     int losses = 0);

// Paranoid Pirate liveness: a peer is lost after `misses` heartbeat intervals of silence.
struct Liveness {
  int64_t interval_ms = 1000;
  int misses = 3;
  bool expired(int64_t last_heard_ms, int64_t now_ms) const {
    return now_ms - last_heard_ms > interval_ms * misses;
  }
};

}  // namespace hylab::coordinator
