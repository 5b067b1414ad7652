#include "common/config_keys.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <spdlog/fmt/fmt.h>

#include <cstddef>
#include <map>
#include <sstream>

#include "common/run_config.h"
#include "common/suggest.h"

// proto/config.proto's FileDescriptorSet with source info (generated: proto/config_desc.cc).
extern const unsigned char hylab_config_descriptor_set[];
extern const std::size_t hylab_config_descriptor_set_size;

namespace hylab {
namespace {

namespace pb = google::protobuf;

// Comment text on one line: "//" stripped by protoc already; whitespace runs collapsed.
std::string one_line(const std::string& comment) {
  std::string out;
  std::istringstream in(comment);
  std::string word;
  while (in >> word) out += (out.empty() ? "" : " ") + word;
  return out;
}

std::string type_name(const pb::FieldDescriptor* f) {
  std::string t = f->type_name();  // "int32", "double", "string", ...
  return f->is_repeated() ? "list of " + t : t;
}

std::string default_text(const pb::FieldDescriptor* f) {
  if (f->is_repeated()) return "";
  switch (f->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_INT32:
      return std::to_string(f->default_value_int32());
    case pb::FieldDescriptor::CPPTYPE_INT64:
      return std::to_string(f->default_value_int64());
    case pb::FieldDescriptor::CPPTYPE_DOUBLE:
      return fmt::format("{}", f->default_value_double());
    case pb::FieldDescriptor::CPPTYPE_BOOL:
      return f->default_value_bool() ? "true" : "false";
    case pb::FieldDescriptor::CPPTYPE_STRING:
      return f->default_value_string();
    default:
      return "";
  }
}

// field name -> comment, from the embedded descriptor set. Source locations are addressed
// by path: [4 (message_type), message index, 2 (field), field index].
std::map<std::string, std::string> comments_by_field() {
  std::map<std::string, std::string> out;
  pb::FileDescriptorSet set;
  if (!set.ParseFromArray(hylab_config_descriptor_set,
                          static_cast<int>(hylab_config_descriptor_set_size))) {
    return out;
  }
  for (const auto& file : set.file()) {
    int msg = -1;
    for (int i = 0; i < file.message_type_size(); ++i) {
      if (file.message_type(i).name() == RunConfig::descriptor()->name()) msg = i;
    }
    if (msg < 0) continue;
    const auto& m = file.message_type(msg);
    for (const auto& loc : file.source_code_info().location()) {
      if (loc.path_size() != 4 || loc.path(0) != 4 || loc.path(1) != msg || loc.path(2) != 2)
        continue;
      const int field = loc.path(3);
      if (field < 0 || field >= m.field_size()) continue;
      // A comment after the field on its line is its help; else the block above it, less
      // section rulers such as "// ---- run ----".
      std::string text = one_line(loc.trailing_comments());
      if (text.empty()) {
        std::istringstream lines(loc.leading_comments());
        std::string line, kept;
        while (std::getline(lines, line)) {
          if (one_line(line).rfind("----", 0) != 0) kept += line + "\n";
        }
        text = one_line(kept);
      }
      out[m.field(field).name()] = text;
    }
  }
  return out;
}

}  // namespace

const std::vector<ConfigKeyDoc>& config_key_docs() {
  static const std::vector<ConfigKeyDoc> docs = [] {
    const auto comments = comments_by_field();
    std::vector<ConfigKeyDoc> out;
    const pb::Descriptor* d = RunConfig::descriptor();
    for (int i = 0; i < d->field_count(); ++i) {
      const pb::FieldDescriptor* f = d->field(i);
      auto it = comments.find(f->name());
      out.push_back(
          {f->name(), type_name(f), default_text(f), it == comments.end() ? "" : it->second});
    }
    return out;
  }();
  return docs;
}

std::vector<std::string> config_key_names() {
  std::vector<std::string> out;
  const pb::Descriptor* d = RunConfig::descriptor();
  for (int i = 0; i < d->field_count(); ++i) out.push_back(d->field(i)->name());
  return out;
}

std::string unknown_config_key_hint(const std::string& key) {
  const std::string near = nearest_name(key, config_key_names());
  std::string out;
  if (!near.empty()) out += fmt::format("; did you mean \"{}\"?", near);
  return out + " (`hylab config keys` lists every key with its default and help)";
}

}  // namespace hylab
