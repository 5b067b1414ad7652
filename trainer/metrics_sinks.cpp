#include "trainer/metrics_sinks.h"

#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "common/check.h"

namespace hylab::trainer {
namespace {

nlohmann::json number(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); }

nlohmann::json summary_object(const RunSummary& s) {
  nlohmann::json params = nlohmann::json::object();
  if (!s.params_json.empty()) params = nlohmann::json::parse(s.params_json);
  return {
      {"params_total", s.params_total},
      {"params", params},
      {"flops_per_token", number(s.flops_per_token)},
      {"steps", s.steps},
      {"total_time_s", number(s.total_time_s)},
      {"final_val_bpb", number(s.final_val_bpb)},
      {"final_train_loss", number(s.final_train_loss)},
      {"tok_per_s", number(s.tok_per_s)},
      {"mfu", number(s.mfu)},
      {"peak_mem_gib", number(s.peak_mem_gib)},
      {"decode_tok_per_s_b1", number(s.decode_tok_per_s_b1)},
      {"decode_tok_per_s_b32", number(s.decode_tok_per_s_b32)},
      {"cache_bytes", s.cache_bytes},
      {"provenance", s.provenance_json.empty() ? nlohmann::json::object()
                                               : nlohmann::json::parse(s.provenance_json)},
      {"disk_bytes", s.disk_bytes},
      {"recall_acc", number(s.recall_acc)},
      {"val_bpb_2x", number(s.val_bpb_2x)},
      {"val_bpb_4x", number(s.val_bpb_4x)},
  };
}

}  // namespace

std::string summary_to_json(const RunSummary& s) { return summary_object(s).dump(); }

JsonlMetricsSink::JsonlMetricsSink(const std::string& path) : path_(path) {
  f_ = std::fopen(path.c_str(), "a");
  if (!f_) HYLAB_FAIL("cannot open metrics file {} for appending: {}", path, std::strerror(errno));
}

JsonlMetricsSink::~JsonlMetricsSink() {
  if (f_) std::fclose(f_);
}

void JsonlMetricsSink::line(const std::string& json) {
  if (std::fputs(json.c_str(), f_) < 0 || std::fputc('\n', f_) == EOF || std::fflush(f_) != 0) {
    HYLAB_FAIL("cannot write metrics file {}: {}", path_, std::strerror(errno));
  }
}

void JsonlMetricsSink::write(const std::vector<MetricPoint>& points) {
  for (const MetricPoint& p : points) {
    line(nlohmann::json{{"type", "metric"},
                        {"step", p.step},
                        {"name", p.name},
                        {"value", number(p.value)},
                        {"time", p.wall_time}}
             .dump());
  }
}

void JsonlMetricsSink::write_summary(const RunSummary& s) {
  nlohmann::json j = summary_object(s);
  j["type"] = "summary";
  line(j.dump());
}

void JsonlMetricsSink::flush() {
  std::fflush(f_);
  ::fsync(fileno(f_));
}

void JsonlMetricsSink::checkpoint(int64_t step) {
  flush();  // every metric up to the checkpoint is durable before it is announced
  line(nlohmann::json{{"type", "checkpoint"}, {"step", step}}.dump());
  flush();
}

}  // namespace hylab::trainer
