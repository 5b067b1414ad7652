// Rate-limited logging for what peers can provoke (garbage, refused messages): at most
// `burst` lines per `window_ms` per kind; the rest are counted and reported in one line when
// the next window opens. So a flood of bad input cannot grow the log without bound.
// Not thread-safe: one owner (the coordinator's loop), or a lock around it (proto_log.cpp).
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include <spdlog/spdlog.h>

namespace hylab {

class LogLimit {
 public:
  explicit LogLimit(int burst = 10, int64_t window_ms = 10'000) : burst_(burst), window_ms_(window_ms) {}

  // Logs `line` at warning level unless this kind has used its burst in the current window.
  void warn(const std::string& kind, int64_t now_ms, const std::string& line) {
    Bucket& b = buckets_[kind];
    if (now_ms - b.window_start >= window_ms_) {
      if (b.suppressed > 0) {
        spdlog::warn("{}: {} more like this in the last {} ms were not logged", kind, b.suppressed,
                     now_ms - b.window_start);
      }
      b = Bucket{now_ms, 0, 0};
    }
    if (b.logged < burst_) {
      ++b.logged;
      spdlog::warn("{}", line);
    } else {
      ++b.suppressed;
      ++total_suppressed_;
    }
  }
  int64_t total_suppressed() const { return total_suppressed_; }

 private:
  struct Bucket {
    int64_t window_start = INT64_MIN / 2;
    int logged = 0;
    int64_t suppressed = 0;
  };
  int burst_;
  int64_t window_ms_;
  std::map<std::string, Bucket> buckets_;  // one per kind: a handful, not per peer
  int64_t total_suppressed_ = 0;
};

}  // namespace hylab
