#include "common/proto_log.h"

#include <google/protobuf/stubs/logging.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <mutex>
#include <string>

#include "common/log_limit.h"

namespace hylab {
namespace {

std::mutex g_mu;
LogLimit* g_limit = nullptr;  // under g_mu; never freed (libprotobuf may log at exit)

void handler(google::protobuf::LogLevel level, const char* filename, int line, const std::string& message) {
  if (level == google::protobuf::LOGLEVEL_FATAL) {
    spdlog::critical("libprotobuf {}:{}: {}", filename, line, message);
    return;
  }
  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::steady_clock::now().time_since_epoch())
                             .count();
  // One kind per source line: every invalid-UTF-8 complaint comes from the same one.
  const std::string kind = fmt::format("libprotobuf {}:{}", filename, line);
  std::lock_guard<std::mutex> lock(g_mu);
  g_limit->warn(kind, now_ms, fmt::format("{}: {}", kind, message));
}

}  // namespace

void limit_protobuf_logs() {
  static std::once_flag once;
  std::call_once(once, [] {
    {
      std::lock_guard<std::mutex> lock(g_mu);
      g_limit = new LogLimit(10, 10'000);
    }
    google::protobuf::SetLogHandler(handler);
  });
}

int64_t protobuf_log_lines_suppressed() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_limit ? g_limit->total_suppressed() : 0;
}

}  // namespace hylab
