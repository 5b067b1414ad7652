// `hylab results`: one row per trial, grouped views, loss curves. Reads the SQLite database
// directly, so it works while the coordinator is down.
#include <cstdio>

#include "cli/daemon_flags.h"
#include "common/check.h"
#include "store/results.h"
#include "store/trial_view.h"

namespace hylab::cli {
namespace {

struct Flags {
  std::string db = default_db_path();
  int64_t sweep_id = 0;
  std::string sort, group_by, format = "table";
  std::vector<int64_t> curves;
  int64_t trial_id = 0;  // --trial: one trial's view (provenance, run_dir, config)
};

void setup(CLI::App& root) {
  auto* cmd = root.add_subcommand("results", "Compare trials: pattern, Mamba settings, bpb, speed, memory (reads the database)");
  auto f = std::make_shared<Flags>();
  cmd->add_option(flag("db"), f->db, "SQLite results database (default $HYLAB_DB, else runs/hylab.db)");
  cmd->add_option(flag("sweep"), f->sweep_id, "Only this sweep's trials");
  cmd->add_option(flag("sort"), f->sort, "Sort by a column (e.g. val_bpb; -tok_per_s for descending)");
  cmd->add_option(flag("group_by"), f->group_by, "Group by a column (e.g. block_pattern, attention_fraction)");
  cmd->add_option(flag("format"), f->format, "table, csv or json")->capture_default_str();
  cmd->add_option(flag("curves"), f->curves, "Loss curves of these trials as CSV: trial_id, step, one column per metric");
  cmd->add_option(flag("trial"), f->trial_id,
                  "One trial in full: every column (budget, disk use, run_dir, provenance) and its config");
  cmd->footer("The text table leaves out the provenance columns (hylab_version, hylab_commit, "
              "torch_version, cuda_version, nccl_version, driver_version, gpu_name, host); "
              "--format csv/json and --trial show them.");
  cmd->callback([f] {
    auto db = store::Db::open(f->db, /*read_only=*/true);
    if (f->trial_id > 0) {
      std::fputs(store::render_trial(*db, f->trial_id, store::parse_format(f->format)).c_str(), stdout);
      return;
    }
    if (!f->curves.empty()) {
      std::string format = f->format == "table" ? "csv" : f->format;  // curves are data: CSV unless json
      std::fputs(store::render(store::curves(*db, f->curves), store::parse_format(format)).c_str(), stdout);
      return;
    }
    store::ResultsQuery q;
    q.sweep_id = f->sweep_id;
    q.sort = f->sort;
    q.group_by = f->group_by;
    const store::Format format = store::parse_format(f->format);
    q.provenance = format != store::Format::kTable;
    std::fputs(store::render(store::results(*db, q), format).c_str(), stdout);
  });
}

HYLAB_REGISTER_COMMAND("results", 54, setup);

}  // namespace
}  // namespace hylab::cli
