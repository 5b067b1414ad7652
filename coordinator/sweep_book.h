// The coordinator's book of running sweeps: submit, cancel, resume, extend and suggest (the
// client's requests), the sweep metric's series for early stopping, tpe proposals when
// slots are free, and completion once no trial is left. Its trials live in TrialBook, which
// it fills (a loaded, submitted or extended sweep) and asks (which are active, which run);
// TrialBook tells it when a trial ended (finish_if_done). Rows go through the store inside
// the caller's transaction (coordinator_impl.h). Single-threaded.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "coordinator/book_env.h"
#include "coordinator/early_stop.h"
#include "coordinator/effects.h"
#include "proto/sweep.pb.h"
#include "proto/wire.pb.h"
#include "store/store.h"
#include "sweep/search.h"

namespace hylab::coordinator {

class TrialBook;
class WorkerBook;

struct SweepInfo {
  store::SweepRow row;
  proto::EarlyStop early_stop;
  bool minimize = true;
  std::map<int64_t, std::vector<std::pair<int64_t, double>>> series;  // sweep metric per trial
  bool series_dirty = false;
  // Per trial: (trial_index, tokens per step), for hyperband's brackets and token rungs.
  std::map<int64_t, std::pair<int64_t, int64_t>> trial_meta;
  // tpe and random sweeps: the state proposals come from, the number of trials the sweep has
  // and the next trial_index; exhausted when no new trial can be found.
  std::optional<SearchState> search;
  int64_t n_trials = 0, next_index = 0;
  bool exhausted = false;
  // An active trial of this sweep seen last time finish_if_done looked (TrialBook::newest_of):
  // checked first, so that the scan of every active trial runs only when it has gone. Only a
  // hint: it is checked before it is believed.
  int64_t active_hint = 0;
  bool proposes() const {
    return search && search->spec.method() == "tpe" && !exhausted && n_trials < search->spec.count();
  }
};

class SweepBook {
 public:
  // `trials` and `workers` must outlive this book.
  SweepBook(BookEnv env, TrialBook& trials, const WorkerBook& workers);
  SweepBook(const SweepBook&) = delete;  // the other books hold references to it
  SweepBook& operator=(const SweepBook&) = delete;

  // ---- client requests: the reply's JSON; throw hylab::Error to refuse ----
  std::string submit(const proto::SubmitSweep& s, int64_t now);
  std::string cancel(int64_t sweep_id, Effects& fx);
  std::string resume(int64_t sweep_id, int64_t now);
  std::string extend(const proto::SearchExtend& e, int64_t now);  // `sweep extend`
  std::string suggest(const proto::SearchSuggest& s);             // `sweep suggest`: nothing stored

  // ---- each iteration ----
  void check_early_stop(Effects& fx);  // stops the trials the sweeps' rules say cannot win
  void propose();                      // tpe trials for the slots no pending trial will take

  // ---- for TrialBook ----
  int max_retries(int64_t sweep_id) const;
  // Adds a batch's points of the sweep metric to the sweep's series (early stopping).
  void observe_metrics(int64_t sweep_id, const proto::MetricsBatch& b);
  // Completes the sweep when no trial of it is active and it proposes no more.
  void finish_if_done(int64_t sweep_id);

  // ---- loading ----
  void load_running(int64_t now);  // every running sweep and its active trials
  void finish_all_done();          // finish_if_done for every sweep (after loading)
  void clear() { sweeps_.clear(); }
  // ---- read-only: tests ----
  const std::map<int64_t, SweepInfo>& all() const { return sweeps_; }

 private:
  // (Re)loads the sweep and its active trials; `keep_known` keeps trials TrialBook has.
  void load(const store::SweepRow& row, int64_t now, bool keep_known);
  void load_search(SweepInfo& s);
  std::vector<KnownTrial> known_trials(int64_t sweep_id, const std::string& metric, bool minimize);
  int64_t insert_trial(int64_t sweep_id, const store::SweepRow& row, const TrialPlan& plan);
  void add_trial(const SweepInfo& s, int64_t trial_id, const TrialPlan& plan);
  std::string extend_with_trials(const proto::SearchExtend& e, const store::SweepRow& row, int64_t now);

  BookEnv env_;
  TrialBook& trials_;
  const WorkerBook& workers_;
  std::map<int64_t, SweepInfo> sweeps_;  // running sweeps
};

}  // namespace hylab::coordinator
