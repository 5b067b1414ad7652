#include "common/states.h"

#include <array>
#include <utility>

#include "common/check.h"

namespace hylab {
namespace {

// (enum, word) for every value but UNSPECIFIED; the words are stored in databases and read
// by users' scripts: never rename one.
constexpr std::array<std::pair<proto::TrialState, const char*>, 8> kTrialWords = {{
    {proto::TRIAL_STATE_PENDING, "pending"},
    {proto::TRIAL_STATE_RUNNING, "running"},
    {proto::TRIAL_STATE_SUCCEEDED, "succeeded"},
    {proto::TRIAL_STATE_FAILED, "failed"},
    {proto::TRIAL_STATE_DIVERGED, "diverged"},
    {proto::TRIAL_STATE_OOM, "oom"},
    {proto::TRIAL_STATE_CANCELLED, "cancelled"},
    {proto::TRIAL_STATE_STOPPED, "stopped"},
}};
constexpr std::array<std::pair<proto::AttemptState, const char*>, 10> kAttemptWords = {{
    {proto::ATTEMPT_STATE_RUNNING, "running"},
    {proto::ATTEMPT_STATE_SUCCEEDED, "succeeded"},
    {proto::ATTEMPT_STATE_FAILED, "failed"},
    {proto::ATTEMPT_STATE_DIVERGED, "diverged"},
    {proto::ATTEMPT_STATE_OOM, "oom"},
    {proto::ATTEMPT_STATE_CANCELLED, "cancelled"},
    {proto::ATTEMPT_STATE_STOPPED, "stopped"},
    {proto::ATTEMPT_STATE_PREEMPTED, "preempted"},
    {proto::ATTEMPT_STATE_LOST, "lost"},
    {proto::ATTEMPT_STATE_ABANDONED, "abandoned"},
}};
constexpr std::array<std::pair<proto::SweepState, const char*>, 4> kSweepWords = {{
    {proto::SWEEP_STATE_RUNNING, "running"},
    {proto::SWEEP_STATE_COMPLETED, "completed"},
    {proto::SWEEP_STATE_CANCELLED, "cancelled"},
    {proto::SWEEP_STATE_LOCAL, "local"},
}};
constexpr std::array<std::pair<proto::WorkerState, const char*>, 4> kWorkerWords = {{
    {proto::WORKER_STATE_ALIVE, "alive"},
    {proto::WORKER_STATE_DRAINING, "draining"},
    {proto::WORKER_STATE_LOST, "lost"},
    {proto::WORKER_STATE_DRAINED, "drained"},
}};

template <typename E, size_t N>
std::string word_of(const std::array<std::pair<E, const char*>, N>& words, E s, const char* what) {
  for (const auto& [e, w] : words) {
    if (e == s) return w;
  }
  HYLAB_FAIL("{} {} has no name (a state left unset?)", what, static_cast<int>(s));
}

template <typename E, size_t N>
std::string list_of(const std::array<std::pair<E, const char*>, N>& words) {
  std::string out;
  for (const auto& [e, w] : words) out += (out.empty() ? "" : ", ") + std::string(w);
  return out;
}

template <typename E, size_t N>
bool find_word(const std::array<std::pair<E, const char*>, N>& words, std::string_view s, E* out) {
  for (const auto& [e, w] : words) {
    if (s == w) {
      *out = e;
      return true;
    }
  }
  return false;
}

template <typename E, size_t N>
E parse_word(const std::array<std::pair<E, const char*>, N>& words, std::string_view s,
             const char* what) {
  E e{};
  if (!find_word(words, s, &e)) {
    HYLAB_FAIL("\"{}\" is not a {} state; known: {}", s, what, list_of(words));
  }
  return e;
}

}  // namespace

std::string to_string(proto::TrialState s) { return word_of(kTrialWords, s, "trial state"); }
std::string to_string(proto::SweepState s) { return word_of(kSweepWords, s, "sweep state"); }
std::string to_string(proto::WorkerState s) { return word_of(kWorkerWords, s, "worker state"); }
std::string to_string(proto::AttemptState s) { return word_of(kAttemptWords, s, "attempt state"); }

proto::TrialState parse_trial_state(std::string_view s) { return parse_word(kTrialWords, s, "trial"); }
proto::SweepState parse_sweep_state(std::string_view s) { return parse_word(kSweepWords, s, "sweep"); }
proto::WorkerState parse_worker_state(std::string_view s) {
  return parse_word(kWorkerWords, s, "worker");
}

proto::AttemptState parse_attempt_state(std::string_view s) {
  return parse_word(kAttemptWords, s, "attempt");
}

bool try_parse_trial_state(std::string_view s, proto::TrialState* out) {
  return find_word(kTrialWords, s, out);
}

bool is_final(proto::TrialState s) {
  return s != proto::TRIAL_STATE_UNSPECIFIED && s != proto::TRIAL_STATE_PENDING &&
         s != proto::TRIAL_STATE_RUNNING;
}

bool is_result(proto::TrialState s) {
  return s == proto::TRIAL_STATE_SUCCEEDED || s == proto::TRIAL_STATE_STOPPED ||
         s == proto::TRIAL_STATE_DIVERGED || s == proto::TRIAL_STATE_OOM;
}

std::string trial_state_list() { return list_of(kTrialWords); }

proto::AttemptState attempt_state(proto::TrialOutcome outcome) {
  switch (outcome) {
    case proto::TRIAL_OUTCOME_SUCCEEDED: return proto::ATTEMPT_STATE_SUCCEEDED;
    case proto::TRIAL_OUTCOME_DIVERGED: return proto::ATTEMPT_STATE_DIVERGED;
    case proto::TRIAL_OUTCOME_OOM: return proto::ATTEMPT_STATE_OOM;
    case proto::TRIAL_OUTCOME_CANCELLED: return proto::ATTEMPT_STATE_CANCELLED;
    case proto::TRIAL_OUTCOME_PREEMPTED: return proto::ATTEMPT_STATE_PREEMPTED;
    case proto::TRIAL_OUTCOME_LOST: return proto::ATTEMPT_STATE_LOST;
    case proto::TRIAL_OUTCOME_BAD_CONFIG:
    case proto::TRIAL_OUTCOME_FAILED:
    default: return proto::ATTEMPT_STATE_FAILED;
  }
}

proto::AttemptState attempt_state(proto::TrialState ended_as) {
  switch (ended_as) {
    case proto::TRIAL_STATE_SUCCEEDED: return proto::ATTEMPT_STATE_SUCCEEDED;
    case proto::TRIAL_STATE_DIVERGED: return proto::ATTEMPT_STATE_DIVERGED;
    case proto::TRIAL_STATE_OOM: return proto::ATTEMPT_STATE_OOM;
    case proto::TRIAL_STATE_CANCELLED: return proto::ATTEMPT_STATE_CANCELLED;
    case proto::TRIAL_STATE_STOPPED: return proto::ATTEMPT_STATE_STOPPED;
    case proto::TRIAL_STATE_RUNNING: return proto::ATTEMPT_STATE_RUNNING;
    case proto::TRIAL_STATE_FAILED:
    default: return proto::ATTEMPT_STATE_FAILED;
  }
}

}  // namespace hylab
