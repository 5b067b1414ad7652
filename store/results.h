// Read-only queries behind `hylab results`: one row per trial (pattern, Mamba settings,
// params, final val bpb, tokens/s, MFU, memory, decode speed, cache bytes, state), grouped
// views, and loss curves. They read the database file directly, so they work while the
// coordinator is down (WAL lets them read while it writes).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "store/db.h"

namespace hylab::store {

// A rectangular result: named columns, cells as JSON values (number, string or null).
struct Table {
  std::vector<std::string> columns;
  std::vector<std::vector<nlohmann::json>> rows;
  int column(const std::string& name) const;  // -1 if absent
};

struct ResultsQuery {
  int64_t sweep_id = 0;       // 0 = every sweep (and local runs)
  std::string sort;           // a column; "-col" for descending; "" = trial_id
  std::string group_by;       // columns, comma-separated (e.g. "block_pattern,mamba_d_state"); "" = none
  bool include_stopped = false;  // group_by: count stopped/failed trials' last value (store/compare.h)
  bool provenance = false;    // add the provenance columns (csv/json, --trial, the dashboard)
};

// Columns: trial_id, sweep_id, sweep, state, block_pattern, n_layer, n_attn_layers,
// n_mamba_layers, mamba_d_state, mamba_expand, seed, then each swept parameter that is not
// already a column, then params, val_bpb, val_bpb_2x, val_bpb_4x, recall_acc (the evals
// beside val_bpb, trainer/trial_evals.h), train_loss, tok_per_s, mfu, peak_mem_gib,
// decode_tok_per_s_b1, decode_tok_per_s_b32, cache_bytes, steps, attempt, reason, then
// budget ("flops 1e+18", "tokens 5e+09", "steps 1500" or "ratio 20", from the config),
// train_flops, disk_bytes, run_dir (the newest attempt's absolute folder on its worker, else
// trials.run_dir) and, with q.provenance, the provenance columns (store/schema.h
// kProvenanceKeys; left out by default, as the same few values repeat on every row).
// val_bpb (and each eval) is the summary's final value, else the newest metric of that name
// (stopped trials).
// With group_by: one row per group, ranked, as store/compare.h's groups_table (val_bpb mean,
// std, n, the significance mark, ...; only succeeded trials count unless include_stopped).
// Throws hylab::Error for an unknown sort or group_by column (listing the columns).
Table results(Db& db, const ResultsQuery& q);

// "a,b" -> {"a", "b"} (spaces trimmed, empty parts dropped).
std::vector<std::string> split_list(const std::string& text);

// Loss curves: trial_id, step, then one column per metric name (sorted; train_loss and
// val_bpb first); cells are null where a metric has no value at a step.
Table curves(Db& db, const std::vector<int64_t>& trial_ids);

enum class Format { kTable, kCsv, kJson };
Format parse_format(const std::string& s);  // throws hylab::Error naming the allowed values
// table: aligned text with human-sized numbers; csv: RFC 4180; json: array of objects.
std::string render(const Table& t, Format f);

}  // namespace hylab::store
