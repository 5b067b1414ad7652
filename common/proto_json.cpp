#include "common/proto_json.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/reflection.h>
#include <google/protobuf/stubs/strutil.h>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <vector>

namespace hylab {
namespace {

namespace pb = google::protobuf;
using FD = pb::FieldDescriptor;

// Printable ASCII that no JSON escaper changes ('"', '\\' and the HTML-sensitive '<', '>',
// '&', '\'' and '=' excluded: the library escapes some of them; those strings go to it).
bool plain_text(const std::string& s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' || c == '\'' ||
        c == '=') {
      return false;
    }
  }
  return true;
}

// One value of field f (index i when repeated) as the library writes it; false when not ours.
bool write_value(const pb::Message& m, const pb::Reflection* r, const FD* f, int i, std::string* out) {
  const bool rep = f->is_repeated();
  switch (f->cpp_type()) {
    case FD::CPPTYPE_INT32:
      *out += std::to_string(rep ? r->GetRepeatedInt32(m, f, i) : r->GetInt32(m, f));
      return true;
    case FD::CPPTYPE_INT64:  // quoted: JSON numbers cannot hold every int64
      *out += '"' + std::to_string(rep ? r->GetRepeatedInt64(m, f, i) : r->GetInt64(m, f)) + '"';
      return true;
    case FD::CPPTYPE_BOOL:
      *out += (rep ? r->GetRepeatedBool(m, f, i) : r->GetBool(m, f)) ? "true" : "false";
      return true;
    case FD::CPPTYPE_DOUBLE: {
      const double v = rep ? r->GetRepeatedDouble(m, f, i) : r->GetDouble(m, f);
      if (!std::isfinite(v)) return false;  // "NaN", "Infinity": the library
      *out += pb::SimpleDtoa(v);
      return true;
    }
    case FD::CPPTYPE_STRING: {
      if (f->type() != FD::TYPE_STRING) return false;  // bytes are base64
      const std::string v = rep ? r->GetRepeatedString(m, f, i) : r->GetString(m, f);
      if (!plain_text(v)) return false;
      *out += '"' + v + '"';
      return true;
    }
    default:
      return false;
  }
}

bool parse_int64_text(const std::string& s, int64_t* v) {
  // Canonical decimal only: -?(0|[1-9][0-9]*), in range.
  const size_t start = !s.empty() && s[0] == '-' ? 1 : 0;
  if (s.size() == start || s.size() > 20) return false;
  if (s[start] == '0' && s.size() > start + 1) return false;
  for (size_t i = start; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
  }
  errno = 0;
  char* end = nullptr;
  const long long x = std::strtoll(s.c_str(), &end, 10);
  if (errno != 0 || end != s.c_str() + s.size()) return false;
  *v = x;
  return true;
}

// Sets (or adds) one value of field f from JSON; false when not a plain value of its type.
bool set_value(pb::Message* m, const pb::Reflection* r, const FD* f, const nlohmann::json& v) {
  const bool rep = f->is_repeated();
  switch (f->cpp_type()) {
    case FD::CPPTYPE_INT32: {
      if (!v.is_number_integer()) return false;
      if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int32_t>::max())) {
        return false;
      }
      const int64_t wide = v.get<int64_t>();
      if (wide < std::numeric_limits<int32_t>::min() || wide > std::numeric_limits<int32_t>::max()) return false;
      const int32_t x = static_cast<int32_t>(wide);
      rep ? r->AddInt32(m, f, x) : r->SetInt32(m, f, x);
      return true;
    }
    case FD::CPPTYPE_INT64: {
      int64_t x = 0;
      if (v.is_number_unsigned()) {
        if (v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
        x = static_cast<int64_t>(v.get<uint64_t>());
      } else if (v.is_number_integer()) {
        x = v.get<int64_t>();
      } else if (!v.is_string() || !parse_int64_text(v.get<std::string>(), &x)) {
        return false;
      }
      rep ? r->AddInt64(m, f, x) : r->SetInt64(m, f, x);
      return true;
    }
    case FD::CPPTYPE_BOOL:
      if (!v.is_boolean()) return false;
      rep ? r->AddBool(m, f, v.get<bool>()) : r->SetBool(m, f, v.get<bool>());
      return true;
    case FD::CPPTYPE_DOUBLE: {
      if (!v.is_number()) return false;
      const double x = v.get<double>();
      if (!std::isfinite(x)) return false;
      rep ? r->AddDouble(m, f, x) : r->SetDouble(m, f, x);
      return true;
    }
    case FD::CPPTYPE_STRING:
      if (f->type() != FD::TYPE_STRING || !v.is_string()) return false;
      rep ? r->AddString(m, f, v.get<std::string>()) : r->SetString(m, f, v.get<std::string>());
      return true;
    default:
      return false;
  }
}

}  // namespace

bool message_to_json_fast(const pb::Message& message, std::string* out) {
  const pb::Reflection* r = message.GetReflection();
  if (!r->GetUnknownFields(message).empty()) return false;
  std::vector<const FD*> fields;
  r->ListFields(message, &fields);  // field-number order: the order of the library's output
  std::string json = "{";
  for (const FD* f : fields) {
    if (json.size() > 1) json += ',';
    json += '"' + f->name() + "\":";
    if (f->is_repeated()) {
      json += '[';
      for (int i = 0; i < r->FieldSize(message, f); ++i) {
        if (i > 0) json += ',';
        if (!write_value(message, r, f, i, &json)) return false;
      }
      json += ']';
    } else if (!write_value(message, r, f, 0, &json)) {
      return false;
    }
  }
  json += '}';
  *out += json;
  return true;
}

bool json_to_message_fast(const std::string& json, pb::Message* message) {
  // Keys of the top-level object, counted as they are read: the parsed object keeps one
  // value per key, so a difference means a repeated key (the library's case).
  size_t keys = 0;
  // Without exceptions: text that is not JSON (what the fuzz target mostly sends, and any
  // mistyped file) is left to the library's parser for its message; a thrown and caught
  // parse_error here cost more than the parse (its message is formatted, then dropped).
  const nlohmann::json j = nlohmann::json::parse(
      json,
      [&keys](int depth, nlohmann::json::parse_event_t event, nlohmann::json&) {
        if (event == nlohmann::json::parse_event_t::key && depth == 1) ++keys;
        return true;
      },
      /*allow_exceptions=*/false);
  if (!j.is_object() || j.size() != keys) return false;  // discarded (not JSON) is no object
  const pb::Descriptor* d = message->GetDescriptor();
  const pb::Reflection* r = message->GetReflection();
  message->Clear();
  for (auto it = j.begin(); it != j.end(); ++it) {
    const FD* f = d->FindFieldByName(it.key());
    if (f == nullptr || f->containing_oneof() != nullptr) return false;
    if (f->is_repeated()) {
      if (!it.value().is_array()) return false;
      for (const auto& v : it.value()) {
        if (!set_value(message, r, f, v)) return false;
      }
    } else if (!set_value(message, r, f, it.value())) {
      return false;
    }
  }
  return true;
}

// HYLAB_SLOW_JSON=1: always the library (to compare speeds, e.g. of the fuzz targets).
bool slow_only() {
  static const bool slow = [] {
    const char* v = std::getenv("HYLAB_SLOW_JSON");
    return v != nullptr && std::string(v) == "1";
  }();
  return slow;
}

pb::util::Status message_to_json(const pb::Message& message, std::string* out,
                                 const pb::util::JsonPrintOptions& options) {
  if (slow_only()) return pb::util::MessageToJsonString(message, out, options);
  const bool plain_options = !options.add_whitespace && options.preserve_proto_field_names &&
                             !options.always_print_primitive_fields;
  if (plain_options && message_to_json_fast(message, out)) return pb::util::OkStatus();
  return pb::util::MessageToJsonString(message, out, options);
}

pb::util::Status json_to_message(const std::string& json, pb::Message* message,
                                 const pb::util::JsonParseOptions& options) {
  if (!slow_only() && !options.ignore_unknown_fields && json_to_message_fast(json, message)) {
    return pb::util::OkStatus();
  }
  return pb::util::JsonStringToMessage(json, message, options);
}

}  // namespace hylab
