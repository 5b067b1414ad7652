// Checkpoint retention: the pure keep/delete decision, and pruning real folders.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "trainer/retention.h"
#include "trainer/run_dir.h"

namespace hylab::trainer {
namespace {

namespace fs = std::filesystem;

std::vector<CheckpointInfo> ckpts(std::initializer_list<std::pair<int64_t, double>> v) {
  std::vector<CheckpointInfo> out;
  for (auto [step, bpb] : v) out.push_back({step, bpb, ""});
  return out;
}

TEST(Retention, KeepsTheNewestAndTheBest) {
  // val_bpb falls, then rises (overfitting): the best is step 4, the newest step 8.
  const auto c = ckpts({{2, 3.0}, {4, 2.0}, {6, 2.5}, {8, 2.7}});
  EXPECT_EQ(checkpoints_to_delete(c, 1, 1), (std::vector<int64_t>{2, 6}));
  EXPECT_EQ(checkpoints_to_delete(c, 1, 0), (std::vector<int64_t>{2, 4, 6}));
  EXPECT_EQ(checkpoints_to_delete(c, 2, 0), (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(checkpoints_to_delete(c, 1, 2), (std::vector<int64_t>{2}));  // best two: 4 and 6
  EXPECT_EQ(checkpoints_to_delete(c, -1, 0), (std::vector<int64_t>{}));  // keep everything
  EXPECT_EQ(checkpoints_to_delete(c, 10, 10), (std::vector<int64_t>{}));
  // The best that is also the newest takes no second place.
  EXPECT_EQ(checkpoints_to_delete(ckpts({{2, 3.0}, {4, 2.0}}), 1, 1), (std::vector<int64_t>{2}));
  // Ties keep the newer; checkpoints without a val_bpb are never "best".
  EXPECT_EQ(checkpoints_to_delete(ckpts({{2, 2.0}, {4, 2.0}, {6, -1}}), 1, 1),
            (std::vector<int64_t>{2}));
  EXPECT_EQ(checkpoints_to_delete(ckpts({{2, -1}, {4, -1}}), 1, 1), (std::vector<int64_t>{2}));
  EXPECT_TRUE(checkpoints_to_delete({}, 1, 1).empty());
}

TEST(Retention, PrunesFoldersAndTheNewestStillResolves) {
  const fs::path run = fs::temp_directory_path() / ("hylab_retention_" + std::to_string(getpid()));
  fs::remove_all(run);
  for (auto [step, bpb] : {std::pair<int64_t, double>{1, 3.0}, {2, 1.5}, {3, 2.0}, {4, 2.5}}) {
    const fs::path d = checkpoint_dir(run.string(), step);
    fs::create_directories(d);
    std::ofstream(d / "meta.json") << "{\"step\": " << step << ", \"val_bpb\": " << bpb << "}";
    std::ofstream(d / "model.pt") << std::string(1000, 'x');
  }
  fs::create_directories(run / "checkpoints" / "step_000009.tmp");  // not a checkpoint: left alone
  int64_t meta_bytes = 0;
  for (int s = 1; s <= 4; ++s) {
    meta_bytes += static_cast<int64_t>(
        fs::file_size(fs::path(checkpoint_dir(run.string(), s)) / "meta.json"));
  }
  EXPECT_EQ(directory_bytes(run.string()), 4 * 1000 + meta_bytes);
  const auto listed = list_checkpoints(run.string());
  ASSERT_EQ(listed.size(), 4u);
  EXPECT_DOUBLE_EQ(listed[1].val_bpb, 1.5);
  const auto deleted = prune_checkpoints(run.string(), 1, 1);
  EXPECT_EQ(deleted.size(), 2u);
  EXPECT_FALSE(fs::exists(checkpoint_dir(run.string(), 1)));
  EXPECT_TRUE(fs::exists(checkpoint_dir(run.string(), 2)));  // best
  EXPECT_FALSE(fs::exists(checkpoint_dir(run.string(), 3)));
  EXPECT_TRUE(fs::exists(checkpoint_dir(run.string(), 4)));  // newest
  EXPECT_TRUE(fs::exists(run / "checkpoints" / "step_000009.tmp"));
  EXPECT_EQ(newest_checkpoint(run.string()).dir, checkpoint_dir(run.string(), 4));
  EXPECT_EQ(directory_bytes((run / "missing").string()), 0);
  fs::remove_all(run);
}

}  // namespace
}  // namespace hylab::trainer
