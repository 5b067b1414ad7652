// Fuzz target: a run config as YAML, as JSON, and as `--key=value` overrides.
//
// The same bytes go three ways: config_from_yaml (a config file), config_from_json (a
// stored or relayed config), and, one argument per line, apply_override_args (the command
// line) on an empty config. Each config that parses is resolved (every derived field and
// its validation), written back to JSON and hashed, as `hylab train` and a sweep do.
// Seeds: fuzz/corpus/config/ (configs/*.yaml, JSON configs, override lines).
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "common/run_config.h"
#include "fuzz/fuzz_util.h"

namespace {

void resolve_and_print(const hylab::RunConfig& cfg) {
  const hylab::RunConfig r = hylab::resolve_config(cfg);
  (void)hylab::config_hash(r);
  (void)hylab::config_to_display_json(r);
  (void)hylab::gpt_config(r);
  (void)hylab::resolve_config(hylab::config_from_json(hylab::config_to_json(r, false)));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  using hylab::fuzz::guarded;
  guarded([&] { resolve_and_print(hylab::config_from_yaml(text, "<fuzz>")); });
  guarded([&] { resolve_and_print(hylab::config_from_json(text)); });
  guarded([&] {
    std::vector<std::string> args;
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line) && args.size() < 64;) args.push_back(line);
    hylab::RunConfig cfg;
    (void)hylab::apply_override_args(&cfg, args);
    resolve_and_print(cfg);
  });
  return 0;
}
