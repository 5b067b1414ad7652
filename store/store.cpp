#include "store/store.h"

#include <algorithm>
#include <climits>
#include <map>
#include <optional>

#include "common/check.h"

namespace hylab::store {
namespace {

constexpr const char* kTrialColumns =
    "trial_id, sweep_id, trial_index, gpus, priority, state, attempt, failures, "
    "COALESCE(worker_id, ''), run_dir, config_json, reason, last_step, checkpoint_step";

TrialRow read_trial(const Stmt& st) {
  TrialRow t;
  t.trial_id = st.int64(0);
  t.sweep_id = st.int64(1);
  t.trial_index = st.int64(2);
  t.gpus = static_cast<int>(st.int64(3));
  t.priority = static_cast<int>(st.int64(4));
  t.state = parse_trial_state(st.text(5));
  t.attempt = st.int64(6);
  t.failures = static_cast<int>(st.int64(7));
  t.worker_id = st.text(8);
  t.run_dir = st.text(9);
  t.config_json = st.text(10);
  t.reason = st.text(11);
  t.last_step = st.int64(12);
  t.checkpoint_step = st.int64(13);
  return t;
}

constexpr const char* kSweepColumns =
    "sweep_id, name, spec_yaml, spec_path, metric_name, metric_goal, priority, gpus_per_trial, "
    "nodes_per_trial, max_retries, early_stop_json, state, created_at";

SweepRow read_sweep(const Stmt& st) {
  SweepRow s;
  s.sweep_id = st.int64(0);
  s.name = st.text(1);
  s.spec_yaml = st.text(2);
  s.spec_path = st.text(3);
  s.metric_name = st.text(4);
  s.metric_goal = st.text(5);
  s.priority = static_cast<int>(st.int64(6));
  s.gpus_per_trial = static_cast<int>(st.int64(7));
  s.nodes_per_trial = static_cast<int>(st.int64(8));
  s.max_retries = static_cast<int>(st.int64(9));
  s.early_stop_json = st.text(10);
  s.state = parse_sweep_state(st.text(11));
  s.created_at = st.real(12);
  return s;
}

nlohmann::json nullable_real(const Stmt& st, int col) {
  return st.is_null(col) ? nlohmann::json() : nlohmann::json(st.real(col));
}

}  // namespace

std::unique_ptr<Store> Store::open(const std::string& path) {
  auto db = Db::open(path);
  // The coordinator's connection. Under load every batch dirties a page per running trial
  // (its trials row and its metrics' tail) and more: with SQLite's default 2 MiB cache a
  // 1,000-worker batch spilled pages mid-transaction and read them back. Up to 64 MiB.
  // (The checkpoint stays at SQLite's default of every 1,000 WAL pages: it runs in the
  // event loop, and its fdatasync of the WAL grows with it -- 70-90 ms at 10,000 pages, the
  // p99 of the load bench at 300 workers, against 10-20 ms at 1,000.)
  db->exec("PRAGMA cache_size=-65536");
  ensure_schema(*db);
  return std::unique_ptr<Store>(new Store(std::move(db)));
}

int64_t Store::create_sweep(const SweepRow& s, std::vector<NewTrial> trials) {
  auto st = db_->prepare(
      "INSERT INTO sweeps(name, spec_yaml, spec_path, metric_name, metric_goal, priority, "
      "gpus_per_trial, nodes_per_trial, max_retries, early_stop_json, state, created_at) "
      "VALUES(?,?,?,?,?,?,?,?,?,?,'running',?)");
  st.bind(1, s.name).bind(2, s.spec_yaml).bind(3, s.spec_path).bind(4, s.metric_name);
  st.bind(5, s.metric_goal).bind(6, s.priority).bind(7, s.gpus_per_trial).bind(8, s.nodes_per_trial);
  st.bind(9, s.max_retries).bind(10, s.early_stop_json).bind(11, unix_time_now());
  st.run();
  const int64_t sweep_id = db_->last_insert_rowid();
  auto set_dir = db_->prepare("UPDATE trials SET run_dir = ? WHERE trial_id = ?");
  for (auto& t : trials) {
    t.sweep_id = sweep_id;
    t.gpus = s.gpus_per_trial;
    t.priority = s.priority;
    t.state = proto::TRIAL_STATE_PENDING;
    const int64_t trial_id = insert_trial(*db_, t);
    set_dir.bind(1, "sweep-" + std::to_string(sweep_id) + "/trial-" + std::to_string(trial_id));
    set_dir.bind(2, trial_id);
    set_dir.run();
  }
  add_event(*db_, "sweep_submitted", std::to_string(trials.size()) + " trials", sweep_id);
  return sweep_id;
}

std::vector<SweepRow> Store::sweeps(proto::SweepState state) {
  auto st = db_->prepare(std::string("SELECT ") + kSweepColumns +
                         " FROM sweeps WHERE (?1 = '' OR state = ?1) AND state != 'local' "
                         "ORDER BY sweep_id");
  st.bind(1, state == proto::SWEEP_STATE_UNSPECIFIED ? std::string() : to_string(state));
  std::vector<SweepRow> out;
  while (st.step()) out.push_back(read_sweep(st));
  return out;
}

SweepRow Store::sweep(int64_t sweep_id) {
  auto st = db_->prepare(std::string("SELECT ") + kSweepColumns + " FROM sweeps WHERE sweep_id = ?");
  st.bind(1, sweep_id);
  if (!st.step()) HYLAB_FAIL("no sweep with sweep_id {} in {}", sweep_id, db_->path());
  return read_sweep(st);
}

void Store::set_sweep_state(int64_t sweep_id, proto::SweepState state) {
  const bool final = state == proto::SWEEP_STATE_COMPLETED || state == proto::SWEEP_STATE_CANCELLED;
  db_->prepare("UPDATE sweeps SET state = ?, finished_at = ? WHERE sweep_id = ?")
      .bind(1, to_string(state))
      .bind(2, final ? std::optional<double>(unix_time_now()) : std::nullopt)
      .bind(3, sweep_id)
      .run();
  add_event(*db_, "sweep_" + to_string(state), "", sweep_id);
}

std::vector<TrialRow> Store::active_trials(int64_t sweep_id) {
  auto st = db_->prepare(std::string("SELECT ") + kTrialColumns +
                         " FROM trials WHERE state IN ('pending', 'running') AND sweep_id IN "
                         "(SELECT sweep_id FROM sweeps WHERE state = 'running' AND (?1 = 0 OR sweep_id = ?1)) "
                         "ORDER BY trial_id");
  st.bind(1, sweep_id);
  std::vector<TrialRow> out;
  while (st.step()) out.push_back(read_trial(st));
  return out;
}

std::vector<TrialRow> Store::trials_of(int64_t sweep_id) {
  auto st = db_->prepare(std::string("SELECT ") + kTrialColumns +
                         " FROM trials WHERE sweep_id = ? ORDER BY trial_index");
  st.bind(1, sweep_id);
  std::vector<TrialRow> out;
  while (st.step()) out.push_back(read_trial(st));
  return out;
}

TrialRow Store::trial(int64_t trial_id) {
  auto st = db_->prepare(std::string("SELECT ") + kTrialColumns + " FROM trials WHERE trial_id = ?");
  st.bind(1, trial_id);
  if (!st.step()) HYLAB_FAIL("no trial with trial_id {} in {}", trial_id, db_->path());
  return read_trial(st);
}

void Store::start_attempt(int64_t trial_id, int64_t attempt, const std::string& worker_id, bool resumed) {
  const double now = unix_time_now();
  db_->cached("UPDATE trials SET state = 'running', attempt = ?, worker_id = ?, reason = '', "
               "started_at = COALESCE(started_at, ?), finished_at = NULL WHERE trial_id = ?")
      .bind(1, attempt)
      .bind(2, worker_id)
      .bind(3, now)
      .bind(4, trial_id)
      .run();
  db_->cached("INSERT OR REPLACE INTO trial_attempts(trial_id, attempt, worker_id, state, resumed, "
               "started_at) VALUES(?,?,?,'running',?,?)")
      .bind(1, trial_id)
      .bind(2, attempt)
      .bind(3, worker_id)
      .bind(4, resumed ? 1 : 0)
      .bind(5, now)
      .run();
}

void Store::finish_attempt(int64_t trial_id, int64_t attempt, proto::AttemptState state,
                           const std::string& reason, int exit_code, const std::string& log_tail) {
  db_->cached("UPDATE trial_attempts SET state = ?, reason = ?, exit_code = ?, log_tail = ?, "
               "finished_at = ? WHERE trial_id = ? AND attempt = ? AND state = 'running'")
      .bind(1, to_string(state))
      .bind(2, reason)
      .bind(3, exit_code)
      .bind(4, log_tail)
      .bind(5, unix_time_now())
      .bind(6, trial_id)
      .bind(7, attempt)
      .run();
}

void Store::set_trial_state(int64_t trial_id, proto::TrialState state, int failures,
                            const std::string& reason) {
  db_->cached("UPDATE trials SET state = ?, failures = ?, reason = ?, finished_at = ? WHERE trial_id = ?")
      .bind(1, to_string(state))
      .bind(2, failures)
      .bind(3, reason)
      .bind(4, is_final(state) ? std::optional<double>(unix_time_now()) : std::nullopt)
      .bind(5, trial_id)
      .run();
}

void Store::set_checkpoint_step(int64_t trial_id, int64_t step) {
  db_->cached("UPDATE trials SET checkpoint_step = MAX(checkpoint_step, ?) WHERE trial_id = ?")
      .bind(1, step)
      .bind(2, trial_id)
      .run();
}

int64_t Store::last_seq(int64_t trial_id, int64_t attempt) {
  auto& st = db_->cached("SELECT last_seq FROM trial_attempts WHERE trial_id = ? AND attempt = ?");
  st.bind(1, trial_id).bind(2, attempt);
  const int64_t seq = st.step() ? st.int64(0) : 0;
  st.reset();
  return seq;
}

void Store::set_last_seq(int64_t trial_id, int64_t attempt, int64_t seq) {
  db_->cached("UPDATE trial_attempts SET last_seq = MAX(last_seq, ?) WHERE trial_id = ? AND attempt = ?")
      .bind(1, seq)
      .bind(2, trial_id)
      .bind(3, attempt)
      .run();
}

void Store::upsert_worker(const WorkerRow& w) {
  const double now = unix_time_now();
  db_->cached("INSERT INTO workers(worker_id, host, gpus, gpu_names, gpu_mem_gib, mem_gib, cpus, "
               "public_key, state, first_seen, last_seen) VALUES(?,?,?,?,?,?,?,?,?,?,?) "
               "ON CONFLICT(worker_id) DO UPDATE SET host=excluded.host, gpus=excluded.gpus, "
               "gpu_names=excluded.gpu_names, gpu_mem_gib=excluded.gpu_mem_gib, "
               "mem_gib=excluded.mem_gib, cpus=excluded.cpus, public_key=excluded.public_key, "
               "state=excluded.state, last_seen=excluded.last_seen")
      .bind(1, w.worker_id)
      .bind(2, w.host)
      .bind(3, w.gpus)
      .bind(4, w.gpu_names)
      .bind(5, w.gpu_mem_gib)
      .bind(6, w.mem_gib)
      .bind(7, w.cpus)
      .bind(8, w.public_key)
      .bind(9, to_string(w.state))
      .bind(10, now)
      .bind(11, now)
      .run();
}

void Store::set_worker_state(const std::string& worker_id, proto::WorkerState state) {
  db_->cached("UPDATE workers SET state = ?, last_seen = ? WHERE worker_id = ?")
      .bind(1, to_string(state))
      .bind(2, unix_time_now())
      .bind(3, worker_id)
      .run();
}

std::vector<std::pair<int64_t, std::vector<std::pair<int64_t, double>>>> Store::metric_series(
    int64_t sweep_id, const std::string& name) {
  auto st = db_->prepare(
      "SELECT m.trial_id, m.step, m.value FROM metrics m JOIN trials t USING(trial_id) "
      "WHERE t.sweep_id = ? AND m.name = ? ORDER BY m.trial_id, m.step");
  st.bind(1, sweep_id).bind(2, name);
  std::vector<std::pair<int64_t, std::vector<std::pair<int64_t, double>>>> out;
  while (st.step()) {
    const int64_t id = st.int64(0);
    if (out.empty() || out.back().first != id) out.push_back({id, {}});
    out.back().second.push_back({st.int64(1), st.real(2)});
  }
  return out;
}

namespace {

// Page keys (store.h): parsed strictly, since they come back from clients.
bool parse_int64(const std::string& s, int64_t* v) {
  if (s.empty() || s.size() > 20) return false;
  size_t used = 0;
  try {
    *v = std::stoll(s, &used);
  } catch (const std::exception&) {
    return false;
  }
  return used == s.size();
}

[[noreturn]] void bad_token(const std::string& after, const char* list) {
  HYLAB_FAIL("page_token \"{}\" is not a page of the {} list (pass the next_page_token of the previous "
             "reply, or none for the first page)", after, list);
}

std::string hex(const std::string& s) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

bool unhex(const std::string& s, std::string* out) {
  if (s.size() % 2) return false;
  auto val = [](char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
  };
  out->clear();
  for (size_t i = 0; i < s.size(); i += 2) {
    const int hi = val(s[i]), lo = val(s[i + 1]);
    if (hi < 0 || lo < 0) return false;
    out->push_back(static_cast<char>(hi * 16 + lo));
  }
  return true;
}

}  // namespace

void Store::visit_sweeps(const std::string& after, const RowVisitor& visit) {
  int64_t after_id = 0;
  if (!after.empty() && (after[0] != 's' || !parse_int64(after.substr(1), &after_id))) bad_token(after, "sweep");
  auto st = db_->prepare(
      "SELECT s.sweep_id, s.name, s.state, s.priority, s.gpus_per_trial, s.created_at, "
      "COUNT(t.trial_id), "
      "SUM(t.state = 'pending'), SUM(t.state = 'running'), SUM(t.state = 'succeeded'), "
      "SUM(t.state IN ('failed', 'diverged', 'oom')), SUM(t.state IN ('cancelled', 'stopped')) "
      "FROM sweeps s LEFT JOIN trials t USING(sweep_id) WHERE s.state != 'local' AND s.sweep_id > ?1 "
      "GROUP BY s.sweep_id ORDER BY s.sweep_id");
  st.bind(1, after_id);
  while (st.step()) {
    nlohmann::json row = {{"sweep_id", st.int64(0)}, {"name", st.text(1)}, {"state", st.text(2)},
                          {"priority", st.int64(3)}, {"gpus_per_trial", st.int64(4)},
                          {"created_at", st.real(5)}, {"trials", st.int64(6)},
                          {to_string(proto::TRIAL_STATE_PENDING), st.int64(7)},
                          {to_string(proto::TRIAL_STATE_RUNNING), st.int64(8)},
                          {to_string(proto::TRIAL_STATE_SUCCEEDED), st.int64(9)},
                          {to_string(proto::TRIAL_STATE_FAILED), st.int64(10)},
                          {to_string(proto::TRIAL_STATE_STOPPED), st.int64(11)}};
    if (!visit("s" + std::to_string(st.int64(0)), std::move(row))) break;
  }
}

nlohmann::json Store::sweeps_json() {
  nlohmann::json out = nlohmann::json::array();
  visit_sweeps("", [&](const std::string&, nlohmann::json row) {
    out.push_back(std::move(row));
    return true;
  });
  return out;
}

nlohmann::json Store::sweep_header_json(int64_t sweep_id) {
  const SweepRow s = sweep(sweep_id);
  nlohmann::json out = {{"sweep_id", s.sweep_id}, {"name", s.name}, {"state", to_string(s.state)},
                        {"metric", {{"name", s.metric_name}, {"goal", s.metric_goal}}},
                        {"priority", s.priority}, {"gpus_per_trial", s.gpus_per_trial},
                        {"nodes_per_trial", s.nodes_per_trial}, {"max_retries", s.max_retries},
                        {"spec_path", s.spec_path}, {"created_at", s.created_at}};
  auto st = db_->prepare("SELECT state, COUNT(*) FROM trials WHERE sweep_id = ? GROUP BY state");
  st.bind(1, sweep_id);
  std::map<std::string, int64_t> counts;
  while (st.step()) counts[st.text(0)] = st.int64(1);
  out["counts"] = counts;
  return out;
}

void Store::visit_trials(int64_t sweep_id, const std::string& after, const RowVisitor& visit) {
  // (trial_index, trial_id): trial_index orders the list, trial_id breaks its ties.
  int64_t after_index = INT64_MIN, after_id = INT64_MIN;
  if (!after.empty()) {
    const size_t colon = after.find(':');
    if (after[0] != 't' || colon == std::string::npos || !parse_int64(after.substr(1, colon - 1), &after_index) ||
        !parse_int64(after.substr(colon + 1), &after_id)) {
      bad_token(after, "trial");
    }
  }
  const std::string metric = sweep(sweep_id).metric_name;
  auto st = db_->prepare(
      "SELECT t.trial_id, t.trial_index, t.params_json, t.state, t.attempt, t.failures, "
      "COALESCE(t.worker_id, ''), t.last_step, t.checkpoint_step, t.reason, t.block_pattern, "
      "s.final_val_bpb, (SELECT value FROM metrics m WHERE m.trial_id = t.trial_id AND "
      "m.name = ?2 ORDER BY step DESC LIMIT 1) "
      "FROM trials t LEFT JOIN trial_summary s USING(trial_id) WHERE t.sweep_id = ?1 "
      // The first term lets SQLite seek in trials_by_sweep; the row value is the exact bound.
      "AND t.trial_index >= ?3 AND (t.trial_index, t.trial_id) > (?3, ?4) "
      "ORDER BY t.trial_index, t.trial_id");
  st.bind(1, sweep_id).bind(2, metric).bind(3, after_index).bind(4, after_id);
  while (st.step()) {
    nlohmann::json params = nlohmann::json::parse(st.text(2), nullptr, false);
    nlohmann::json row = {{"trial_id", st.int64(0)}, {"trial_index", st.int64(1)},
                          {"params", params.is_discarded() ? nlohmann::json::object() : params},
                          {"state", st.text(3)}, {"attempt", st.int64(4)}, {"failures", st.int64(5)},
                          {"worker_id", st.text(6)}, {"last_step", st.int64(7)},
                          {"checkpoint_step", st.int64(8)}, {"reason", st.text(9)},
                          {"block_pattern", st.text(10)}, {"final_val_bpb", nullable_real(st, 11)},
                          {"metric", nullable_real(st, 12)}};
    if (!visit("t" + std::to_string(st.int64(1)) + ":" + std::to_string(st.int64(0)), std::move(row))) break;
  }
}

nlohmann::json Store::sweep_json(int64_t sweep_id) {
  nlohmann::json out = sweep_header_json(sweep_id);
  nlohmann::json trials = nlohmann::json::array();
  visit_trials(sweep_id, "", [&](const std::string&, nlohmann::json row) {
    trials.push_back(std::move(row));
    return true;
  });
  out["trials"] = std::move(trials);
  return out;
}

void Store::visit_workers(const std::string& after, const RowVisitor& visit) {
  // Hex keeps the key printable whatever bytes an old row's worker_id holds.
  std::string after_id;
  if (!after.empty() && (after[0] != 'w' || !unhex(after.substr(1), &after_id) || after_id.empty())) {
    bad_token(after, "worker");
  }
  auto st = db_->prepare(
      "SELECT worker_id, host, gpus, gpu_names, mem_gib, cpus, state, first_seen, last_seen, "
      "(SELECT COUNT(*) FROM trials t WHERE t.worker_id = w.worker_id AND t.state = 'running') "
      "FROM workers w WHERE worker_id > ?1 ORDER BY worker_id");
  st.bind(1, after_id);
  while (st.step()) {
    nlohmann::json row = {{"worker_id", st.text(0)}, {"host", st.text(1)}, {"gpus", st.int64(2)},
                          {"gpu_names", st.text(3)}, {"mem_gib", st.real(4)}, {"cpus", st.int64(5)},
                          {"state", st.text(6)}, {"first_seen", st.real(7)}, {"last_seen", st.real(8)},
                          {"running_trials", st.int64(9)}};
    if (!visit("w" + hex(st.text(0)), std::move(row))) break;
  }
}

nlohmann::json Store::workers_json() {
  nlohmann::json out = nlohmann::json::array();
  visit_workers("", [&](const std::string&, nlohmann::json row) {
    out.push_back(std::move(row));
    return true;
  });
  // Alive workers first, as `hylab workers` shows them.
  const std::string alive = to_string(proto::WORKER_STATE_ALIVE);
  std::stable_sort(out.begin(), out.end(), [&](const nlohmann::json& a, const nlohmann::json& b) {
    return (a["state"] == alive) > (b["state"] == alive);
  });
  return out;
}

}  // namespace hylab::store
