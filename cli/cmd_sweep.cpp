// `hylab sweep submit|list|show|cancel|resume`: sweeps through the coordinator.
#include <cstdio>

#include "cli/daemon_flags.h"
#include "common/check.h"
#include "coordinator/submission.h"
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

void submit(const std::string& path, bool dry_run, int priority, bool has_priority,
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
                       {"config", json::parse(config_to_json(t.resolved, false))}});
      }
      std::printf("%s\n", out.dump(2).c_str());
      return;
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
    return;
  }
  proto::ClientRequest req;
  *req.mutable_submit_sweep() = s.request;
  const json reply = client.client()->call_json(req);
  if (fmt_kind == store::Format::kTable) {
    std::printf("submitted sweep %lld (%s): %zu trials (%d duplicates removed)\n",
                static_cast<long long>(reply.at("sweep_id").get<int64_t>()), s.spec.name().c_str(),
                s.expansion.trials.size(), s.expansion.duplicates_removed);
  } else {
    std::printf("%s\n", json{{"sweep_id", reply.at("sweep_id")}}.dump().c_str());
  }
}

void show(const json& sweep, const std::string& format) {
  if (format == "json") {
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
    std::printf("\n");
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
  add_common(sub);
  sub->callback([=] { submit(*path, *dry_run, *priority, prio->count() > 0, *format, *client); });

  auto* list = g->add_subcommand("list", "List sweeps with their trial counts");
  add_common(list);
  list->callback([=] {
    proto::ClientRequest req;
    req.set_list_sweeps(true);
    const json sweeps = client->client()->call_json(req);
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
    show(client->client()->call_json(req), *format);
  });

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
