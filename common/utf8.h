// UTF-8 at the boundary: text that arrives from outside (a worker's host name, a failure
// reason, a log tail) is made valid UTF-8 before it is stored or put into JSON, where one bad
// byte would make every later `hylab workers` / `sweep show` / `results --format json` fail.
#pragma once

#include <string>

namespace hylab {

// True when `s` is well-formed UTF-8 (no overlong forms, surrogates or code points > U+10FFFF).
bool is_valid_utf8(const std::string& s);

// `s` with each maximal invalid sequence replaced by U+FFFD; valid text comes back unchanged.
std::string to_valid_utf8(const std::string& s);

}  // namespace hylab
