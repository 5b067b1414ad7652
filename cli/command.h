// How a `hylab` subcommand plugs into the one executable.
//
// Each cli/cmd_*.cpp defines a setup function that adds its subcommand (options and a
// callback) to the root app, and registers it with HYLAB_REGISTER_COMMAND. Callbacks throw
// hylab::Error for expected failures; main() prints the message and exits 1.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace hylab::cli {

struct Command {
  const char* name;
  int order;  // position in `hylab --help`
  std::function<void(CLI::App& root)> setup;
};

std::vector<Command>& commands();

struct Registrar {
  Registrar(const char* name, int order, std::function<void(CLI::App&)> setup) {
    commands().push_back({name, order, std::move(setup)});
  }
};

// "device_batch_size" -> "--device_batch_size,--device-batch-size": every flag is accepted
// with underscores (the seed's spelling) and with hyphens.
std::string flag(const std::string& name);

// Gets or creates a command group such as `bench` or `model`, so several cmd_*.cpp files can
// each add one sub-subcommand (`hylab bench kernels`, `hylab bench train`).
CLI::App* group(CLI::App& root, const std::string& name, const std::string& description);

// Process exit status for a subcommand; set by callbacks that want a non-zero exit
// without an error message (e.g. a trainer that diverged).
int& exit_status();

}  // namespace hylab::cli

#define HYLAB_CLI_CONCAT2(a, b) a##b
#define HYLAB_CLI_CONCAT(a, b) HYLAB_CLI_CONCAT2(a, b)
#define HYLAB_REGISTER_COMMAND(name, order, fn) \
  static ::hylab::cli::Registrar HYLAB_CLI_CONCAT(hylab_cmd_, __LINE__)(name, order, fn)
