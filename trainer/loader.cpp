#include "trainer/loader.h"

#include <algorithm>

#include "common/check.h"

namespace hylab::trainer {

DataLoader::DataLoader(const std::string& dir, const std::string& split, int64_t B, int64_t T,
                       int rank, int world)
    : B_(B), T_(T), rank_(rank), world_(world) {
  HYLAB_CHECK(B >= 1 && T >= 1, "DataLoader: B = {} and T = {} must be >= 1", B, T);
  HYLAB_CHECK(world >= 1 && rank >= 0 && rank < world, "DataLoader: rank {} of world {}", rank,
              world);
  const int64_t chunk = B * T;
  for (const std::string& path : list_shards(dir, split)) {
    ShardReader r(path);
    if (vocab_size_ == 0) vocab_size_ = static_cast<int>(r.header().vocab_size);
    if (static_cast<int>(r.header().vocab_size) != vocab_size_) {
      HYLAB_FAIL("{}: vocab_size {} differs from the other shards' {}; prepare the data folder "
                 "again", path, r.header().vocab_size, vocab_size_);
    }
    chunk_start_.push_back(total_chunks_);
    total_chunks_ += std::max<int64_t>(0, (r.size() - 1) / chunk);
    total_tokens_ += r.size();
    shards_.push_back(std::move(r));
  }
  if (total_chunks_ == 0) {
    HYLAB_FAIL("the {} split of {} has {} tokens, fewer than one micro-batch needs "
               "(device_batch_size {} x max_seq_len {} + 1 = {}); lower device_batch_size or "
               "max_seq_len, or prepare more text{}", split, dir, total_tokens_, B, T, chunk + 1,
               split == "val" ? " (or a larger --val_fraction)" : "");
  }
  buf_.resize(static_cast<size_t>(chunk + 1));
}

int64_t DataLoader::rows_that_fit(const std::string& dir, const std::string& split, int64_t T) {
  HYLAB_CHECK(T >= 1, "DataLoader: T = {} must be >= 1", T);
  int64_t largest = 0;
  for (const std::string& path : list_shards(dir, split)) {
    largest = std::max<int64_t>(largest, ShardReader(path).size());
  }
  return largest > 0 ? (largest - 1) / T : 0;
}

void DataLoader::next(int64_t* inputs, int64_t* targets) {
  const int64_t chunk = B_ * T_;
  const int64_t global = (calls_ * world_ + rank_) % total_chunks_;
  ++calls_;
  // The shard holding this chunk: the last one whose first chunk index is <= global.
  const auto it = std::upper_bound(chunk_start_.begin(), chunk_start_.end(), global);
  const size_t s = static_cast<size_t>(it - chunk_start_.begin()) - 1;
  shards_[s].read((global - chunk_start_[s]) * chunk, chunk + 1, buf_.data());
  std::copy(buf_.begin(), buf_.begin() + chunk, inputs);       // (B, T)
  std::copy(buf_.begin() + 1, buf_.begin() + chunk + 1, targets);  // (B, T), shifted by one
}

void DataLoader::next(std::vector<int64_t>* inputs, std::vector<int64_t>* targets) {
  inputs->resize(static_cast<size_t>(B_ * T_));
  targets->resize(static_cast<size_t>(B_ * T_));
  next(inputs->data(), targets->data());
}

void DataLoader::set_position(int64_t position) {
  if (position < 0 || position % world_ != 0) {
    HYLAB_FAIL("cannot restore the data loader at position {} with {} ranks: the position must be "
               "a multiple of the world size", position, world_);
  }
  calls_ = position / world_;
}

}  // namespace hylab::trainer
