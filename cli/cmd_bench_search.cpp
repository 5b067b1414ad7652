// `hylab bench search`: TPE against random search on synthetic objectives (no training) as
// JSON {commit, date, settings, results}; sweep/search_bench.h defines the objectives.
#include <cstdio>
#include <ctime>
#include <memory>

#include "cli/command.h"
#include "common/bench_stamp.h"
#include "common/check.h"
#include "sweep/search_bench.h"

namespace hylab::cli {
namespace {

struct Options {
  int seeds = 20;
  std::vector<std::string> objectives = {"pattern12", "pattern24", "mixed"};
  std::string out;
  coordinator::TpeOptions tpe;
};

void run(const Options& o) {
  if (o.seeds < 1) throw ConfigError(fmt::format("--seeds = {}: expected >= 1", o.seeds));
  if (o.tpe.candidates < 1)
    throw ConfigError(fmt::format("--candidates = {}: expected >= 1", o.tpe.candidates));
  if (!(o.tpe.gamma > 0 && o.tpe.gamma <= 1))
    throw ConfigError(fmt::format("--gamma = {}: expected (0, 1]", o.tpe.gamma));
  nlohmann::json doc;
  doc["commit"] = bench_commit();
  doc["date"] = utc_timestamp();
  doc["settings"] = {{"startup_trials", o.tpe.startup_trials},
                     {"candidates", o.tpe.candidates},
                     {"gamma", o.tpe.gamma},
                     {"target", "first trial whose noise-free value is within 1% of the optimum"}};
  doc["results"] = coordinator::run_search_bench(o.objectives, o.seeds, o.tpe);
  emit_bench_json(doc, o.out);
}

void setup(CLI::App& root) {
  auto* bench = group(root, "bench", "Benchmarks that print JSON");
  auto o = std::make_shared<Options>();
  auto* cmd = bench->add_subcommand(
      "search",
      "Trials TPE and random search need to get within 1% of a synthetic objective's "
      "optimum (block patterns of 12 and 24 layers, and a mixed space); no training");
  cmd->add_option(flag("seeds"), o->seeds, "Seeds per objective and method")->capture_default_str();
  cmd->add_option(flag("objective"), o->objectives, "pattern12, pattern24 and/or mixed")
      ->check(CLI::IsMember({"pattern12", "pattern24", "mixed"}))
      ->capture_default_str();
  cmd->add_option(flag("startup_trials"), o->tpe.startup_trials, "TPE: random trials first")
      ->capture_default_str();
  cmd->add_option(flag("candidates"), o->tpe.candidates, "TPE: candidates per proposal")
      ->capture_default_str();
  cmd->add_option(flag("gamma"), o->tpe.gamma, "TPE: share of trials counted as good")
      ->capture_default_str();
  cmd->add_option(flag("out"), o->out,
                  "Also write the JSON to this file (e.g. docs/benchmarks/search.json)");
  cmd->callback([o] { run(*o); });
}

HYLAB_REGISTER_COMMAND("bench search", 82, setup);

}  // namespace
}  // namespace hylab::cli
