// Adaptive and growing sweeps: the trials a coordinator adds to a running sweep.
//
// A `method: tpe` sweep is submitted without trials: the client sends its SearchState (the
// spec and the base config with the spec's overrides, stored as sweeps.search_json), and the
// coordinator proposes trials while the sweep has budget (`count`) left and workers have
// free slots, each proposal seeing every trial of the sweep so far (finished ones with their
// metric, the others as pending). `hylab sweep extend` raises the budget (tpe) or draws more
// random trials (random). After a restart the stored trials are the whole state: nothing is
// proposed twice, and proposal k is seeded by (seed, k) whatever happened before.
//
// propose_trials is a pure function (no sockets, no database): the tests call it directly.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "sweep/search_space.h"
#include "sweep/sweep_expander.h"
#include "sweep/tpe.h"

namespace hylab::coordinator {

struct SearchState {
  proto::SweepSpec spec;  // count = the budget
  RunConfig base;         // the base config after the spec's overrides (not resolved)
};

// Validates the space (throws ConfigError naming the field) and sets vocab_size from the
// data like expand_sweep does.
SearchState make_search_state(const proto::SweepSpec& spec, const RunConfig& base,
                              const VocabLookup& vocab_of_data = {});
std::string search_state_to_json(const SearchState& s);
SearchState search_state_from_json(const std::string& json);  // throws ConfigError

// The space of a state (n_layer from the resolved base).
SearchSpace search_space_of(const SearchState& s);
TpeOptions tpe_options_of(const proto::SweepSpec& spec);

struct KnownTrial {
  std::vector<std::pair<std::string, std::string>> params;
  std::string config_hash;
  bool pending = false;         // pending or running: gets the constant-liar value
  std::optional<double> value;  // finished with a metric; lower is better (caller negates maxima)
};

struct Proposals {
  std::vector<TrialPlan> trials;  // trial_index = first_index, first_index + 1, ...
  bool exhausted = false;         // no new valid trial could be found (space used up)
};

// Up to n new trials, each one proposed as if the earlier ones were pending. A proposal
// whose config duplicates a known trial or fails to resolve counts as taken and is drawn
// again (propose_new). method tpe uses the model, random draws uniformly.
Proposals propose_trials(const SearchState& state, const std::vector<KnownTrial>& known,
                         int64_t first_index, int n);

}  // namespace hylab::coordinator
