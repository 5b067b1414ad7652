// Fuzz target: a token shard file as the data loader opens and reads it.
//
// The bytes are written to a file (tmpfs when there is one) and opened with ShardReader
// (header validation against the file size, then a read-only map); the first and last
// tokens and a short run are read, as the loader does. Seeds: fuzz/corpus/shard/ (small
// shards written by write_shard).
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "fuzz/fuzz_util.h"
#include "trainer/shard.h"

namespace {

std::string scratch_path() {
  const char* dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  return std::string(dir) + "/hylab_shard_fuzz_" + std::to_string(getpid()) + ".bin";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = scratch_path();
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  hylab::fuzz::guarded([&] {
    (void)hylab::trainer::read_shard_header(path);
    hylab::trainer::ShardReader r(path);
    if (r.size() == 0) return;
    uint64_t sum = r.at(0) + r.at(r.size() - 1);
    int64_t run[16];
    const int64_t n = std::min<int64_t>(16, r.size());
    r.read(r.size() - n, n, run);
    for (int64_t i = 0; i < n; ++i) sum += static_cast<uint64_t>(run[i]);
    if (sum == 0xffffffffffffull) std::fputc('\n', stderr);  // keep the reads
  });
  std::remove(path.c_str());
  return 0;
}
