// The torch-free half of reading a checkpoint: the safetensors header of a tensor file and
// the config in meta.json (model/checkpoint.h reads and writes the rest).
//
// A safetensors file is an 8-byte little-endian header length N, N bytes of JSON
// {"__metadata__": {...}, name: {"dtype", "shape", "data_offsets": [begin, end]}}, then the
// data. Every size in the header is checked against the file size here, with overflow-safe
// arithmetic, before anyone allocates a tensor: a corrupt or hostile header costs at most
// the header's own bytes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/run_config.h"

namespace hylab {

struct SafetensorsEntry {
  std::string name;
  std::string dtype;           // "F32", "BF16", ... (one of safetensors_dtype_bytes's)
  std::vector<int64_t> shape;  // every dim >= 0
  int64_t begin = 0;           // byte offsets into the data section: 0 <= begin <= end
  int64_t end = 0;             // end - begin == numel * element size; data_start + end <= file
};

// Bytes per element of a safetensors dtype name, or 0 when it is not one we store.
int safetensors_dtype_bytes(const std::string& dtype);

// The header length from the file's first 8 bytes; throws hylab::Error naming `path`
// unless 8 + N <= file_bytes.
uint64_t safetensors_header_length(const unsigned char first8[8], uint64_t file_bytes,
                                   const std::string& path);

// Parses and checks the N header bytes of a file of `file_bytes` bytes. Entries in header
// order ("__metadata__" skipped). Throws hylab::Error naming `path` and the tensor.
std::vector<SafetensorsEntry> parse_safetensors_header(const std::string& header_text,
                                                       uint64_t file_bytes,
                                                       const std::string& path);

// The resolved RunConfig of a checkpoint's meta.json ({"config": object or JSON string}).
// Old checkpoints without block_pattern become all Transformer; `depth: 0` is dropped.
// Throws hylab::Error (ConfigError for a bad config) naming `where`.
RunConfig checkpoint_config(const nlohmann::json& meta, const std::string& where);

}  // namespace hylab
