#include "trainer/run_dir.h"

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "common/check.h"

namespace hylab::trainer {
namespace fs = std::filesystem;

std::string default_run_dir(const std::string& name) {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", &tm);
  return fmt::format("runs/{}-{}", name, stamp);
}

TrainLog::TrainLog(const std::string& path) {
  if (path.empty()) return;
  f_ = std::fopen(path.c_str(), "a");
  if (!f_) HYLAB_FAIL("cannot open log file {}: {}", path, std::strerror(errno));
}

TrainLog::~TrainLog() {
  if (f_) std::fclose(f_);
}

void TrainLog::line(const std::string& text) {
  std::fprintf(stdout, "%s\n", text.c_str());
  std::fflush(stdout);
  if (f_) {
    std::fprintf(f_, "%s\n", text.c_str());
    std::fflush(f_);
  }
}

}  // namespace hylab::trainer
