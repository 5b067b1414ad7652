// The load generator (`hylab bench load`, hylab_load_bench): one real coordinator (forked
// into a process of its own: real SQLite file, plain TCP on loopback) against N simulated
// workers in this process, each a real DEALER socket with one slot: a heartbeat every second
// listing what it holds, Started on an Assign, a metrics batch of one record every 100 ms
// (10 Hz) while its trial runs, Finished after 2-4 s. The sweep has enough trials to keep
// every slot busy. Returns {workers, seconds, assignments, waiting_at_end, p50_ms, p99_ms
// (scheduling latency: a worker's slot free -> its Assign arrives; workers still waiting at
// the end count with their wait so far), coordinator_rss_mib, coordinator_cpu_s,
// metric_messages_sent, sqlite_metric_rows_per_s}. Call it before this process starts
// threads (it forks).
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace hylab::sim {

nlohmann::json run_load(int workers, int seconds, const std::string& dir);

}  // namespace hylab::sim
