#include "coordinator/policy.h"

namespace hylab::coordinator {

AttemptDecision decide_after_attempt(proto::TrialOutcome outcome, int failures, int max_retries,
                                     int losses) {
  switch (outcome) {
    case proto::TRIAL_OUTCOME_LOST:
      if (losses + 1 <= kMaxLosses) return {proto::TRIAL_STATE_PENDING, false, true, true};
      return {proto::TRIAL_STATE_FAILED, false, false, true};
    case proto::TRIAL_OUTCOME_SUCCEEDED:
      return {proto::TRIAL_STATE_SUCCEEDED, false, false};
    case proto::TRIAL_OUTCOME_DIVERGED:
      return {proto::TRIAL_STATE_DIVERGED, false, false};
    case proto::TRIAL_OUTCOME_OOM:
      return {proto::TRIAL_STATE_OOM, false, false};
    case proto::TRIAL_OUTCOME_BAD_CONFIG:
      return {proto::TRIAL_STATE_FAILED, true, false};
    case proto::TRIAL_OUTCOME_CANCELLED:
      return {proto::TRIAL_STATE_CANCELLED, false, false};
    case proto::TRIAL_OUTCOME_PREEMPTED:
      return {proto::TRIAL_STATE_PENDING, false, true};
    case proto::TRIAL_OUTCOME_FAILED:
    case proto::TRIAL_OUTCOME_UNSPECIFIED:
    default:
      if (failures + 1 <= max_retries) return {proto::TRIAL_STATE_PENDING, true, true};
      return {proto::TRIAL_STATE_FAILED, true, false};
  }
}

}  // namespace hylab::coordinator
