// Usage errors: a mistyped flag, config key or subcommand gets "did you mean ...?" and the
// process exits 2 (kExitUsage), the status `hylab train` already used for bad usage (CLI11's
// own codes, 104-109, are not what scripts expect).
#pragma once

#include <CLI/CLI.hpp>

#include <stdexcept>
#include <string>
#include <vector>

namespace hylab::cli {

constexpr int kExitUsage = 2;

// Thrown by callbacks for a bad command line; main() prints "hylab CMD: error: ..." and
// exits kExitUsage.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The valid name nearest to `arg` ("--num_iteration=5", "resuls") among `cmd`'s flags, its
// subcommands, and the config keys when `cmd` takes --key=value extras; "" if none is close.
// The answer is spelled as the user would type it ("--num_iterations", "results").
std::string suggest_for(const CLI::App& cmd, const std::string& arg);

// "hylab sweep submit" for the sweep submit subcommand.
std::string command_path(const CLI::App& cmd);

// Throws UsageError for the first of `rest` (arguments that are neither `cmd`'s options nor
// config keys), with a suggestion. No-op for an empty list.
void reject_unknown_args(const CLI::App& cmd, const std::vector<std::string>& rest);

// The `--name[=value]` arguments among `args` whose name is not a config key (values and
// positionals are left to the command).
std::vector<std::string> unknown_override_args(const std::vector<std::string>& args);

// The innermost subcommand the user selected (`app` itself if none).
const CLI::App& selected_command(const CLI::App& app);

}  // namespace hylab::cli
