// The coordinator's loop per message, without sockets (hylab_loop_bench): Coordinator::Impl
// driven through step(batch, now) over the load bench's steady state. N workers register and
// start a trial each; then every round (100 ms of simulated time) each sends a metrics batch
// of one record, and every 10th round also a heartbeat; the messages go in batches of 256,
// as the loop takes them, with `now` advancing at the rate the batches would arrive and
// checkpoint_if_due() after each, as in Coordinator::run. A real SQLite file in `dir`.
//
// Returns {workers, rounds, messages, steps, wall_ms, us_per_message, step_ms (handling and
// commits), checkpoint_ms (WAL checkpoints), metric_rows}. The timed part is one function,
// measured_steps(), so that `valgrind --tool=callgrind --toggle-collect='*measured_steps*'`
// counts its instructions alone (docs/RELIABILITY.md, "Session 12"). The database stays in
// `dir` for the caller to read.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace hylab::sim {

nlohmann::json run_loop_bench(int workers, int rounds, const std::string& dir);

}  // namespace hylab::sim
