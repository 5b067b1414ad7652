// Trial, attempt, sweep and worker states: enums inside, words outside.
//
// The daemons decide on proto::TrialState / AttemptState / SweepState / WorkerState
// (proto/wire.proto). The
// database columns (trials.state, trial_attempts.state, sweeps.state, workers.state), the
// clients' JSON and the CLI's tables keep the lower-case words that users' scripts and stored
// databases already hold ("pending", "running", "succeeded", ...). This file is the one place
// that converts between the two: to_string on the way out, parse_* on the way in (an unknown
// word is a hylab::Error that lists the allowed ones).
#pragma once

#include <string>
#include <string_view>

#include "proto/wire.pb.h"

namespace hylab {

// The stored word of a state; throws hylab::Error for UNSPECIFIED or a value out of range.
std::string to_string(proto::TrialState s);
std::string to_string(proto::SweepState s);
std::string to_string(proto::WorkerState s);
std::string to_string(proto::AttemptState s);

// The state of a stored word; throws hylab::Error naming the allowed words.
proto::TrialState parse_trial_state(std::string_view s);
proto::SweepState parse_sweep_state(std::string_view s);
proto::WorkerState parse_worker_state(std::string_view s);
proto::AttemptState parse_attempt_state(std::string_view s);

// Non-throwing twins for text that may hold something else (a JSON field of another
// version): false when `s` is not a state word.
bool try_parse_trial_state(std::string_view s, proto::TrialState* out);

// Every state but pending and running: the trial will not run again by itself.
bool is_final(proto::TrialState s);
// A final state that is a result worth comparing: succeeded, stopped (early stopping),
// diverged, oom (not failed, not cancelled).
bool is_result(proto::TrialState s);

// "pending, running, succeeded, ..." for error messages.
std::string trial_state_list();

// How an attempt ended (trial_attempts.state) for a worker's outcome (a rejected config is
// failed) and for a trial ended by the coordinator (cancelled, stopped) during an attempt.
proto::AttemptState attempt_state(proto::TrialOutcome outcome);
proto::AttemptState attempt_state(proto::TrialState ended_as);

}  // namespace hylab
