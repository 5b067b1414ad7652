// Corpus replay: runs one fuzz target's LLVMFuzzerTestOneInput on every file under the
// folders given (its seed corpus and its crash regressions), built with the normal compiler
// and no libFuzzer, so CI re-checks every input a fuzzer ever found. Exit 0 when every input
// returns; a crash, abort or sanitizer report fails the test. Prints how many it ran.
//
//   <target>_replay fuzz/corpus/<target> fuzz/regressions/<target>
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  std::vector<fs::path> files;
  for (int i = 1; i < argc; ++i) {
    const fs::path dir(argv[i]);
    if (fs::is_regular_file(dir)) {
      files.push_back(dir);
      continue;
    }
    if (!fs::is_directory(dir)) continue;  // no regressions yet: nothing to replay there
    for (const auto& e : fs::recursive_directory_iterator(dir)) {
      if (e.is_regular_file() && e.path().filename().string()[0] != '.') files.push_back(e.path());
    }
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) {
    std::fprintf(stderr, "replay: no input files under the folders given\n");
    return 1;
  }
  for (const auto& p : files) {
    std::ifstream in(p, std::ios::binary);
    const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::fprintf(stderr, "replay: %s (%zu bytes)\n", p.string().c_str(), bytes.size());
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  }
  std::printf("replay: %zu inputs, all returned\n", files.size());
  return 0;
}
