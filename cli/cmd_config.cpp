// `hylab config show`: the resolved config of a YAML file plus overrides, as JSON.
#include <cstdio>

#include "cli/command.h"
#include "common/check.h"
#include "common/run_config.h"

namespace hylab::cli {
namespace {

void setup(CLI::App& root) {
  auto* cmd = root.add_subcommand("config", "Show the resolved config of a YAML file plus --key=value overrides");
  auto* show = cmd->add_subcommand("show", "Print the resolved config as JSON (exits 1 on an invalid config)");
  cmd->require_subcommand(1);
  auto path = std::make_shared<std::string>();
  show->add_option("--config,config", *path, "Config file (YAML)");
  show->allow_extras();
  show->footer("Any config key may follow as --key=value, e.g. --depth=4 --block_pattern='T*2,M*2'.");
  show->callback([show, path] {
    RunConfig cfg = path->empty() ? RunConfig() : load_config_file(*path);
    auto rest = apply_override_args(&cfg, show->remaining());
    if (!rest.empty()) throw hylab::ConfigError("unknown argument: " + rest.front());
    std::printf("%s\n", config_to_json(resolve_config(cfg)).c_str());
  });
}

HYLAB_REGISTER_COMMAND("config", 90, setup);

}  // namespace
}  // namespace hylab::cli
