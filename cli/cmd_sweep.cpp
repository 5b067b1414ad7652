// `hylab sweep submit|list|show|cancel|resume`: sweeps through the coordinator.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "cli/daemon_flags.h"
#include "cli/sweep_progress.h"
#include "common/check.h"
#include "sweep/submission.h"
#include "store/results.h"

namespace hylab::cli {
namespace {

using nlohmann::json;

std::string params_text(const json& params) {
  std::string out;
  if (!params.is_object()) return out;
  for (auto it = params.begin(); it != params.end(); ++it) {
    out += (out.empty() ? "" : " ") + it.key() + "=" +
           (it.value().is_string() ? it.value().get<std::string>() : it.value().dump());
  }
  return out;
}

void print(const store::Table& t, const std::string& format) {
  std::fputs(store::render(t, store::parse_format(format)).c_str(), stdout);
}

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Polls the sweep every poll_s seconds until its state is final, with one progress line on
// stderr (rewritten in place on a terminal, a new line per change otherwise). Returns the
// sweep's exit status (sweep_progress.h). A coordinator that stops answering for longer than
// 10 polls (at least a minute) is an error.
int wait_for_sweep(int64_t sweep_id, double poll_s, const ClientFlags& client) {
  const bool tty = ::isatty(STDERR_FILENO) == 1;
  std::string last_line;
  auto failing_since = std::chrono::steady_clock::time_point{};
  const double give_up_s = std::max(60.0, 10 * poll_s);
  for (;;) {
    nlohmann::json sweep;
    try {
      proto::ClientRequest req;
      req.set_show_sweep(sweep_id);
      req.set_page_size(1);  // the progress line needs the counts, not the trials
      sweep = client.client()->call_json(req);
      failing_since = {};
    } catch (const hylab::Error& e) {
      // An answer that is an error (no such sweep) is final; silence may be a restart.
      const bool answered = std::string(e.what()).rfind("coordinator: ", 0) == 0;
      const auto now = std::chrono::steady_clock::now();
      if (failing_since == std::chrono::steady_clock::time_point{}) failing_since = now;
      if (answered || std::chrono::duration<double>(now - failing_since).count() > give_up_s) {
        if (tty) std::fputc('\n', stderr);
        std::fprintf(stderr, "hylab sweep: stopped waiting for sweep %lld: %s\n",
                     static_cast<long long>(sweep_id), e.what());
        return kSweepError;
      }
      std::this_thread::sleep_for(std::chrono::duration<double>(poll_s));
      continue;
    }
    const SweepProgress p = sweep_progress(sweep, unix_now());
    const std::string line = progress_line(sweep, p);
    if (tty) {
      std::fprintf(stderr, "\r%s\033[K", line.c_str());
    } else if (line != last_line) {
      std::fprintf(stderr, "%s\n", line.c_str());
    }
    std::fflush(stderr);
    last_line = line;
    if (p.finished) {
      if (tty) std::fputc('\n', stderr);
      return sweep_exit_status(p);
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(poll_s));
  }
}

// Returns the new sweep's id (0 for --dry_run).
int64_t submit(const std::string& path, bool dry_run, int priority, bool has_priority,
               const std::string& format, const ClientFlags& client) {
  const store::Format fmt_kind = store::parse_format(format);
  coordinator::Submission s = coordinator::prepare_submission(path);
  if (has_priority) s.request.set_priority(priority);
  if (dry_run) {
    if (fmt_kind == store::Format::kJson) {
      json out = json::array();
      for (const auto& t : s.expansion.trials) {
        json params = json::object();
        for (const auto& [k, v] : t.params) params[k] = v;
        out.push_back({{"trial_index", t.trial_index}, {"params", params}, {"config_hash", t.config_hash},
                       {"config", json::parse(config_to_display_json(t.resolved))}});
      }
      std::printf("%s\n", out.dump(2).c_str());
      return 0;
    }
    store::Table t;
    t.columns = {"trial_index", "params", "block_pattern", "n_layer", "n_embd", "mamba_d_state",
                 "mamba_expand", "seed", "config_hash"};
    for (const auto& p : s.expansion.trials) {
      std::string params;
      for (const auto& [k, v] : p.params) params += (params.empty() ? "" : " ") + k + "=" + v;
      const GPTConfig g = gpt_config(p.resolved);
      t.rows.push_back({p.trial_index, params, compact_block_pattern(g.block_pattern), g.n_layer,
                        g.n_embd, g.mamba_d_state, g.mamba_expand, p.resolved.seed(), p.config_hash});
    }
    print(t, format);
    if (fmt_kind == store::Format::kTable) {
      const std::string seeds = s.spec.seeds_size() > 0
                                    ? fmt::format(", each configuration over {} seeds", s.spec.seeds_size())
                                    : "";
      std::printf("sweep %s: %zu trials (%d duplicates removed%s), %d slots each; not submitted (--dry_run)\n",
                  s.spec.name().c_str(), s.expansion.trials.size(), s.expansion.duplicates_removed,
                  seeds.c_str(), s.spec.resources().gpus_per_trial());
    }
    return 0;
  }
  proto::ClientRequest req;
  *req.mutable_submit_sweep() = s.request;
  const json reply = client.client()->call_json(req);
  if (fmt_kind == store::Format::kTable && s.spec.method() == "tpe") {  // docs/SEARCH.md
    std::printf("submitted sweep %lld (%s): method tpe, %d trials proposed by the coordinator as slots free up\n",
                static_cast<long long>(reply.at("sweep_id").get<int64_t>()), s.spec.name().c_str(), s.spec.count());
  } else if (fmt_kind == store::Format::kTable) {
    std::printf("submitted sweep %lld (%s): %zu trials (%d duplicates removed)\n",
                static_cast<long long>(reply.at("sweep_id").get<int64_t>()), s.spec.name().c_str(),
                s.expansion.trials.size(), s.expansion.duplicates_removed);
  } else {
    std::printf("%s\n", json{{"sweep_id", reply.at("sweep_id")}}.dump().c_str());
  }
  std::fflush(stdout);
  return reply.at("sweep_id").get<int64_t>();
}

void show(json sweep, const std::string& format) {
  const SweepProgress progress = sweep_progress(sweep, unix_now());
  if (format == "json") {
    sweep["percent_done"] = progress.percent;
    sweep["eta_s"] = progress.eta_s < 0 ? json(nullptr) : json(progress.eta_s);
    std::printf("%s\n", sweep.dump(2).c_str());
    return;
  }
  store::Table t;
  t.columns = {"trial_id", "trial_index", "state", "attempt", "worker_id", "last_step",
               sweep["metric"]["name"].get<std::string>(), "params", "reason"};
  for (const auto& tr : sweep["trials"]) {
    t.rows.push_back({tr["trial_id"], tr["trial_index"], tr["state"], tr["attempt"], tr["worker_id"],
                      tr["last_step"], tr["metric"], params_text(tr["params"]), tr["reason"]});
  }
  if (format == "table") {
    std::printf("sweep %lld (%s): %s", static_cast<long long>(sweep["sweep_id"].get<int64_t>()),
                sweep["name"].get<std::string>().c_str(), sweep["state"].get<std::string>().c_str());
    for (auto it = sweep["counts"].begin(); it != sweep["counts"].end(); ++it) {
      std::printf(", %lld %s", static_cast<long long>(it.value().get<int64_t>()), it.key().c_str());
    }
    std::printf("\n%s\n", progress_line(sweep, progress).c_str());
  }
  print(t, format);
}

void setup(CLI::App& root) {
  auto* g = group(root, "sweep", "Submit, list, show, cancel and resume sweeps (through the coordinator)");
  auto client = std::make_shared<ClientFlags>();
  auto format = std::make_shared<std::string>("table");
  auto add_common = [&](CLI::App* cmd) {
    client->add_to(cmd);
    cmd->add_option(flag("format"), *format, "table, csv or json")->capture_default_str();
  };

  auto* sub = g->add_subcommand("submit", "Expand a sweep file and submit it (prints its sweep_id)");
  auto path = std::make_shared<std::string>();
  auto dry_run = std::make_shared<bool>(false);
  auto priority = std::make_shared<int>(0);
  sub->add_option("file", *path, "Sweep spec (YAML), e.g. sweeps/quickstart.yaml")->required();
  sub->add_flag(flag("dry_run"), *dry_run, "Print the expanded trials; submit nothing");
  auto* prio = sub->add_option(flag("priority"), *priority, "Override the spec's priority (higher runs first)");
  auto wait = std::make_shared<bool>(false);
  auto poll_s = std::make_shared<double>(5.0);
  sub->add_flag("--wait,--follow", *wait,
                "Wait until the sweep finishes, with a progress line on stderr; exit with its outcome");
  auto add_poll = [&](CLI::App* cmd) {
    cmd->add_option(flag("poll_s"), *poll_s, "Seconds between progress checks while waiting")
        ->capture_default_str()
        ->check(CLI::Range(0.05, 3600.0));
  };
  add_poll(sub);
  add_common(sub);
  const char* wait_footer =
      "Exit status with --wait: 0 every trial succeeded (or was early-stopped), 3 the sweep finished "
      "with failed trials, 4 it was cancelled, 1 error (an invalid sweep file, a coordinator that "
      "stopped answering), 2 bad command line. Ctrl-C stops waiting, not the sweep.";
  sub->footer(wait_footer);
  sub->callback([=] {
    const int64_t id = submit(*path, *dry_run, *priority, prio->count() > 0, *format, *client);
    if (*wait && id > 0) exit_status() = wait_for_sweep(id, *poll_s, *client);
  });

  auto* list = g->add_subcommand("list", "List sweeps with their trial counts");
  add_common(list);
  list->callback([=] {
    proto::ClientRequest req;
    req.set_list_sweeps(true);
    const json sweeps = client->client()->call_all_pages(req);
    if (*format == "json") {
      std::printf("%s\n", sweeps.dump(2).c_str());
      return;
    }
    store::Table t;
    t.columns = {"sweep_id", "name", "state", "priority", "trials", "pending", "running",
                 "succeeded", "failed", "stopped"};
    for (const auto& s : sweeps) {
      std::vector<json> row;
      for (const auto& c : t.columns) row.push_back(s[c]);
      t.rows.push_back(row);
    }
    print(t, *format);
  });

  auto id = std::make_shared<int64_t>(0);
  auto* sh = g->add_subcommand("show", "Show one sweep's trials");
  sh->add_option("sweep_id", *id, "Sweep id")->required();
  add_common(sh);
  sh->callback([=] {
    proto::ClientRequest req;
    req.set_show_sweep(*id);
    show(client->client()->call_all_pages(req, "trials"), *format);
  });

  auto* wt = g->add_subcommand("wait", "Wait for a submitted sweep to finish (progress on stderr); exit with its outcome");
  wt->add_option("sweep_id", *id, "Sweep id")->required();
  add_poll(wt);
  client->add_to(wt);
  wt->footer(wait_footer);
  wt->callback([=] { exit_status() = wait_for_sweep(*id, *poll_s, *client); });

  for (const char* action : {"cancel", "resume"}) {
    const bool cancel = std::string(action) == "cancel";
    auto* c = g->add_subcommand(action, cancel ? "Cancel a sweep: stop its running trials, drop its pending ones"
                                               : "Run a sweep's failed and cancelled trials again");
    c->add_option("sweep_id", *id, "Sweep id")->required();
    add_common(c);
    c->callback([=] {
      proto::ClientRequest req;
      if (cancel) req.set_cancel_sweep(*id);
      else req.set_resume_sweep(*id);
      const json r = client->client()->call_json(req);
      if (*format == "json") std::printf("%s\n", r.dump().c_str());
      else if (cancel) std::printf("sweep %lld cancelled (%lld trials)\n", static_cast<long long>(*id),
                                   static_cast<long long>(r["trials_cancelled"].get<int64_t>()));
      else std::printf("sweep %lld resumed (%lld trials pending again)\n", static_cast<long long>(*id),
                       static_cast<long long>(r["trials_resumed"].get<int64_t>()));
    });
  }
}

HYLAB_REGISTER_COMMAND("sweep", 52, setup);

}  // namespace
}  // namespace hylab::cli
