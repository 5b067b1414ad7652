#include "coordinator/policy.h"

namespace hylab::coordinator {

AttemptDecision decide_after_attempt(proto::TrialOutcome outcome, int failures, int max_retries,
                                     int losses) {
  switch (outcome) {
    case proto::TRIAL_OUTCOME_LOST:
      if (losses + 1 <= kMaxLosses) return {"pending", false, true, true};
      return {"failed", false, false, true};
    case proto::TRIAL_OUTCOME_SUCCEEDED:
      return {"succeeded", false, false};
    case proto::TRIAL_OUTCOME_DIVERGED:
      return {"diverged", false, false};
    case proto::TRIAL_OUTCOME_OOM:
      return {"oom", false, false};
    case proto::TRIAL_OUTCOME_BAD_CONFIG:
      return {"failed", true, false};
    case proto::TRIAL_OUTCOME_CANCELLED:
      return {"cancelled", false, false};
    case proto::TRIAL_OUTCOME_PREEMPTED:
      return {"pending", false, true};
    case proto::TRIAL_OUTCOME_FAILED:
    case proto::TRIAL_OUTCOME_UNSPECIFIED:
    default:
      if (failures + 1 <= max_retries) return {"pending", true, true};
      return {"failed", true, false};
  }
}

std::string outcome_name(proto::TrialOutcome outcome) {
  switch (outcome) {
    case proto::TRIAL_OUTCOME_SUCCEEDED: return "succeeded";
    case proto::TRIAL_OUTCOME_DIVERGED: return "diverged";
    case proto::TRIAL_OUTCOME_OOM: return "oom";
    case proto::TRIAL_OUTCOME_CANCELLED: return "cancelled";
    case proto::TRIAL_OUTCOME_PREEMPTED: return "preempted";
    case proto::TRIAL_OUTCOME_BAD_CONFIG: return "failed";
    case proto::TRIAL_OUTCOME_LOST: return "lost";
    case proto::TRIAL_OUTCOME_FAILED:
    default: return "failed";
  }
}

}  // namespace hylab::coordinator
