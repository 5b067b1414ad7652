// `hylab results`: one row per trial, grouped views, loss curves. Reads the SQLite database
// directly, so it works while the coordinator is down.
#include <cstdio>

#include "cli/daemon_flags.h"
#include "common/check.h"
#include "store/results.h"

namespace hylab::cli {
namespace {

struct Flags {
  std::string db = default_db_path();
  int64_t sweep_id = 0;
  std::string sort, group_by, format = "table";
  std::vector<int64_t> curves;
};

void setup(CLI::App& root) {
  auto* cmd = root.add_subcommand("results", "Compare trials: pattern, Mamba settings, bpb, speed, memory (reads the database)");
  auto f = std::make_shared<Flags>();
  cmd->add_option(flag("db"), f->db, "SQLite results database (default $HYLAB_DB, else runs/hylab.db)");
  cmd->add_option(flag("sweep"), f->sweep_id, "Only this sweep's trials");
  cmd->add_option(flag("sort"), f->sort, "Sort by a column (e.g. val_bpb; -tok_per_s for descending)");
  cmd->add_option(flag("group_by"), f->group_by, "Group by a column (e.g. block_pattern, attention_fraction)");
  auto* format = cmd->add_option(flag("format"), f->format, "table, csv or json (--curves: csv unless given)")
                     ->capture_default_str();
  cmd->add_option(flag("curves"), f->curves, "Loss curves of these trials: trial_id, step, one column per metric");
  cmd->footer("Exit status: 0 ok, 1 error (e.g. no such sweep or trial), 2 bad usage.");
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
    if (!f->curves.empty()) {
      for (int64_t id : f->curves) require_row("trials", "trial_id", id);
      // Curves are data: CSV unless a format is asked for, and then that one.
      const std::string fmt_name = format->count() > 0 ? f->format : "csv";
      std::fputs(store::render(store::curves(*db, f->curves), store::parse_format(fmt_name)).c_str(), stdout);
      return;
    }
    store::ResultsQuery q;
    q.sweep_id = f->sweep_id;
    q.sort = f->sort;
    q.group_by = f->group_by;
    std::fputs(store::render(store::results(*db, q), store::parse_format(f->format)).c_str(), stdout);
  });
}

HYLAB_REGISTER_COMMAND("results", 54, setup);

}  // namespace
}  // namespace hylab::cli
