// A sweep file -> the SubmitSweep request a client sends: the spec is read and expanded on
// the client (errors show up before anything is sent), and every trial travels as its
// resolved config, so the coordinator needs neither the sweep file nor the base config.
#pragma once

#include <string>

#include "sweep/sweep_expander.h"
#include "proto/wire.pb.h"

namespace hylab::coordinator {

struct Submission {
  proto::SweepSpec spec;
  Expansion expansion;
  proto::SubmitSweep request;
};

// Trials whose config does not set vocab_size get the one of their data folder (meta.json,
// relative to the working directory), as `hylab train` would. Throws ConfigError naming the
// file and field for an invalid spec, invalid trials or a data folder that is not there.
Submission prepare_submission(const std::string& sweep_path);

// The same from a parsed spec, its base config and a vocabulary lookup (no files read):
// what prepare_submission does after reading them, and what the sweep fuzz target drives.
// `spec_yaml` and `spec_path` are recorded in the request as given. `max_trials` bounds the
// trials expanded or proposed (expand_sweep); the fuzz target passes a small one.
Submission build_submission(proto::SweepSpec spec, const RunConfig& base, const VocabLookup& vocab,
                            const std::string& spec_yaml, const std::string& spec_path,
                            int64_t max_trials = kMaxSweepTrials);

}  // namespace hylab::coordinator
