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

std::string checkpoint_dir(const std::string& run_dir, int64_t step) {
  return fmt::format("{}/checkpoints/step_{:06d}", run_dir, step);
}

std::string newest_checkpoint(const std::string& run_dir) {
  const fs::path root = fs::path(run_dir) / "checkpoints";
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return "";
  int64_t best_step = -1;
  std::string best;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("step_", 0) != 0 || !e.is_directory()) continue;
    const std::string digits = name.substr(5);
    if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    if (!fs::exists(e.path() / "meta.json", ec)) continue;
    const int64_t step = std::stoll(digits);
    if (step > best_step) {
      best_step = step;
      best = e.path().string();
    }
  }
  return best;
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
