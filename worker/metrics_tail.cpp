#include "worker/metrics_tail.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

namespace hylab::worker {
namespace {

using nlohmann::json;

double num(const json& j, const char* key, double fallback = 0) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : fallback;
}

int64_t integer(const json& j, const char* key, int64_t fallback = 0) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<int64_t>() : fallback;
}

}  // namespace

std::optional<Record> parse_record(const std::string& line, std::string* error) {
  json j = json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    *error = "not a JSON object";
    return std::nullopt;
  }
  const std::string type = j.value("type", "");
  Record r;
  if (type == "metric") {
    auto v = j.find("value");
    if (!j.contains("step") || !j["step"].is_number_integer() || !j.contains("name") ||
        !j["name"].is_string() || v == j.end()) {
      *error = "metric record needs integer step, string name and value";
      return std::nullopt;
    }
    if (!v->is_number() || !std::isfinite(v->get<double>())) {
      *error = "metric " + j["name"].get<std::string>() + " at step " +
               std::to_string(j["step"].get<int64_t>()) + " is not a finite number (skipped)";
      return std::nullopt;
    }
    r.kind = Record::Kind::kMetric;
    r.metric.set_step(j["step"].get<int64_t>());
    r.metric.set_name(j["name"].get<std::string>());
    r.metric.set_value(v->get<double>());
    r.metric.set_wall_time(num(j, "time"));
    return r;
  }
  if (type == "checkpoint") {
    if (!j.contains("step") || !j["step"].is_number_integer()) {
      *error = "checkpoint record needs an integer step";
      return std::nullopt;
    }
    r.kind = Record::Kind::kCheckpoint;
    r.step = j["step"].get<int64_t>();
    return r;
  }
  if (type == "summary") {
    r.kind = Record::Kind::kSummary;
    auto& s = r.summary;
    s.set_params_total(integer(j, "params_total"));
    if (j.contains("params_json")) {
      s.set_params_json(j["params_json"].is_string() ? j["params_json"].get<std::string>() : j["params_json"].dump());
    } else if (j.contains("params") && j["params"].is_object()) {
      s.set_params_json(j["params"].dump());
    }
    s.set_flops_per_token(num(j, "flops_per_token"));
    s.set_steps(integer(j, "steps"));
    s.set_total_time_s(num(j, "total_time_s"));
    s.set_final_val_bpb(num(j, "final_val_bpb", -1));
    s.set_final_train_loss(num(j, "final_train_loss", -1));
    s.set_tok_per_s(num(j, "tok_per_s"));
    s.set_mfu(num(j, "mfu"));
    s.set_peak_mem_gib(num(j, "peak_mem_gib"));
    s.set_decode_tok_per_s_b1(num(j, "decode_tok_per_s_b1"));
    s.set_decode_tok_per_s_b32(num(j, "decode_tok_per_s_b32"));
    s.set_cache_bytes(integer(j, "cache_bytes"));
    if (j.contains("provenance") && j["provenance"].is_object()) s.set_provenance_json(j["provenance"].dump());
    s.set_disk_bytes(integer(j, "disk_bytes"));
    s.set_recall_acc(num(j, "recall_acc", -1));
    s.set_val_bpb_2x(num(j, "val_bpb_2x", -1));
    s.set_val_bpb_4x(num(j, "val_bpb_4x", -1));
    return r;
  }
  *error = "unknown record type \"" + type + "\"";
  return std::nullopt;
}

std::vector<Record> MetricsTail::read(size_t max_records) {
  std::vector<Record> out;
  std::ifstream in(path_, std::ios::binary);
  if (!in) return out;
  in.seekg(offset_);
  std::string line;
  while (out.size() < max_records && std::getline(in, line)) {
    if (in.eof()) break;  // no newline yet: a partial line, read again later
    offset_ += static_cast<int64_t>(line.size()) + 1;
    if (line.empty()) continue;
    std::string error;
    if (auto r = parse_record(line, &error)) {
      out.push_back(std::move(*r));
    } else {
      spdlog::warn("{}: skipped a record: {}", path_, error);
    }
  }
  return out;
}

bool MetricsTail::has_more() const {
  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0) return false;
  return st.st_size > offset_;
}

std::vector<Record> read_all_records(const std::string& path) {
  MetricsTail tail(path);
  std::vector<Record> out;
  while (true) {
    auto more = tail.read(100000);
    if (more.empty()) break;
    out.insert(out.end(), std::make_move_iterator(more.begin()), std::make_move_iterator(more.end()));
  }
  return out;
}

}  // namespace hylab::worker
