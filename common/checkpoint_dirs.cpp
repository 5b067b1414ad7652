#include "common/checkpoint_dirs.h"

#include <filesystem>

#include <fmt/format.h>

namespace hylab {
namespace fs = std::filesystem;

std::string checkpoint_dir(const std::string& run_dir, int64_t step) {
  return fmt::format("{}/checkpoints/step_{:06d}", run_dir, step);
}

CheckpointRef newest_checkpoint(const std::string& run_dir) {
  const fs::path root = fs::path(run_dir) / "checkpoints";
  std::error_code ec;
  CheckpointRef best;
  if (!fs::is_directory(root, ec)) return best;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("step_", 0) != 0 || !e.is_directory(ec)) continue;
    const std::string digits = name.substr(5);
    if (digits.empty() || digits.size() > 18 || digits.find_first_not_of("0123456789") != std::string::npos) {
      continue;
    }
    if (!fs::exists(e.path() / "meta.json", ec)) continue;
    const int64_t step = std::stoll(digits);
    if (step > best.step) best = {e.path().string(), step};
  }
  return best;
}

}  // namespace hylab
