// The training loop (nanochat's scripts/base_train.py in C++): setup, then `while (true)`
// with the once-in-a-while blocks (eval, sample, checkpoint), then one optimiser step of
// gradient accumulation, then a log line. Read run_rank() top to bottom.
#include "trainer/train.h"

#include <signal.h>
#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/check.h"
#include "common/metrics.h"
#include "common/run_config.h"
#include "common/states.h"
#include "model/accounting.h"
#include "model/checkpoint.h"
#include "model/compat.h"
#include "model/gpt.h"
#include "trainer/data_prepare.h"
#include "trainer/device.h"
#include "trainer/dist.h"
#include "trainer/evaluate.h"
#include "trainer/grad_reducer.h"
#include "trainer/launch.h"
#include "trainer/loader.h"
#include "trainer/metrics_sinks.h"
#include "trainer/optim.h"
#include "trainer/provenance.h"
#include "trainer/retention.h"
#include "trainer/run_dir.h"
#include "trainer/schedule.h"
#include "common/spawn.h"
#include "trainer/tokenizer.h"
#include "trainer/trial_evals.h"
#if HYLAB_HAS_STORE
#include "store/local_run.h"
#endif

namespace hylab::trainer {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------- signals

// SIGTERM (a worker cancelling) and SIGINT (Ctrl-C) both stop at the next micro-step and
// mark the run cancelled; g_terminate holds the signal number, 0 while running.
std::atomic<int> g_terminate{0};

void on_stop_signal(int sig) { g_terminate = sig; }

void install_stop_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
}

// Thrown inside the loop; mapped to exit statuses by run_train.
struct Diverged : Error {
  using Error::Error;
};
struct Terminated : Error {
  using Error::Error;
};

// ---------------------------------------------------------------- setup helpers

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  if (!in) HYLAB_FAIL("cannot read {}", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The run's config + overrides, with the vocabulary taken from the data folder unless the
// config sets it; then resolved. A resumed run continues with the config it started with
// (<run_dir>/config.json; --config is not re-read), so that only overrides given again
// (e.g. a longer --num_iterations) change it.
RunConfig load_run_config(const TrainOptions& opt) {
  RunConfig cfg;
  if (opt.resume && !opt.run_dir.empty() && fs::exists(opt.run_dir + "/config.json")) {
    cfg = config_from_json(read_text(opt.run_dir + "/config.json"));
    // A resolved config stores depth 0 for "widths given directly", which resolve_config
    // does not accept back as input.
    if (cfg.has_depth() && cfg.depth() == 0) cfg.clear_depth();
  } else if (!opt.config_path.empty()) {
    cfg = load_config_file(opt.config_path);
  }
  const std::vector<std::string> rest = apply_override_args(&cfg, opt.overrides);
  if (!rest.empty()) {
    throw ConfigError(fmt::format("unknown argument \"{}\": not a `hylab train` option or a config "
                                  "key (see `hylab config show --help`)", rest.front()));
  }
  if (!cfg.has_vocab_size()) {
    if (!fs::exists(fs::path(cfg.data()) / "meta.json")) {
      throw ConfigError(fmt::format(
          "data = \"{}\": no prepared data folder there (meta.json missing). Create it with "
          "`scripts/fetch_corpus.sh && hylab data prepare --input data/raw --out {}`, or set "
          "data to a folder written by `hylab data prepare`", cfg.data(), cfg.data()));
    }
    cfg.set_vocab_size(read_data_meta(cfg.data()).vocab_size);
  }
  return resolve_config(cfg);
}

// The model-shape fields of two configs must agree for a checkpoint to load.
void check_same_model(const RunConfig& a, const RunConfig& b) {
  const GPTConfig x = gpt_config(a), y = gpt_config(b);
  if (x.n_layer != y.n_layer || x.n_embd != y.n_embd || x.n_head != y.n_head ||
      x.n_kv_head != y.n_kv_head || x.vocab_size != y.vocab_size ||
      x.block_pattern != y.block_pattern || x.mamba_d_state != y.mamba_d_state ||
      x.mamba_d_conv != y.mamba_d_conv || x.mamba_expand != y.mamba_expand ||
      x.mamba_use_mlp != y.mamba_use_mlp || x.mamba_dt_rank != y.mamba_dt_rank) {
    throw ConfigError("--resume: the config describes another model than the checkpoint ("
                      "n_layer/n_embd/heads/vocab/block_pattern/mamba sizes differ); resume with "
                      "the run's own config");
  }
}

// Where rank 0's records go: metrics.jsonl under a worker, else SQLite (a "local" trial).
struct Recorder {
  std::unique_ptr<MetricsSink> sink;
  JsonlMetricsSink* jsonl = nullptr;
#if HYLAB_HAS_STORE
  store::LocalRun* local = nullptr;
#endif
  void write(int64_t step, std::vector<std::pair<std::string, double>> values) {
    if (!sink) return;
    std::vector<MetricPoint> points;
    const double now = unix_time_now();
    for (auto& [name, v] : values) points.push_back({step, name, v, now});
    sink->write(points);
  }
  void checkpoint(int64_t step) {
    if (jsonl) jsonl->checkpoint(step);
    if (sink) sink->flush();
  }
  void finish(proto::TrialState state, const std::string& reason) {
    if (sink) sink->flush();
#if HYLAB_HAS_STORE
    if (local) local->finish(state, reason);
#endif
    (void)state, (void)reason;
  }
};

Recorder open_recorder(const TrainOptions& opt, const RunConfig& cfg, const std::string& run_dir,
                       bool resuming, TrainLog& log) {
  Recorder r;
  if (!opt.metrics_jsonl.empty()) {
    auto s = std::make_unique<JsonlMetricsSink>(opt.metrics_jsonl);
    r.jsonl = s.get();
    r.sink = std::move(s);
    return r;
  }
#if HYLAB_HAS_STORE
  std::string db = opt.db_path;
  if (db.empty()) db = std::getenv("HYLAB_DB") ? std::getenv("HYLAB_DB") : "runs/hylab.db";
  if (fs::path(db).has_parent_path()) fs::create_directories(fs::path(db).parent_path());
  std::unique_ptr<store::LocalRun> local;
  if (resuming) {
    try {
      local = store::LocalRun::reopen(db, run_dir);
    } catch (const Error& e) {
      log.line(fmt::format("note: {}; recording as a new local run", e.what()));
    }
  }
  if (!local) local = store::LocalRun::open(db, cfg, run_dir);
  log.line(fmt::format("metrics: {} (local trial {})", db, local->trial_id()));
  r.local = local.get();
  r.sink = std::move(local);
#else
  (void)cfg, (void)run_dir, (void)resuming;
  log.line("metrics: console only (this build has no store/)");
#endif
  return r;
}

std::string format_count(double v) {
  if (v >= 1e9) return fmt::format("{:.2f}B", v / 1e9);
  if (v >= 1e6) return fmt::format("{:.2f}M", v / 1e6);
  if (v >= 1e3) return fmt::format("{:.1f}K", v / 1e3);
  return fmt::format("{:.0f}", v);
}

// ---------------------------------------------------------------- one rank

int run_rank(const TrainOptions& opt, const RunConfig& cfg) {
  const DistEnv denv = dist_env_from_environment();
  const bool master = denv.rank == 0;
  if (denv.world > 1 && opt.run_dir.empty()) {
    throw ConfigError("several ranks need one run folder: pass --run_dir DIR");
  }
  const std::string run_dir = opt.run_dir.empty() ? default_run_dir(cfg.name()) : opt.run_dir;
  std::string resume_from;
  if (opt.resume) {
    resume_from = opt.resume_step >= 0 ? checkpoint_dir(run_dir, opt.resume_step) : newest_checkpoint(run_dir).dir;
    if (opt.resume_step >= 0 && !fs::exists(resume_from + "/meta.json")) {
      throw ConfigError(fmt::format("--resume_step {}: no complete checkpoint {}", opt.resume_step, resume_from));
    }
  }
  // A data folder that is not there is a config error (exit 2: a sweep does not retry it),
  // said with the directory a relative path was looked up from.
  if (!fs::is_directory(cfg.data()) || !fs::exists(fs::path(cfg.data()) / "tokenizer.model")) {
    throw ConfigError(fmt::format(
        "data = \"{}\": {} (looked {}); prepare it with `hylab data prepare --out {}`, or give "
        "the path of a prepared folder{}",
        cfg.data(), fs::is_directory(cfg.data()) ? "no tokenizer.model in it" : "no such directory",
        fs::path(cfg.data()).is_absolute() ? "there"
                                           : "relative to " + fs::current_path().string(),
        cfg.data(),
        fs::path(cfg.data()).is_absolute() ? "" : " (absolute, or relative to that directory)"));
  }
  if (master) {
    fs::create_directories(fs::path(run_dir) / "checkpoints");
    std::ofstream(run_dir + "/config.json") << config_to_json(cfg) << "\n";
    fs::copy_file(cfg.data() + "/tokenizer.model", run_dir + "/tokenizer.model",
                  fs::copy_options::overwrite_existing);
  }
  TrainLog log(master ? run_dir + "/train.log" : "");
  auto say = [&](const std::string& s) {
    if (master) log.line(s);
  };
  Recorder rec;
  if (master) rec = open_recorder(opt, cfg, run_dir, opt.resume, log);
  try {
    install_stop_signal_handlers();

    // Device, communication, model.
    const torch::Device device = pick_device(cfg, denv.local_rank);
    const bool autocast = use_bf16_autocast(cfg, device);
    std::unique_ptr<Dist> dist = make_dist(denv, device);
    const GPTConfig gcfg = gpt_config(cfg);
    torch::manual_seed(static_cast<uint64_t>(cfg.seed()));
    GPT model(gcfg);
    model->to(device);
    model->set_use_kernels(cfg.kernels() != "reference");
    const ParamCounts counts = count_params(gcfg);
    const int64_t B = cfg.device_batch_size(), T = cfg.max_seq_len();
    const double flops_per_tok = flops_per_token(gcfg, T);
    const Horizon horizon = compute_horizon(cfg, counts.total, denv.world, flops_per_tok);
    const double peak = peak_flops_for_device(device_name(device));
    Optimizers optim(*model, cfg, device.is_cuda(), dist.get());
    // Several ranks: gradient buckets are all-reduced while backward runs (ddp_overlap), in
    // reverse model order (lm_head's bucket first).
    std::unique_ptr<GradReducer> reducer;
    if (denv.world > 1 && cfg.ddp_overlap()) {
      reducer = std::make_unique<GradReducer>(*dist, model->parameters(),
                                              static_cast<int64_t>(cfg.ddp_bucket_mb() * (1 << 20)));
    }
    DataLoader train_loader(cfg.data(), "train", B, T, denv.rank, denv.world);
    std::unique_ptr<Tokenizer> tokenizer;
    torch::Tensor token_bytes;
    int64_t eval_B = B;  // rows per evaluation micro-batch (rank 0)
    if (master) {
      tokenizer = std::make_unique<Tokenizer>(Tokenizer::load(cfg.data() + "/tokenizer.model"));
      HYLAB_CHECK(tokenizer->vocab_size() <= gcfg.vocab_size,
                  "the data's tokenizer has {} tokens but the model's vocab_size is {}",
                  tokenizer->vocab_size(), gcfg.vocab_size);
      const std::vector<int32_t> tb = tokenizer->token_bytes();
      token_bytes = torch::zeros({gcfg.vocab_size}, torch::kLong);
      for (size_t i = 0; i < tb.size(); ++i) token_bytes[static_cast<int64_t>(i)] = tb[i];
      // Evaluation takes micro-batches of up to B rows; a small val split (the embedded corpus
      // holds 38k tokens) gets fewer rows per batch rather than failing the run.
      eval_B = std::min<int64_t>(B, DataLoader::rows_that_fit(cfg.data(), "val", T));
      DataLoader probe_val(cfg.data(), "val", std::max<int64_t>(eval_B, 1), T);  // clear error if none fit
      if (eval_B < B) {
        say(fmt::format("eval: the val split holds {} rows of {} tokens; evaluating {} rows at a time",
                        eval_B, T, eval_B));
      }
    }

    // Resume: weights, optimiser state, data position and RNG from the newest checkpoint.
    int64_t step = 0;
    double train_loss = -1;
    if (!resume_from.empty()) {
      Checkpoint ck = load_checkpoint(resume_from, model.get(), device);
      check_same_model(ck.config, cfg);
      optim.load_state(ck.extra);
      train_loader.set_position(ck.extra.at("loader.position").item<int64_t>());
      set_rng_state(ck.extra, device);
      step = ck.meta.at("step").get<int64_t>();
      train_loss = ck.meta.value("train_loss", -1.0);
      say(fmt::format("resumed from {} (step {})", resume_from, step));
    } else if (opt.resume) {
      say(fmt::format("--resume: no checkpoint in {}/checkpoints yet; starting at step 0", run_dir));
    }
    {  // Every rank starts from rank 0's weights.
      torch::NoGradGuard ng;
      for (auto& p : model->parameters()) dist->broadcast(p, 0);
    }
    const int64_t resumed_at = step;

    say(fmt::format("run {} -> {}", cfg.name(), run_dir));
    say(fmt::format("model: {} layers {} | n_embd {} | heads {}/{} | vocab {} | params {} "
                    "(embedding {}, lm_head {}, attention {}, mlp {}, mamba {}, mamba2 {}) | {} FLOPs/token",
                    gcfg.n_layer, compact_block_pattern(gcfg.block_pattern), gcfg.n_embd,
                    gcfg.n_head, gcfg.n_kv_head, gcfg.vocab_size, format_count(counts.total),
                    format_count(counts.embedding), format_count(counts.lm_head),
                    format_count(counts.attention), format_count(counts.mlp),
                    format_count(counts.mamba), format_count(counts.mamba2),
                    format_count(flops_per_tok)));
    say(fmt::format("device: {} ({}), {} rank(s), backend {}, {}", device.str(),
                    device_name(device), denv.world, dist->backend(), autocast ? "bf16 autocast" : "fp32"));
    say(fmt::format("batch: {} x {} tokens per micro-step, {} micro-steps x {} ranks = {} tokens "
                    "per step; {} steps ({}); {} train tokens in the data",
                    B, T, horizon.grad_accum_steps, denv.world, horizon.total_batch_size,
                    horizon.num_iterations, horizon.horizon_source,
                    format_count(static_cast<double>(train_loader.total_tokens()))));
    say(optim.describe());
    if (reducer) {
      say(fmt::format("data parallel: {} gradient buckets of <= {:g} MiB, all-reduced during backward",
                      reducer->buckets().size(), cfg.ddp_bucket_mb()));
    }
    const nlohmann::ordered_json provenance = collect_provenance(device);
    if (master) {
      std::ofstream(run_dir + "/provenance.json") << provenance.dump(2) << "\n";
      say("provenance: " + provenance.dump());
    }

    RunSummary summary;
    summary.params_total = counts.total;
    summary.params_json = nlohmann::json{{"embedding", counts.embedding}, {"lm_head", counts.lm_head},
                                         {"attention", counts.attention}, {"mlp", counts.mlp},
                                         {"mamba", counts.mamba}, {"mamba2", counts.mamba2}}
                              .dump();
    summary.flops_per_token = flops_per_tok;
    summary.cache_bytes = cache_bytes_per_sequence(gcfg, cfg.sequence_len(), autocast ? 2 : 4);
    double val_bpb = -1, rate_sum = 0, first_rate = 0;
    TrialEvals evals;
    int64_t rate_steps = 0;
    const auto run_start = Clock::now();
    const int64_t num_iterations = horizon.num_iterations;
    std::vector<int64_t> x, y;

    while (true) {
      const bool last_step = step == num_iterations;

      // Once in a while: validation bits per byte (rank 0; the others wait).
      if (last_step || (cfg.eval_every() > 0 && step % cfg.eval_every() == 0)) {
        if (master) {
          const auto t0 = Clock::now();
          const EvalResult ev = evaluate_bpb(*model, cfg.data(), eval_B, T, cfg.eval_tokens(),
                                             token_bytes, device, autocast);
          val_bpb = ev.bpb;
          rec.write(step, {{"val_bpb", ev.bpb}, {"val_loss", ev.loss}});
          say(fmt::format("step {:05d} | val bpb {:.4f} | val loss {:.4f} | {} tokens | {:.1f} s",
                          step, ev.bpb, ev.loss, ev.tokens,
                          std::chrono::duration<double>(Clock::now() - t0).count()));
          // The evals beside val_bpb: at the final eval, or at every eval when asked.
          if (last_step || cfg.evals_every_eval()) {
            evals = run_trial_evals(*model, cfg, *tokenizer, token_bytes, eval_B, device, autocast,
                                    [&](const std::string& line) {
                                      say(fmt::format("step {:05d} | {}", step, line));
                                    });
            if (!evals.records().empty()) rec.write(step, evals.records());
          }
        }
        dist->barrier();
      }
      // Once in a while: a text sample (rank 0).
      if (master && cfg.sample_every() > 0 && step > 0 &&
          (last_step || step % cfg.sample_every() == 0)) {
        try {
          for (const std::string& s :
               sample_text(*model, *tokenizer, {"The", "Once upon a time", "The meaning of"}, 32,
                           static_cast<uint64_t>(cfg.seed()), autocast)) {
            say("sample: " + s);
          }
        } catch (const Error& e) {
          say(fmt::format("sample skipped: {}", e.what()));
        }
      }
      // Once in a while: a checkpoint (rank 0 writes; announced once durable).
      if (step > resumed_at &&
          (last_step || (cfg.checkpoint_every() > 0 && step % cfg.checkpoint_every() == 0))) {
        if (master) {
          std::map<std::string, torch::Tensor> extra = optim.state();
          extra["loader.position"] = torch::tensor(train_loader.position(), torch::kLong);
          for (auto& [k, v] : rng_state(device)) extra[k] = v;
          nlohmann::json meta = {{"config", nlohmann::json::parse(config_to_json(cfg, false))},
                                 {"step", step},
                                 {"train_loss", train_loss},
                                 {"val_bpb", val_bpb},
                                 {"world_size", denv.world}};
          const std::string dir = checkpoint_dir(run_dir, step);
          save_checkpoint(dir, *model, extra, meta);
          rec.checkpoint(step);
          say(fmt::format("step {:05d} | checkpoint {}", step, dir));
          // Retention only after the new checkpoint is durable and announced.
          for (const std::string& gone :
               prune_checkpoints(run_dir, cfg.checkpoint_keep_last(), cfg.checkpoint_keep_best())) {
            say(fmt::format("step {:05d} | deleted checkpoint {} (checkpoint_keep: last {}, best {})",
                            step, gone, cfg.checkpoint_keep_last(), cfg.checkpoint_keep_best()));
          }
        }
        dist->barrier();
      }
      if (last_step) break;

      // One optimiser step: grad_accum_steps micro-steps, gradients averaged over ranks.
      const auto t0 = Clock::now();
      torch::Tensor loss_sum = torch::zeros({}, torch::dtype(torch::kFloat).device(device));
      for (int64_t micro = 0; micro < horizon.grad_accum_steps; ++micro) {
        if (g_terminate) throw Terminated(g_terminate == SIGINT ? "SIGINT" : "SIGTERM");
        train_loader.next(&x, &y);
        torch::Tensor loss;
        {
          compat::AutocastGuard guard(autocast);
          loss = model->loss(batch_tensor(x, B, T, device), batch_tensor(y, B, T, device));
        }
        loss_sum += loss.detach().to(torch::kFloat);
        if (reducer && micro + 1 == horizon.grad_accum_steps) reducer->arm();
        (loss / static_cast<double>(horizon.grad_accum_steps)).backward();
      }
      if (reducer) {
        reducer->finish();
      } else {
        dist->average_gradients(optim.all_params());
      }
      dist->all_reduce_sum(loss_sum);
      const double grad_norm = clip_grad_norm(optim.all_params(), cfg.grad_clip());
      const double lrm = lr_multiplier(step, num_iterations, cfg.warmup_ratio(),
                                       cfg.warmdown_ratio(), cfg.final_lr_frac());
      optim.set_schedule(lrm, muon_momentum(step));
      optim.step();
      optim.zero_grad();
      train_loss = loss_sum.item<double>() / static_cast<double>(horizon.grad_accum_steps * denv.world);
      synchronize(device);
      const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
      if (!std::isfinite(train_loss)) {
        rec.write(step, {{"train_loss", train_loss}});
        throw Diverged(fmt::format("training diverged at step {}: loss is {} (lower the learning "
                                   "rates or raise warmup_ratio)", step, train_loss));
      }

      // Log line and metrics.
      const double tok_per_s = static_cast<double>(horizon.total_batch_size) / dt;
      const double step_mfu = mfu(flops_per_tok, tok_per_s, peak, denv.world);
      const MemoryStats mem = peak_memory(device);
      if (step > resumed_at) {  // the first step of a process includes warm-up
        rate_sum += tok_per_s;
        ++rate_steps;
      }
      first_rate = step == resumed_at ? tok_per_s : first_rate;
      summary.peak_mem_gib = std::max(summary.peak_mem_gib, mem.peak_allocated_gib);
      if (master && (step % cfg.log_every() == 0 || step + 1 == num_iterations)) {
        rec.write(step, {{"train_loss", train_loss},
                         {"lr", lrm * cfg.matrix_lr()},
                         {"lr_mult", lrm},
                         {"grad_norm", grad_norm},
                         {"step_time_s", dt},
                         {"tok_per_s", tok_per_s},
                         {"mfu", step_mfu},
                         {"mem_alloc_gib", mem.peak_allocated_gib},
                         {"mem_reserved_gib", mem.peak_reserved_gib}});
        say(fmt::format("step {:05d}/{:05d} ({:5.1f}%) | loss {:.6f} | lrm {:.3f} | grad norm {:.3f} | "
                        "dt {:.1f} ms | tok/s {} | mfu {:.2f}% | mem {:.2f}/{:.2f} GiB",
                        step, num_iterations, 100.0 * (step + 1) / num_iterations, train_loss, lrm,
                        grad_norm, dt * 1e3, format_count(tok_per_s), 100 * step_mfu,
                        mem.peak_allocated_gib, mem.peak_reserved_gib));
      }
      ++step;
    }

    // End of run: inference probe and the summary. A resume at the last step trained nothing:
    // the summary of the run that got there stays (a new one would say tok/s 0).
    if (master && step == resumed_at && resumed_at > 0) {
      say(fmt::format("resumed at step {}, the end of the run: nothing to train; the run's "
                      "summary is kept", step));
      rec.finish(proto::TRIAL_STATE_SUCCEEDED, "");
    } else if (master) {
      summary.steps = step;
      summary.total_time_s = std::chrono::duration<double>(Clock::now() - run_start).count();
      summary.final_val_bpb = val_bpb;
      summary.final_train_loss = train_loss;
      summary.recall_acc = evals.recall_acc;
      summary.val_bpb_2x = evals.val_bpb_2x;
      summary.val_bpb_4x = evals.val_bpb_4x;
      summary.tok_per_s = rate_steps > 0 ? rate_sum / rate_steps : first_rate;  // 1 step: its own
      summary.mfu = mfu(flops_per_tok, summary.tok_per_s, peak, denv.world);
      if (cfg.probe_steps() > 0) {
        const InferenceProbe p = probe_inference(*model, cfg.probe_steps(), device, autocast);
        summary.decode_tok_per_s_b1 = p.decode_tok_per_s_b1;
        summary.decode_tok_per_s_b32 = p.decode_tok_per_s_b32;
      }
      summary.provenance_json = provenance.dump();
      summary.disk_bytes = directory_bytes(run_dir);
      if (rec.sink) rec.sink->write_summary(summary);
      say("summary: " + summary_to_json(summary));
      rec.finish(proto::TRIAL_STATE_SUCCEEDED, "");
    }
    dist->barrier();
    return proto::TRAINER_EXIT_OK;
  } catch (const Diverged& e) {
    say(e.what());
    rec.finish(proto::TRIAL_STATE_DIVERGED, e.what());
    std::fprintf(stderr, "hylab train: rank %d: %s\n", denv.rank, e.what());
    return proto::TRAINER_EXIT_DIVERGED;
  } catch (const Terminated& e) {
    say(fmt::format("{} received: stopped", e.what()));
    rec.finish(proto::TRIAL_STATE_CANCELLED, e.what());
    return g_terminate == SIGINT ? proto::TRAINER_EXIT_INTERRUPTED : proto::TRAINER_EXIT_TERMINATED;
  } catch (const ConfigError& e) {
    rec.finish(proto::TRIAL_STATE_FAILED, e.what());
    throw;
  } catch (const std::exception& e) {
    const bool oom = is_out_of_memory(e);
    rec.finish(oom ? proto::TRIAL_STATE_OOM : proto::TRIAL_STATE_FAILED, e.what());
    if (oom) {
      std::fprintf(stderr, "hylab train: rank %d: out of memory: %s\n", denv.rank, e.what());
      return proto::TRAINER_EXIT_OOM;
    }
    throw;
  }
}

// `--nproc N` without RANK/WORLD_SIZE: supervise N copies of ourselves. `multi` (from
// HYLAB_NUM_NODES > 1, see launch.h) makes them this node's share of a multi-node world.
int launch(const TrainOptions& opt, const RunConfig& cfg, const LaunchOptions* multi = nullptr) {
  const std::string run_dir = opt.run_dir.empty() ? default_run_dir(cfg.name()) : opt.run_dir;
  const fs::path rdv = fs::path(run_dir) / "rendezvous";
  fs::create_directories(rdv);
  LaunchOptions lo;
  if (multi != nullptr) lo = *multi;
  lo.nproc = opt.nproc;
  lo.rendezvous_file = (rdv / fmt::format("store-{}-{}", ::getpid(),
                                          std::chrono::system_clock::now().time_since_epoch().count()))
                           .string();
  lo.argv = {self_executable_path(), "train", "--run_dir", run_dir};
  if (!opt.config_path.empty()) lo.argv.insert(lo.argv.end(), {"--config", opt.config_path});
  if (!opt.metrics_jsonl.empty()) lo.argv.insert(lo.argv.end(), {"--metrics_jsonl", opt.metrics_jsonl});
  if (!opt.db_path.empty()) lo.argv.insert(lo.argv.end(), {"--db", opt.db_path});
  if (opt.resume) lo.argv.push_back("--resume");
  if (opt.resume && opt.resume_step >= 0) {
    lo.argv.insert(lo.argv.end(), {"--resume_step", std::to_string(opt.resume_step)});
  }
  lo.argv.insert(lo.argv.end(), opt.overrides.begin(), opt.overrides.end());
  const int code = run_local_ranks(lo, [](const std::string& s) {
    std::fprintf(stderr, "hylab train: %s\n", s.c_str());
  });
  std::error_code ec;
  fs::remove(lo.rendezvous_file, ec);
  return code;
}

}  // namespace

int run_train(const TrainOptions& opt) {
  try {
    if (opt.nproc < 1) throw ConfigError(fmt::format("--nproc {}: expected >= 1", opt.nproc));
    const RunConfig cfg = load_run_config(opt);
    const bool launched = std::getenv("WORLD_SIZE") != nullptr;
    // A worker's multi-node trial (HYLAB_NUM_NODES > 1): even one local rank goes through the
    // launcher, which gives it its global RANK/WORLD_SIZE and node 0's store address.
    LaunchOptions multi;
    if (!launched && multi_node_from_environment(&multi)) return launch(opt, cfg, &multi);
    if (opt.nproc > 1 && !launched) return launch(opt, cfg);
    return run_rank(opt, cfg);
  } catch (...) {
    return exit_status_of_current_exception("hylab train");
  }
}

int exit_status_of_current_exception(const char* command) {
  try {
    throw;
  } catch (const ConfigError& e) {
    std::fprintf(stderr, "%s: config error: %s\n", command, e.what());
    return proto::TRAINER_EXIT_BAD_CONFIG;
  } catch (const std::exception& e) {
    if (is_out_of_memory(e)) {
      std::fprintf(stderr, "%s: out of memory: %s\n", command, e.what());
      return proto::TRAINER_EXIT_OOM;
    }
    std::fprintf(stderr, "%s: error: %s\n", command, e.what());
    return proto::TRAINER_EXIT_FAILED;
  } catch (...) {
    std::fprintf(stderr, "%s: unknown error\n", command);
    return proto::TRAINER_EXIT_FAILED;
  }
}

}  // namespace hylab::trainer
