// The config keys as users see them: name, type, default and one line of help, all derived
// from proto/config.proto (the one schema): the help is the field's comment there, carried
// into the binary at build time (protoc --include_source_info; see proto/CMakeLists.txt).
#pragma once

#include <string>
#include <vector>

namespace hylab {

struct ConfigKeyDoc {
  std::string name;           // e.g. "num_iterations"
  std::string type;           // int32, int64, double, bool, string, list of string
  std::string default_value;  // as YAML would write it; "" for an empty list
  std::string help;           // the field's comment in config.proto, on one line
};

// Every RunConfig field, in the order of config.proto.
const std::vector<ConfigKeyDoc>& config_key_docs();

// Every config key name.
std::vector<std::string> config_key_names();

// Text to append to an "unknown config key" message: "; did you mean \"num_iterations\"?"
// when a key is close, then a pointer to `hylab config keys`.
std::string unknown_config_key_hint(const std::string& key);

}  // namespace hylab
