#include "trainer/shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "common/check.h"

namespace hylab::trainer {
namespace fs = std::filesystem;
namespace {

void put_u32(unsigned char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
void put_u64(unsigned char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
uint32_t get_u32(const unsigned char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(p[i]) << (8 * i);
  return v;
}
uint64_t get_u64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

// Validates a header block against the file size; returns the parsed header.
ShardHeader parse_header(const std::string& path, const unsigned char* h, uint64_t file_bytes) {
  const uint32_t magic = get_u32(h);
  if (magic != kShardMagic) {
    HYLAB_FAIL("{}: not a hylab token shard (magic {:#010x}, expected {:#010x}); "
               "write shards with `hylab data prepare`", path, magic, kShardMagic);
  }
  ShardHeader hd;
  hd.version = get_u32(h + 4);
  hd.token_bytes = get_u32(h + 8);
  hd.vocab_size = get_u32(h + 12);
  hd.count = get_u64(h + 16);
  if (hd.version != kShardVersion) {
    HYLAB_FAIL("{}: shard version {} is not supported (this build reads version {})", path,
               hd.version, kShardVersion);
  }
  if (hd.token_bytes != 2 && hd.token_bytes != 4) {
    HYLAB_FAIL("{}: token width {} bytes in the header; expected 2 or 4", path, hd.token_bytes);
  }
  // count comes from the file: compare it with what the file can hold before multiplying
  // (count * token_bytes can wrap around to a small number).
  const uint64_t room = file_bytes < kShardHeaderBytes ? 0 : (file_bytes - kShardHeaderBytes) / hd.token_bytes;
  if (hd.count > room) {
    HYLAB_FAIL("{}: file has {} bytes but its header promises {} tokens of {} bytes; "
               "the shard is truncated or corrupt, run `hylab data prepare` again",
               path, file_bytes, hd.count, hd.token_bytes);
  }
  const uint64_t expected = kShardHeaderBytes + hd.count * hd.token_bytes;
  if (file_bytes != expected) {
    HYLAB_FAIL("{}: file has {} bytes but its header promises {} tokens of {} bytes ({} bytes); "
               "the shard is truncated or corrupt, run `hylab data prepare` again",
               path, file_bytes, hd.count, hd.token_bytes, expected);
  }
  return hd;
}

}  // namespace

uint32_t token_bytes_for_vocab(int64_t vocab_size) { return vocab_size <= 65536 ? 2 : 4; }

void write_shard(const std::string& path, const std::vector<uint32_t>& tokens, int64_t vocab_size) {
  HYLAB_CHECK(vocab_size >= 1 && vocab_size <= UINT32_MAX, "vocab_size {} out of range", vocab_size);
  const uint32_t width = token_bytes_for_vocab(vocab_size);
  std::vector<unsigned char> buf(kShardHeaderBytes + tokens.size() * width, 0);
  put_u32(buf.data(), kShardMagic);
  put_u32(buf.data() + 4, kShardVersion);
  put_u32(buf.data() + 8, width);
  put_u32(buf.data() + 12, static_cast<uint32_t>(vocab_size));
  put_u64(buf.data() + 16, tokens.size());
  unsigned char* p = buf.data() + kShardHeaderBytes;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const uint32_t t = tokens[i];
    if (t >= vocab_size) {
      HYLAB_FAIL("{}: token {} at position {} is >= vocab_size {}", path, t, i, vocab_size);
    }
    p[i * width] = static_cast<unsigned char>(t);
    p[i * width + 1] = static_cast<unsigned char>(t >> 8);
    if (width == 4) {
      p[i * width + 2] = static_cast<unsigned char>(t >> 16);
      p[i * width + 3] = static_cast<unsigned char>(t >> 24);
    }
  }
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) HYLAB_FAIL("cannot write {}: {}", tmp, std::strerror(errno));
  const size_t n = std::fwrite(buf.data(), 1, buf.size(), f);
  const bool ok = n == buf.size() && std::fflush(f) == 0 && fsync(fileno(f)) == 0;
  std::fclose(f);
  if (!ok) {
    std::remove(tmp.c_str());
    HYLAB_FAIL("cannot write {}: short write ({} of {} bytes)", path, n, buf.size());
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    HYLAB_FAIL("cannot rename {} to {}: {}", tmp, path, std::strerror(errno));
  }
}

ShardHeader read_shard_header(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) HYLAB_FAIL("cannot open token shard {}: {}", path, std::strerror(errno));
  unsigned char h[kShardHeaderBytes];
  const size_t n = std::fread(h, 1, sizeof(h), f);
  std::fseek(f, 0, SEEK_END);
  const long bytes = std::ftell(f);
  std::fclose(f);
  if (n != sizeof(h)) {
    HYLAB_FAIL("{}: {} bytes is shorter than the {}-byte shard header", path, bytes,
               kShardHeaderBytes);
  }
  return parse_header(path, h, static_cast<uint64_t>(bytes));
}

ShardReader::ShardReader(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) HYLAB_FAIL("cannot open token shard {}: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    HYLAB_FAIL("cannot stat {}: {}", path, std::strerror(errno));
  }
  map_bytes_ = static_cast<size_t>(st.st_size);
  if (map_bytes_ < kShardHeaderBytes) {
    ::close(fd);
    HYLAB_FAIL("{}: {} bytes is shorter than the {}-byte shard header", path, map_bytes_,
               kShardHeaderBytes);
  }
  map_ = ::mmap(nullptr, map_bytes_, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    HYLAB_FAIL("cannot mmap {}: {}", path, std::strerror(errno));
  }
  const auto* base = static_cast<const unsigned char*>(map_);
  try {
    header_ = parse_header(path, base, map_bytes_);
  } catch (...) {
    unmap();
    throw;
  }
  tokens_ = base + kShardHeaderBytes;
}

ShardReader::~ShardReader() { unmap(); }

ShardReader::ShardReader(ShardReader&& o) noexcept { *this = std::move(o); }

ShardReader& ShardReader::operator=(ShardReader&& o) noexcept {
  if (this != &o) {
    unmap();
    path_ = std::move(o.path_);
    header_ = o.header_;
    map_ = o.map_;
    map_bytes_ = o.map_bytes_;
    tokens_ = o.tokens_;
    o.map_ = nullptr;
    o.map_bytes_ = 0;
    o.tokens_ = nullptr;
  }
  return *this;
}

void ShardReader::unmap() {
  if (map_) ::munmap(map_, map_bytes_);
  map_ = nullptr;
  tokens_ = nullptr;
}

uint32_t ShardReader::at(int64_t i) const {
  const unsigned char* p = tokens_ + static_cast<size_t>(i) * header_.token_bytes;
  return header_.token_bytes == 2 ? (static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8)
                                  : get_u32(p);
}

void ShardReader::read(int64_t start, int64_t n, int64_t* out) const {
  HYLAB_CHECK(start >= 0 && n >= 0 && start + n <= size(),
              "{}: read of tokens [{}, {}) outside the shard's {} tokens", path_, start, start + n,
              size());
  for (int64_t i = 0; i < n; ++i) out[i] = at(start + i);
}

std::vector<std::string> list_shards(const std::string& dir, const std::string& split) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    HYLAB_FAIL("data folder {} does not exist or is not a folder; create it with "
               "`hylab data prepare --input TEXT --out {}`", dir, dir);
  }
  std::vector<std::string> out;
  const std::string prefix = split + "_";
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) == 0 && e.path().extension() == ".bin") out.push_back(e.path().string());
  }
  if (ec) HYLAB_FAIL("cannot list data folder {}: {}", dir, ec.message());
  if (out.empty()) {
    HYLAB_FAIL("data folder {} has no {}_*.bin token shards; create them with "
               "`hylab data prepare --input TEXT --out {}`", dir, split, dir);
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace hylab::trainer
