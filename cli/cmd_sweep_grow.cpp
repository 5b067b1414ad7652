// `hylab sweep extend|suggest`: growing sweeps (sweep/search.h). extend adds trials to
// a random sweep or raises a tpe sweep's budget; suggest prints the next proposals without
// adding them.
#include <cstdio>
#include <memory>

#include "cli/daemon_flags.h"
#include "common/check.h"
#include "sweep/submission.h"
#include "store/results.h"

namespace hylab::cli {
namespace {

using nlohmann::json;

void setup(CLI::App& root) {
  auto* g = group(root, "sweep",
                  "Submit, list, show, cancel and resume sweeps (through the coordinator)");
  auto client = std::make_shared<ClientFlags>();
  auto format = std::make_shared<std::string>("table");
  auto id = std::make_shared<int64_t>(0);
  auto count = std::make_shared<int>(1);

  auto* ext = g->add_subcommand(
      "extend",
      "Add trials to a sweep: method tpe raises its budget (the coordinator proposes "
      "them as slots free up), method random draws them now; a completed sweep runs again");
  ext->add_option("sweep_id", *id, "Sweep id")->required();
  auto spec = std::make_shared<std::string>();
  ext->add_option(flag("count"), *count, "How many trials to add")
      ->required()
      ->check(CLI::Range(1, 100000));
  ext->add_option(
      flag("spec"), *spec,
      "A sweep file (any method; the way to grow a grid): add its trials the sweep does "
      "not have yet, at most --count, in the file's order");
  client->add_to(ext);
  ext->add_option(flag("format"), *format, "table or json")->capture_default_str();
  ext->callback([=] {
    proto::ClientRequest req;
    req.mutable_extend_sweep()->set_sweep_id(*id);
    req.mutable_extend_sweep()->set_count(*count);
    if (!spec->empty()) {
      const coordinator::Submission s = coordinator::prepare_submission(*spec);
      if (s.spec.method() == "tpe") {
        throw ConfigError(
            fmt::format("--spec {}: method tpe has no fixed trials; extend a tpe sweep "
                        "without --spec (its budget grows)",
                        *spec));
      }
      *req.mutable_extend_sweep()->mutable_trials() = s.request.trials();
    }
    const json r = client->client()->call_json(req);
    if (*format == "json") {
      std::printf("%s\n", r.dump().c_str());
      return;
    }
    std::printf("sweep %lld (%s): %d trials added, %d now\n", static_cast<long long>(*id),
                r["method"].get<std::string>().c_str(), r["added"].get<int>(),
                r["count"].get<int>());
  });

  auto* sug = g->add_subcommand(
      "suggest",
      "Print the next trials a random or tpe sweep would propose now, without adding them");
  sug->add_option("sweep_id", *id, "Sweep id")->required();
  sug->add_option(flag("count"), *count, "How many proposals")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  client->add_to(sug);
  sug->add_option(flag("format"), *format, "table, csv or json")->capture_default_str();
  sug->callback([=] {
    proto::ClientRequest req;
    req.mutable_suggest_sweep()->set_sweep_id(*id);
    req.mutable_suggest_sweep()->set_count(*count);
    const json r = client->client()->call_json(req);
    if (*format == "json") {
      std::printf("%s\n", r.dump(2).c_str());
      return;
    }
    store::Table t;
    t.columns = {"trial_index", "params", "config_hash"};
    for (const auto& p : r["proposals"]) {
      std::string params;
      for (auto it = p["params"].begin(); it != p["params"].end(); ++it) {
        params += (params.empty() ? "" : " ") + it.key() + "=" + it.value().get<std::string>();
      }
      t.rows.push_back({p["trial_index"], params, p["config_hash"]});
    }
    std::fputs(store::render(t, store::parse_format(*format)).c_str(), stdout);
    if (r["exhausted"].get<bool>())
      std::printf("(the space is used up: fewer proposals than asked)\n");
  });
}

HYLAB_REGISTER_COMMAND("sweep extend", 53, setup);

}  // namespace
}  // namespace hylab::cli
