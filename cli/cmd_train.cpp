// `hylab train`: the trainer process (trainer/train.h has the contract; docs/TRAINING.md the
// guide). This file only maps flags onto TrainOptions.
#include <memory>

#include "cli/command.h"
#include "cli/usage.h"
#include "trainer/train.h"

namespace hylab::cli {
namespace {

void setup(CLI::App& root) {
  auto o = std::make_shared<trainer::TrainOptions>();
  auto resume_dir = std::make_shared<std::string>();
  auto* cmd = root.add_subcommand(
      "train", "Train a model on a prepared data folder (CPU, one GPU, or --nproc ranks)");
  cmd->add_option("--config", o->config_path, "Config file (YAML; `hylab config keys` lists the keys)");
  cmd->add_option(flag("run_dir"), o->run_dir,
                  "Run folder for log, checkpoints and config (default runs/<name>-<time>/)");
  cmd->add_option(flag("metrics_jsonl"), o->metrics_jsonl,
                  "Append metrics as JSON lines here instead of the SQLite database (workers)");
  auto* resume = cmd->add_option(
      "--resume", *resume_dir,
      "Continue from the newest checkpoint of --run_dir (or of the folder given here), with the "
      "run's own config.json plus any --key=value given again");
  resume->expected(0, 1);
  cmd->add_option(flag("resume_step"), o->resume_step,
                  "With --resume: the checkpoint of this step instead of the newest (a worker names "
                  "the one whose earlier records it relayed)");
  cmd->add_option("--nproc", o->nproc, "Ranks to run on this machine (one per GPU, or CPU processes)")
      ->capture_default_str();
  cmd->add_option("--db", o->db_path, "SQLite database of local runs (default $HYLAB_DB or runs/hylab.db)");
  cmd->allow_extras();
  cmd->footer(
      "Any config key may follow as --key=value, e.g. --depth=4 --num_iterations=100 "
      "--device_batch_size=8 --probe_steps=0 (`hylab config keys` lists them).\nEqual budgets: "
      "--target_flops=F (or --target_tokens=N) instead of --num_iterations takes the steps from the "
      "model's own FLOPs per token: round(F / (flops_per_token * total_batch_size)).\nCheckpoint "
      "retention: --checkpoint_keep_last=1 --checkpoint_keep_best=1 (the default; -1 keeps all).\n"
      "Exit status: 0 ok, 2 bad config/usage, 3 diverged, 4 out of memory, 130 SIGINT (Ctrl-C), "
      "143 SIGTERM (both mark the run cancelled), 1 other.");
  cmd->callback([cmd, o, resume, resume_dir] {
    trainer::TrainOptions opt = *o;
    opt.overrides = cmd->remaining();
    reject_unknown_args(*cmd, unknown_override_args(opt.overrides));
    if (resume->count() > 0) {
      opt.resume = true;
      if (!resume_dir->empty()) {
        if (!opt.run_dir.empty() && opt.run_dir != *resume_dir) {
          std::fprintf(stderr, "hylab train: --resume %s and --run_dir %s name different folders\n",
                       resume_dir->c_str(), opt.run_dir.c_str());
          exit_status() = proto::TRAINER_EXIT_BAD_CONFIG;
          return;
        }
        opt.run_dir = *resume_dir;
      }
      if (opt.run_dir.empty()) {
        std::fprintf(stderr, "hylab train: --resume needs the run folder (--run_dir DIR or --resume DIR)\n");
        exit_status() = proto::TRAINER_EXIT_BAD_CONFIG;
        return;
      }
    }
    exit_status() = trainer::run_train(opt);
  });
}

HYLAB_REGISTER_COMMAND("train", 30, setup);

}  // namespace
}  // namespace hylab::cli
