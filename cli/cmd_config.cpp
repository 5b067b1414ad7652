// `hylab config show`: the resolved config of a YAML file plus overrides, as JSON.
// `hylab config keys`: every config key with its type, default and help (from config.proto).
#include <algorithm>
#include <cstdio>

#include "cli/command.h"
#include "cli/usage.h"
#include "common/check.h"
#include "common/config_keys.h"
#include "common/run_config.h"
#include "store/results.h"

namespace hylab::cli {
namespace {

void setup(CLI::App& root) {
  auto* cmd = root.add_subcommand("config", "Show the resolved config of a YAML file plus --key=value overrides");
  auto* show = cmd->add_subcommand("show", "Print the resolved config as JSON (exits 1 on an invalid config)");
  cmd->require_subcommand(1);
  auto path = std::make_shared<std::string>();
  show->add_option("file", *path, "Config file (YAML); also accepted as --config FILE");
  show->add_option("--config", *path)->group("");  // same value; listed once, above
  show->allow_extras();
  show->footer(
      "Any config key may follow as --key=value, e.g. --depth=4 --block_pattern='T*2,M*2'.\n"
      "`hylab config keys` lists every key with its default and help.");
  show->callback([show, path] {
    RunConfig cfg = path->empty() ? RunConfig() : load_config_file(*path);
    reject_unknown_args(*show, apply_override_args(&cfg, show->remaining()));
    std::printf("%s\n", config_to_display_json(resolve_config(cfg)).c_str());
  });

  auto format = std::make_shared<std::string>("table");
  auto* keys = cmd->add_subcommand(
      "keys", "List every config key (YAML key, --key=value flag, sweep parameter) with its default and help");
  keys->add_option(flag("format"), *format, "table, csv or json")->capture_default_str();
  keys->callback([format] {
    if (*format == "table") {  // help untruncated, the other columns aligned
      size_t w_key = 3, w_type = 4, w_default = 7;
      for (const auto& k : config_key_docs()) {
        w_key = std::max(w_key, k.name.size());
        w_type = std::max(w_type, k.type.size());
        w_default = std::max(w_default, k.default_value.size());
      }
      std::printf("%-*s  %-*s  %-*s  %s\n", static_cast<int>(w_key), "key", static_cast<int>(w_type), "type",
                  static_cast<int>(w_default), "default", "help");
      for (const auto& k : config_key_docs()) {
        std::printf("%-*s  %-*s  %-*s  %s\n", static_cast<int>(w_key), k.name.c_str(), static_cast<int>(w_type),
                    k.type.c_str(), static_cast<int>(w_default), k.default_value.c_str(), k.help.c_str());
      }
      return;
    }
    store::Table t;
    t.columns = {"key", "type", "default", "help"};
    for (const auto& k : config_key_docs()) t.rows.push_back({k.name, k.type, k.default_value, k.help});
    std::fputs(store::render(t, store::parse_format(*format)).c_str(), stdout);
  });
}

HYLAB_REGISTER_COMMAND("config", 90, setup);

}  // namespace
}  // namespace hylab::cli
