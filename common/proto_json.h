// Protobuf's JSON mapping (google/protobuf/util/json_util.h), fast for flat messages.
//
// The library converts through its generic type machinery (the descriptor turned into a
// google.protobuf.Type, a stream of typed events, a writer) on every call: for a RunConfig
// ~0.6 ms to JSON and ~1.5 ms from JSON (Release build, 2-core machine), paid per trial by
// sweep expansion (config_hash), by the coordinator per submitted trial, and several times
// per input by the config and sweep fuzz targets (where it was most of their time).
//
// These functions write and read the common case directly with reflection, and hand
// everything else to the library (the slow twin), so the result is the library's:
//  - to JSON: compact output with proto field names, fields of type int32, int64 (quoted),
//    bool, finite double (protobuf's SimpleDtoa) and string made of plain printable ASCII
//    (nothing the library escapes), singular or repeated. Anything else (enums, nested
//    messages, floats, NaN, other characters, unknown fields, pretty printing): the library.
//  - from JSON: one object whose keys are proto field names, each once, with values of their
//    plain JSON type (int64 also as a canonical decimal string). Anything else (camelCase
//    names, null, numbers in strings, NaN, unknown keys, malformed JSON): the library, which
//    also words every error.
// tests/common/proto_json_test.cpp compares both paths on many configs. HYLAB_SLOW_JSON=1 in
// the environment makes every call take the library's path (to compare speeds). Thread-safe.
#pragma once

#include <string>

#include <google/protobuf/message.h>
#include <google/protobuf/util/json_util.h>

namespace hylab {

// = google::protobuf::util::MessageToJsonString(message, out, options).
google::protobuf::util::Status message_to_json(const google::protobuf::Message& message, std::string* out,
                                               const google::protobuf::util::JsonPrintOptions& options);

// = google::protobuf::util::JsonStringToMessage(json, message, options).
google::protobuf::util::Status json_to_message(const std::string& json, google::protobuf::Message* message,
                                               const google::protobuf::util::JsonParseOptions& options);

// The fast paths alone, for the tests: false when the case is left to the library.
bool message_to_json_fast(const google::protobuf::Message& message, std::string* out);
bool json_to_message_fast(const std::string& json, google::protobuf::Message* message);

}  // namespace hylab
