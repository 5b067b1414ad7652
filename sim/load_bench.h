// The load generator (`hylab bench load`, hylab_load_bench): one real coordinator (forked
// into a process of its own: real SQLite file, plain TCP on loopback) against N simulated
// workers in this process, each a real DEALER socket with one slot: a heartbeat every second
// listing what it holds, Started on an Assign, a metrics batch of one record every 100 ms
// (10 Hz) while its trial runs, Finished after 2-4 s. The sweep has enough trials to keep
// every slot busy. The workers are shared out among `threads` generator threads (0 = the
// default below), each the only user of its workers' sockets.
//
// A worker sends its Hello once its connection is up (TCP and the ZMTP handshake done), where
// the real worker's Hello, queued at connect(), leaves too: the connection setup is measured
// apart from scheduling.
//
// Returns {workers, seconds, assignments, waiting_at_end, p50_ms, p99_ms (scheduling
// latency: a worker's slot free -> its Assign arrives; a slot is free from the worker's
// Hello or its Finished; workers still waiting at the end count with their wait so far,
// from their connect() if their connection never came up), never_connected,
// after_hello / after_finished ({count, p50_ms, p99_ms, max_ms} of the slots free since
// their worker's Hello / since a Finished), registration ({connect: connect() -> the
// connection up; hello_to_handled, handled_to_assign: a registration's latency split where
// the coordinator handled the Hello -- transit and the inbox before, the batch, commit and
// send after; connect_to_assign: the whole join, connect() -> first Assign}, the same
// summaries),
// over_50ms_by_second_freed (per second of the run, the samples over 50 ms whose slot became
// free in it), coordinator_rss_mib, coordinator_cpu_s,
// metric_messages_sent, metric_messages_asked (what a punctual generator sends),
// metric_messages_dropped (refused by a full socket queue: the coordinator not reading),
// heartbeats_sent, sqlite_metric_rows_per_s, generator_threads, generator_io_threads,
// coordinator_io_threads, generator_cpu_s,
// generator_lag_p99_ms / generator_lag_max_ms (how late its sends went out),
// generator_kept_up = valid (>= 99% of the batches asked sent, lag p99 <= 100 ms): a row
// whose generator fell behind measures the generator, not the coordinator}.
// Call it while this process runs no other thread (it forks).
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "proto/wire.pb.h"

namespace hylab::sim {

// The benchmarks' sweep (this one's and the loop bench's): `trials` one-GPU trials of the
// default config, seeds 0.., no retries, in requests of at most 2,000 trials (one request
// must stay under the 8 MiB frame limit).
std::vector<proto::ClientRequest> bench_sweep_requests(const std::string& name, int trials);

// `io_threads`: the generator's libzmq I/O threads (0 = one per two generator threads);
// `coordinator_io_threads`: the coordinator's (0 = its default, CoordinatorOptions).
nlohmann::json run_load(int workers, int seconds, const std::string& dir, int threads = 0, int io_threads = 0,
                        int coordinator_io_threads = 0);

// min(8, cores - 1), at least 1: the coordinator keeps a core of its own.
int default_load_threads();

}  // namespace hylab::sim
