// One trial at a glance (`hylab results --trial N`): every column of its results row
// (store/results.h: metrics, budget, disk use, run_dir, provenance) as one "key  value" line
// each, then its resolved config.
#pragma once

#include <cstdint>
#include <string>

#include "store/db.h"
#include "store/results.h"

namespace hylab::store {

// table: aligned "key  value" lines, then "config" and the resolved config as indented JSON;
// json: one object (the row's columns plus "config"); csv: the row with a header.
// Throws hylab::Error naming the trial_id and the database when there is no such trial.
std::string render_trial(Db& db, int64_t trial_id, Format f);

}  // namespace hylab::store
