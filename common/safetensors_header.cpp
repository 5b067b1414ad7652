#include "common/safetensors_header.h"

#include <limits>

#include "common/check.h"

namespace hylab {

int safetensors_dtype_bytes(const std::string& dtype) {
  if (dtype == "F64" || dtype == "I64") return 8;
  if (dtype == "F32" || dtype == "I32") return 4;
  if (dtype == "BF16" || dtype == "F16" || dtype == "I16") return 2;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL") return 1;
  return 0;
}

uint64_t safetensors_header_length(const unsigned char first8[8], uint64_t file_bytes,
                                   const std::string& path) {
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(first8[i]) << (8 * i);
  if (file_bytes < 8 || n > file_bytes - 8) {
    HYLAB_FAIL("checkpoint: {} is not a safetensors file (header length {} in a file of {} bytes)",
               path, n, file_bytes);
  }
  return n;
}

namespace {

// A non-negative int64 from a JSON number, else throws naming the tensor and field.
int64_t get_count(const nlohmann::json& v, const std::string& path, const std::string& name,
                  const char* field) {
  const bool ok = v.is_number_unsigned()
                     ? v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
                     : v.is_number_integer() && v.get<int64_t>() >= 0;
  if (!ok) {
    HYLAB_FAIL("checkpoint: {}: tensor {}: {} holds {}, expected a non-negative integer", path,
               name, field, v.dump());
  }
  return v.get<int64_t>();
}

}  // namespace

std::vector<SafetensorsEntry> parse_safetensors_header(const std::string& header_text,
                                                       uint64_t file_bytes,
                                                       const std::string& path) {
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(header_text);
  } catch (const nlohmann::json::exception& e) {
    HYLAB_FAIL("checkpoint: {} has a corrupt header: {}", path, e.what());
  }
  if (!header.is_object()) HYLAB_FAIL("checkpoint: {}: the header is not a JSON object", path);
  const uint64_t data_bytes = file_bytes - 8 - header_text.size();  // caller checked the sum
  std::vector<SafetensorsEntry> out;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    if (!entry.is_object()) HYLAB_FAIL("checkpoint: {}: tensor {}: expected an object", path, name);
    SafetensorsEntry e;
    e.name = name;
    const auto dtype = entry.find("dtype");
    e.dtype = dtype != entry.end() && dtype->is_string() ? dtype->get<std::string>() : "?";
    const int elem = safetensors_dtype_bytes(e.dtype);
    if (elem == 0) HYLAB_FAIL("checkpoint: {}: tensor {} has unsupported dtype {}", path, name, e.dtype);
    const auto shape = entry.find("shape");
    const auto offsets = entry.find("data_offsets");
    if (shape == entry.end() || !shape->is_array() || shape->size() > 16 ||
        offsets == entry.end() || !offsets->is_array() || offsets->size() != 2) {
      HYLAB_FAIL("checkpoint: {}: tensor {}: expected \"shape\" (at most 16 dims) and "
                 "\"data_offsets\" [begin, end]", path, name);
    }
    // numel * elem in unsigned arithmetic, refusing anything beyond the data section.
    uint64_t bytes = static_cast<uint64_t>(elem);
    for (const auto& d : *shape) {
      const int64_t dim = get_count(d, path, name, "shape");
      e.shape.push_back(dim);
      if (dim != 0 && bytes > data_bytes / static_cast<uint64_t>(dim)) {
        HYLAB_FAIL("checkpoint: {}: tensor {} of shape {} does not fit in the file's {} data bytes",
                   path, name, shape->dump(), data_bytes);
      }
      bytes *= static_cast<uint64_t>(dim);
    }
    e.begin = get_count((*offsets)[0], path, name, "data_offsets");
    e.end = get_count((*offsets)[1], path, name, "data_offsets");
    if (e.begin > e.end || static_cast<uint64_t>(e.end) > data_bytes ||
        static_cast<uint64_t>(e.end - e.begin) != bytes) {
      HYLAB_FAIL("checkpoint: {}: tensor {} has inconsistent offsets [{}, {}] for {} bytes in a "
                 "data section of {} bytes (truncated file?)",
                 path, name, e.begin, e.end, bytes, data_bytes);
    }
    out.push_back(std::move(e));
  }
  return out;
}

RunConfig checkpoint_config(const nlohmann::json& meta, const std::string& where) {
  if (!meta.is_object() || !meta.contains("config")) {
    HYLAB_FAIL("checkpoint: {} has no \"config\" entry", where);
  }
  const nlohmann::json& c = meta["config"];
  if (!c.is_string() && !c.is_object()) {
    HYLAB_FAIL("checkpoint: {}: \"config\" is neither an object nor a JSON string", where);
  }
  RunConfig cfg = config_from_json(c.is_string() ? c.get<std::string>() : c.dump());
  if (cfg.has_depth() && cfg.depth() == 0) cfg.clear_depth();
  return resolve_config(cfg);
}

}  // namespace hylab
