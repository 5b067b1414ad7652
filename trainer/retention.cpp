#include "trainer/retention.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "common/check.h"

namespace hylab::trainer {
namespace fs = std::filesystem;

std::vector<CheckpointInfo> list_checkpoints(const std::string& run_dir) {
  std::vector<CheckpointInfo> out;
  const fs::path root = fs::path(run_dir) / "checkpoints";
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return out;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("step_", 0) != 0 || !e.is_directory()) continue;
    const std::string digits = name.substr(5);
    if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    const fs::path meta = e.path() / "meta.json";
    if (!fs::exists(meta, ec)) continue;
    CheckpointInfo c;
    c.step = std::stoll(digits);
    c.dir = e.path().string();
    std::ifstream in(meta);
    const auto j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.contains("val_bpb") && j["val_bpb"].is_number()) {
      c.val_bpb = j["val_bpb"].get<double>();
    }
    out.push_back(std::move(c));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.step < b.step; });
  return out;
}

std::vector<int64_t> checkpoints_to_delete(const std::vector<CheckpointInfo>& checkpoints,
                                           int keep_last, int keep_best) {
  if (keep_last < 0) return {};
  std::vector<CheckpointInfo> by_step = checkpoints;
  std::sort(by_step.begin(), by_step.end(),
            [](const auto& a, const auto& b) { return a.step < b.step; });
  std::set<int64_t> keep;
  for (size_t i = 0; i < by_step.size() && static_cast<int>(i) < keep_last; ++i) {
    keep.insert(by_step[by_step.size() - 1 - i].step);
  }
  std::vector<CheckpointInfo> scored;
  for (const auto& c : by_step) {
    if (c.val_bpb >= 0) scored.push_back(c);
  }
  std::stable_sort(scored.begin(), scored.end(), [](const auto& a, const auto& b) {
    return a.val_bpb != b.val_bpb ? a.val_bpb < b.val_bpb : a.step > b.step;
  });
  for (size_t i = 0; i < scored.size() && static_cast<int>(i) < keep_best; ++i)
    keep.insert(scored[i].step);
  std::vector<int64_t> doomed;
  for (const auto& c : by_step) {
    if (!keep.count(c.step)) doomed.push_back(c.step);
  }
  return doomed;
}

std::vector<std::string> prune_checkpoints(const std::string& run_dir, int keep_last,
                                           int keep_best) {
  const std::vector<CheckpointInfo> all = list_checkpoints(run_dir);
  std::vector<std::string> deleted;
  for (int64_t step : checkpoints_to_delete(all, keep_last, keep_best)) {
    const auto it =
        std::find_if(all.begin(), all.end(), [&](const auto& c) { return c.step == step; });
    std::error_code ec;
    fs::remove(fs::path(it->dir) / "meta.json", ec);
    if (!ec) fs::remove_all(it->dir, ec);
    if (ec) HYLAB_FAIL("checkpoint retention: cannot delete {}: {}", it->dir, ec.message());
    deleted.push_back(it->dir);
  }
  return deleted;
}

int64_t directory_bytes(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return 0;
  if (fs::is_regular_file(path, ec)) return static_cast<int64_t>(fs::file_size(path, ec));
  int64_t total = 0;
  for (auto it = fs::recursive_directory_iterator(
           path, fs::directory_options::skip_permission_denied, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) break;
    if (it->is_regular_file(ec) && !it->is_symlink(ec)) {
      const auto size = it->file_size(ec);
      if (!ec) total += static_cast<int64_t>(size);
    }
  }
  return total;
}

}  // namespace hylab::trainer
