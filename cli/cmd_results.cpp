// `hylab results`: one row per trial, grouped views, loss curves. Reads the SQLite database
// directly, so it works while the coordinator is down.
#include <cstdio>

#include "cli/daemon_flags.h"
#include "common/check.h"
#include "common/states.h"
#include "store/compare.h"
#include "store/curve_compare.h"
#include "store/results.h"
#include "store/trial_view.h"

namespace hylab::cli {
namespace {

struct Flags {
  std::string db = default_db_path();
  int64_t sweep_id = 0;
  std::string sort, group_by, format = "table";
  std::vector<int64_t> curves;
  // Comparisons (store/compare.h, store/curve_compare.h; docs/RESULTS.md).
  std::string metric = "val_bpb", goal, x = "step";
  bool include_stopped = false;
  std::vector<std::string> pareto;
  int64_t trial_id = 0;  // --trial: one trial's view (provenance, run_dir, config)
};

void setup(CLI::App& root) {
  auto* cmd = root.add_subcommand("results", "Compare trials: pattern, Mamba settings, bpb, speed, memory (reads the database)");
  auto f = std::make_shared<Flags>();
  cmd->add_option(flag("db"), f->db, "SQLite results database (default $HYLAB_DB, else runs/hylab.db)");
  cmd->add_option(flag("sweep"), f->sweep_id, "Only this sweep's trials");
  cmd->add_option(flag("sort"), f->sort, "Sort by a column (e.g. val_bpb; -tok_per_s for descending)");
  cmd->add_option(flag("group_by"), f->group_by,
                  "Group by columns, comma-separated (e.g. block_pattern or block_pattern,mamba_d_state): "
                  "mean ± std and n of --metric per group, ranked, marked by Welch's t-test against the best");
  cmd->add_option(flag("metric"), f->metric, "The metric groups and --x tokens compare")->capture_default_str();
  cmd->add_option(flag("goal"), f->goal, "min or max for --metric (default: max for tok_per_s, mfu, decode_*; else min)");
  cmd->add_flag(flag("include_stopped"), f->include_stopped,
                "Count early-stopped and failed trials' last value in group statistics (marked in note)");
  cmd->add_option(flag("pareto"), f->pareto,
                  "Keep the Pareto front over these columns, e.g. val_bpb,tok_per_s (name:min or name:max to set a goal)")
      ->delimiter(',');
  auto* format = cmd->add_option(flag("format"), f->format, "table, csv or json (--curves: csv unless given)")
                     ->capture_default_str();
  cmd->add_option(flag("curves"), f->curves, "Loss curves of these trials: trial_id, step, one column per metric")
      ->delimiter(',');
  cmd->add_option(flag("x"), f->x,
                  "With --curves: step (one row per trial and step) or tokens (--metric of every trial at equal "
                  "training tokens: each trial's last point at or before each token count)")
      ->check(CLI::IsMember({"step", "tokens"}))
      ->capture_default_str();
  cmd->add_option(flag("trial"), f->trial_id,
                  "One trial in full: every column (budget, disk use, run_dir, provenance) and its config");
  cmd->footer("The text table leaves out the provenance columns (hylab_version, hylab_commit, "
              "torch_version, cuda_version, nccl_version, driver_version, gpu_name, host); "
              "--format csv/json and --trial show them.\n"
              "Exit status: 0 ok, 1 error (e.g. no such sweep or trial), 2 bad usage.");
  cmd->callback([f, format] {
    auto db = store::Db::open(f->db, /*read_only=*/true);
    // An id that names nothing is an error, not an empty table.
    auto require_row = [&](const char* table, const char* column, int64_t id) {
      auto st = db->prepare(fmt::format("SELECT 1 FROM {} WHERE {} = ?", table, column));
      st.bind(1, id);
      if (!st.step()) {
        throw hylab::Error(fmt::format("{} {} does not exist in {} (`hylab {}` lists them)", column, id,
                                       f->db, std::string(table) == "sweeps" ? "sweep list" : "results"));
      }
    };
    if (f->sweep_id != 0) require_row("sweeps", "sweep_id", f->sweep_id);
    if (f->trial_id > 0) {
      require_row("trials", "trial_id", f->trial_id);
      std::fputs(store::render_trial(*db, f->trial_id, store::parse_format(f->format)).c_str(), stdout);
      return;
    }
    if (!f->curves.empty()) {
      for (int64_t id : f->curves) require_row("trials", "trial_id", id);
      // Curves are data: CSV unless a format is asked for, and then that one.
      const std::string fmt_name = format->count() > 0 ? f->format : "csv";
      const store::Table t = f->x == "tokens" ? store::align_at_tokens(store::load_curves(*db, f->curves, f->metric), f->metric)
                                              : store::curves(*db, f->curves);
      std::fputs(store::render(t, store::parse_format(fmt_name)).c_str(), stdout);
      return;
    }
    const store::Format out_format = store::parse_format(f->format);
    store::ResultsQuery q;
    q.sweep_id = f->sweep_id;
    q.sort = f->sort;
    q.provenance = out_format != store::Format::kTable;
    const store::Table trials = store::results(*db, q);
    if (!f->group_by.empty()) {
      store::GroupQuery g;
      g.group_by = store::split_list(f->group_by);
      g.metric = f->metric;
      g.goal = f->goal.empty() ? store::default_goal(f->metric) : store::parse_goal(f->goal, "--goal");
      g.include_stopped = f->include_stopped;
      std::fputs(store::render_groups(trials, g, out_format, f->pareto).c_str(), stdout);
      return;
    }
    if (f->pareto.empty()) {
      std::fputs(store::render(trials, out_format).c_str(), stdout);
      return;
    }
    store::Table pool = trials;  // the front of finished trials (and stopped ones when asked)
    const int state = trials.column("state");
    pool.rows.clear();
    for (const auto& row : trials.rows) {
      const proto::TrialState s = parse_trial_state(row[state].get<std::string>());
      if (s == proto::TRIAL_STATE_SUCCEEDED || (f->include_stopped && is_final(s))) pool.rows.push_back(row);
    }
    std::fputs(store::render(store::pareto_rows(pool, f->pareto), out_format).c_str(), stdout);
  });
}

HYLAB_REGISTER_COMMAND("results", 54, setup);

}  // namespace
}  // namespace hylab::cli
