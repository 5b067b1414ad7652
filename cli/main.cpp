// hylab: train and compare hybrid Transformer/Mamba language models.
// Each subcommand lives in cli/cmd_<name>.cpp; this file only dispatches.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <exception>

#include "cli/command.h"
#include "cli/usage.h"
#include "common/check.h"
#include "common/crash_report.h"
#include "common/proto_log.h"

namespace hylab::cli {

std::vector<Command>& commands() {
  static std::vector<Command> all;
  return all;
}

std::string flag(const std::string& name) {
  std::string hyphen = name;
  std::replace(hyphen.begin(), hyphen.end(), '_', '-');
  if (hyphen == name) return "--" + name;
  return "--" + name + ",--" + hyphen;
}

CLI::App* group(CLI::App& root, const std::string& name, const std::string& description) {
  for (CLI::App* sub : root.get_subcommands([](CLI::App*) { return true; })) {
    if (sub->get_name() == name) return sub;
  }
  CLI::App* g = root.add_subcommand(name, description);
  g->require_subcommand(1);
  return g;
}

int& exit_status() {
  static int status = 0;
  return status;
}

}  // namespace hylab::cli

int main(int argc, char** argv) {
  hylab::install_crash_report("hylab");  // a crash says where (common/crash_report.h)
  hylab::limit_protobuf_logs();  // a peer's garbage must not flood the daemons' logs
  CLI::App app{
      "hylab: train and compare hybrid Transformer/Mamba language models.\n"
      "Run `hylab COMMAND --help` for a command's options."};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show the options of every command");
  auto& cmds = hylab::cli::commands();
  std::sort(cmds.begin(), cmds.end(),
            [](const auto& a, const auto& b) { return a.order < b.order; });
  for (auto& c : cmds) c.setup(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --help-all
    // A usage error: say which command, what was probably meant, and exit 2 (not CLI11's
    // 104-109). Unknown words stay in the command's remaining() list.
    const CLI::App& cmd = hylab::cli::selected_command(app);
    const std::vector<std::string> extras = cmd.remaining();
    std::string what = e.what(), hint;
    if (!extras.empty()) {
      const std::string near = hylab::cli::suggest_for(cmd, extras.front());
      if (!near.empty()) hint = "; did you mean " + near + "?";
      if (extras.front().rfind("-", 0) != 0 && cmd.get_require_subcommand_min() > 0) {
        what = "unknown command \"" + extras.front() + "\"";  // not "A subcommand is required"
      }
    }
    const std::string path = hylab::cli::command_path(cmd);
    std::fprintf(stderr, "%s: error: %s%s\nRun `%s --help` for its options.\n", path.c_str(), what.c_str(),
                 hint.c_str(), path.c_str());
    return hylab::cli::kExitUsage;
  } catch (const hylab::cli::UsageError& e) {
    const CLI::App& cmd = hylab::cli::selected_command(app);
    std::fprintf(stderr, "%s: error: %s\nRun `%s --help` for its options.\n",
                 hylab::cli::command_path(cmd).c_str(), e.what(), hylab::cli::command_path(cmd).c_str());
    return hylab::cli::kExitUsage;
  } catch (const hylab::Error& e) {
    std::fprintf(stderr, "hylab: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hylab: unexpected error: %s\n", e.what());
    return 1;
  }
  return hylab::cli::exit_status();
}
