// Serves (B, T) micro-batches of inputs and next-token targets from memory-mapped shards.
//
// The split's shards are cut into chunks of B*T+1 consecutive tokens (llm.c): chunk j
// gives inputs = tokens[j*B*T, (j+1)*B*T) and targets shifted by one, row b = tokens
// [b*T, (b+1)*T). Chunks never straddle two shards; the tail of a shard that does not fill
// a chunk is skipped; after the last chunk the stream wraps around (next epoch).
//
// Sharding across ranks is by global micro-batch index: the k-th call to next() on rank r
// of W returns chunk k*W + r. So at the same global batch, rank r's micro-batch in a W-rank
// run is exactly micro-step r of a 1-rank run with W times the gradient accumulation, and
// the data order does not depend on the world size.
//
// State is one number, position() = chunks consumed by all ranks together; it is saved in
// checkpoints and restored with set_position (which may use another world size, as long as
// it divides the position). Torch-free; not thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "trainer/shard.h"

namespace hylab::trainer {

class DataLoader {
 public:
  // split: "train" or "val". Throws hylab::Error if the folder has no shards of that split,
  // or fewer than B*T+1 tokens in every shard.
  DataLoader(const std::string& dir, const std::string& split, int64_t B, int64_t T, int rank = 0,
             int world = 1);

  // The most rows of T tokens (+1 target) that one chunk of the split can hold: the largest
  // B that a DataLoader of this split accepts. 0 when no shard holds even T+1 tokens.
  static int64_t rows_that_fit(const std::string& dir, const std::string& split, int64_t T);

  // Fills inputs and targets, each B*T int64 in row-major (B, T) order.
  void next(int64_t* inputs, int64_t* targets);
  void next(std::vector<int64_t>* inputs, std::vector<int64_t>* targets);

  int64_t position() const { return calls_ * world_; }
  void set_position(int64_t position);  // throws if position % world != 0
  int64_t chunks_per_epoch() const { return total_chunks_; }
  int64_t epoch() const { return position() / total_chunks_; }
  int64_t total_tokens() const { return total_tokens_; }
  int vocab_size() const { return vocab_size_; }

 private:
  std::vector<ShardReader> shards_;
  std::vector<int64_t> chunk_start_;  // first global chunk index of each shard (prefix sums)
  int64_t B_, T_;
  int rank_, world_;
  int64_t calls_ = 0;
  int64_t total_chunks_ = 0, total_tokens_ = 0;
  int vocab_size_ = 0;
  std::vector<int64_t> buf_;  // (B*T+1,)
};

}  // namespace hylab::trainer
