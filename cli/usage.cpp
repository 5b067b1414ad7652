#include "cli/usage.h"

#include <spdlog/fmt/fmt.h>

#include "common/config_keys.h"
#include "common/run_config.h"
#include "common/suggest.h"

namespace hylab::cli {

std::string command_path(const CLI::App& cmd) {
  std::string path = cmd.get_name();
  for (const CLI::App* p = cmd.get_parent(); p != nullptr; p = p->get_parent()) {
    path = (p->get_parent() == nullptr ? std::string("hylab") : p->get_name()) + " " + path;
  }
  return cmd.get_parent() == nullptr ? "hylab" : path;
}

std::string suggest_for(const CLI::App& cmd, const std::string& arg) {
  std::string word = arg;
  const size_t eq = word.find('=');
  if (eq != std::string::npos) word = word.substr(0, eq);
  const bool dashed = word.rfind("-", 0) == 0;
  std::vector<std::string> names;
  if (dashed) {
    for (const CLI::Option* o : cmd.get_options()) {
      for (const auto& l : o->get_lnames()) names.push_back("--" + l);
    }
    if (cmd.get_allow_extras()) {
      for (const auto& k : config_key_names()) names.push_back("--" + k);
    }
  } else {
    for (const CLI::App* sub : cmd.get_subcommands([](const CLI::App*) { return true; })) {
      names.push_back(sub->get_name());
    }
  }
  return nearest_name(word, names);
}

void reject_unknown_args(const CLI::App& cmd, const std::vector<std::string>& rest) {
  if (rest.empty()) return;
  const std::string near = suggest_for(cmd, rest.front());
  throw UsageError(fmt::format("unknown argument \"{}\": not an option of `{}`{}{}", rest.front(),
                               command_path(cmd), cmd.get_allow_extras() ? " or a config key" : "",
                               near.empty() ? "" : fmt::format("; did you mean {}?", near)));
}

std::vector<std::string> unknown_override_args(const std::vector<std::string>& args) {
  std::vector<std::string> out;
  for (const auto& a : args) {
    if (a.rfind("--", 0) != 0) continue;
    const std::string key =
        a.substr(2, a.find('=') == std::string::npos ? std::string::npos : a.find('=') - 2);
    if (!is_config_key(key)) out.push_back(a);
  }
  return out;
}

const CLI::App& selected_command(const CLI::App& app) {
  const CLI::App* cur = &app;
  for (;;) {
    const auto subs = cur->get_subcommands();
    if (subs.empty()) return *cur;
    cur = subs.back();
  }
}

}  // namespace hylab::cli
