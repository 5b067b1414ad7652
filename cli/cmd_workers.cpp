// `hylab workers [--drain WORKER_ID]`: the coordinator's workers, live.
#include <algorithm>
#include <cstdio>

#include "cli/daemon_flags.h"
#include "common/states.h"
#include "store/results.h"

namespace hylab::cli {
namespace {

using nlohmann::json;

void setup(CLI::App& root) {
  auto* cmd = root.add_subcommand("workers", "List the coordinator's workers (or drain one)");
  auto client = std::make_shared<ClientFlags>();
  auto format = std::make_shared<std::string>("table");
  auto drain = std::make_shared<std::string>();
  client->add_to(cmd);
  cmd->add_option(flag("format"), *format, "table, csv or json")->capture_default_str();
  cmd->add_option(flag("drain"), *drain, "Drain this worker: it takes no new trials and exits once idle");
  cmd->callback([=] {
    const store::Format f = store::parse_format(*format);
    auto c = client->client();
    if (!drain->empty()) {
      proto::ClientRequest req;
      req.set_drain_worker(*drain);
      const json r = c->call_json(req);
      std::printf("%s\n", f == store::Format::kJson ? r.dump().c_str() : ("worker " + *drain + " draining").c_str());
      return;
    }
    proto::ClientRequest req;
    req.set_list_workers(true);
    json workers = c->call_all_pages(req);  // pages come in worker_id order: alive ones first
    const std::string alive = to_string(proto::WORKER_STATE_ALIVE);
    std::stable_sort(workers.begin(), workers.end(), [&](const json& a, const json& b) {
      return (a.value("state", "") == alive) > (b.value("state", "") == alive);
    });
    if (f == store::Format::kJson) {
      std::printf("%s\n", workers.dump(2).c_str());
      return;
    }
    store::Table t;
    t.columns = {"worker_id", "host", "state", "gpus", "slots", "free_slots", "running", "heard_ms_ago"};
    for (const auto& w : workers) {
      std::string running;
      for (const auto& r : w.value("running", json::array())) {
        running += (running.empty() ? "" : ",") + std::to_string(r["trial_id"].get<int64_t>());
      }
      t.rows.push_back({w["worker_id"], w["host"], w["state"], w["gpus"], w.value("slots", json()),
                        w.value("free_slots", json()), running, w.value("heard_ms_ago", json())});
    }
    std::fputs(store::render(t, f).c_str(), stdout);
  });
}

HYLAB_REGISTER_COMMAND("workers", 53, setup);

}  // namespace
}  // namespace hylab::cli
