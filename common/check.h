// Errors and checks shared by every folder.
//
// hylab::Error is the one exception type for expected failures (bad config, bad input
// file, bad message). Its what() is a complete sentence for the user: what was wrong,
// where, and what is allowed. HYLAB_CHECK adds file:line for programming errors.
#pragma once

#include <spdlog/fmt/fmt.h>

#include <stdexcept>
#include <string>

namespace hylab {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// A config value failed validation; the message names the field.
class ConfigError : public Error {
 public:
  explicit ConfigError(const std::string& what) : Error(what) {}
};

}  // namespace hylab

// HYLAB_CHECK(cond, "format {}", args...): throws hylab::Error("file:line: message").
#define HYLAB_CHECK(cond, ...)                                                        \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      throw ::hylab::Error(fmt::format("{}:{}: {}", __FILE__, __LINE__,               \
                                       fmt::format(__VA_ARGS__)));                    \
    }                                                                                 \
  } while (0)

// HYLAB_FAIL("format {}", args...): throws hylab::Error with the message as given.
#define HYLAB_FAIL(...) throw ::hylab::Error(fmt::format(__VA_ARGS__))
