// Token shards: the on-disk format `hylab data prepare` writes and the loader memory-maps.
//
// llm.c-style: a fixed 1024-byte header, then `count` little-endian tokens of 2 bytes (uint16,
// when the vocabulary fits) or 4 bytes (uint32). Header fields (little-endian):
//   bytes 0..3   magic   kShardMagic ("HYTK")
//   bytes 4..7   version kShardVersion
//   bytes 8..11  token_bytes: 2 or 4
//   bytes 12..15 vocab_size (every token is < vocab_size)
//   bytes 16..23 count: number of tokens after the header
//   the rest is zero.
// A file whose size is not header + count * token_bytes is rejected (truncated write).
//
// Torch-free. Reading maps the file read-only; a ShardReader is movable, not copyable, and
// safe to read from several threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace hylab::trainer {

constexpr uint32_t kShardMagic = 0x4b545948;  // "HYTK" read as little-endian bytes
constexpr uint32_t kShardVersion = 1;
constexpr size_t kShardHeaderBytes = 1024;

struct ShardHeader {
  uint32_t version = kShardVersion;
  uint32_t token_bytes = 2;  // 2 (uint16) or 4 (uint32)
  uint32_t vocab_size = 0;
  uint64_t count = 0;
};

// Smallest token width that holds ids < vocab_size: 2 up to 65536, else 4.
uint32_t token_bytes_for_vocab(int64_t vocab_size);

// Writes a whole shard to `path` atomically (path + ".tmp", then rename). Every token must be
// < vocab_size. Throws hylab::Error naming the path on an I/O error or an out-of-range token.
void write_shard(const std::string& path, const std::vector<uint32_t>& tokens, int64_t vocab_size);

// Reads and validates only the header (magic, version, width, file size). Throws hylab::Error.
ShardHeader read_shard_header(const std::string& path);

// A read-only memory map of one shard.
class ShardReader {
 public:
  explicit ShardReader(const std::string& path);  // throws hylab::Error
  ~ShardReader();
  ShardReader(ShardReader&& other) noexcept;
  ShardReader& operator=(ShardReader&& other) noexcept;
  ShardReader(const ShardReader&) = delete;
  ShardReader& operator=(const ShardReader&) = delete;

  const std::string& path() const { return path_; }
  const ShardHeader& header() const { return header_; }
  int64_t size() const { return static_cast<int64_t>(header_.count); }
  // Token i (0 <= i < size()).
  uint32_t at(int64_t i) const;
  // Copies tokens [start, start+n) into out as int64 (what the model eats). Bounds-checked.
  void read(int64_t start, int64_t n, int64_t* out) const;

 private:
  void unmap();
  std::string path_;
  ShardHeader header_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  const unsigned char* tokens_ = nullptr;
};

// The shards of one split in a data folder, sorted by name: DIR/{split}_*.bin.
// Throws hylab::Error if the folder cannot be read or holds none.
std::vector<std::string> list_shards(const std::string& dir, const std::string& split);

}  // namespace hylab::trainer
