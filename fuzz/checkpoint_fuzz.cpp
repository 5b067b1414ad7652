// Fuzz target: a checkpoint's files as load_checkpoint reads them, without LibTorch.
//
// The bytes are taken both as a tensor file (safetensors: header length, JSON header, every
// shape and offset checked against the file size; then each tensor's bytes are copied out of
// the input, as load_safetensors copies them into a tensor) and as meta.json (its config,
// resolved). LibTorch itself is not linked: the parsing is common/safetensors_header.*, and
// model/checkpoint.cpp only allocates what that code has checked. Seeds:
// fuzz/corpus/checkpoint/ (files of a real tiny checkpoint).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/safetensors_header.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using hylab::fuzz::guarded;
  guarded([&] {
    if (size < 8) return;
    const uint64_t n = hylab::safetensors_header_length(data, size, "<fuzz>");
    const std::string text(reinterpret_cast<const char*>(data) + 8, n);
    const auto entries = hylab::parse_safetensors_header(text, size, "<fuzz>");
    const uint8_t* data_start = data + 8 + n;
    for (const auto& e : entries) {
      std::vector<uint8_t> tensor(static_cast<size_t>(e.end - e.begin));
      if (!tensor.empty()) std::memcpy(tensor.data(), data_start + e.begin, tensor.size());
    }
  });
  guarded([&] {
    const auto meta = nlohmann::json::parse(data, data + size);
    (void)hylab::checkpoint_config(meta, "<fuzz>");
  });
  return 0;
}
