#include "wire/wire.h"

#include <cerrno>
#include <chrono>
#include <cmath>
#include <vector>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>
#include <spdlog/fmt/fmt.h>

#include "common/utf8.h"

namespace hylab::wire {
namespace {

constexpr size_t kMaxIdLength = 256;
constexpr size_t kMaxTextLength = 64u << 10;

std::string check_trial(int64_t trial_id, int64_t attempt) {
  if (trial_id <= 0) return fmt::format("trial_id = {}: expected > 0", trial_id);
  if (attempt <= 0) return fmt::format("attempt = {}: expected > 0", attempt);
  return "";
}

std::string check_held(const google::protobuf::RepeatedPtrField<proto::HeldTrial>& held) {
  for (const auto& h : held) {
    if (auto e = check_trial(h.trial_id(), h.attempt()); !e.empty()) return "held trial: " + e;
    for (int s : h.slots()) {
      if (s < 0 || s > 4096) return fmt::format("held trial {}: slot {} out of range", h.trial_id(), s);
    }
  }
  return "";
}

// Every string field (not bytes) made valid UTF-8, recursively: what a peer sends ends up in
// the database and in JSON replies, where one invalid byte breaks every later reader.
void sanitize_strings(google::protobuf::Message* m) {
  const auto* refl = m->GetReflection();
  std::vector<const google::protobuf::FieldDescriptor*> fields;
  refl->ListFields(*m, &fields);
  for (const auto* f : fields) {
    if (f->type() == google::protobuf::FieldDescriptor::TYPE_STRING) {
      if (f->is_repeated()) {
        for (int i = 0; i < refl->FieldSize(*m, f); ++i) {
          const std::string v = refl->GetRepeatedString(*m, f, i);
          if (!is_valid_utf8(v)) refl->SetRepeatedString(m, f, i, to_valid_utf8(v));
        }
      } else {
        const std::string v = refl->GetString(*m, f);
        if (!is_valid_utf8(v)) refl->SetString(m, f, to_valid_utf8(v));
      }
    } else if (f->cpp_type() == google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE) {
      if (f->is_repeated()) {
        for (int i = 0; i < refl->FieldSize(*m, f); ++i) sanitize_strings(refl->MutableRepeatedMessage(m, f, i));
      } else {
        sanitize_strings(refl->MutableMessage(m, f));
      }
    }
  }
}

}  // namespace

std::string encode(Envelope env, const std::string& sender) {
  env.set_version(proto::PROTOCOL_VERSION_1);
  env.set_sender(sender);
  return env.SerializeAsString();
}

std::string kind_name(const Envelope& env) {
  const auto* oneof = Envelope::descriptor()->FindOneofByName("kind");
  const auto* field = env.GetReflection()->GetOneofFieldDescriptor(env, oneof);
  return field ? field->name() : "none";
}

std::string validate(const Envelope& env) {
  if (env.version() != proto::PROTOCOL_VERSION_1) {
    return fmt::format("protocol version {} (this build speaks {})", static_cast<int>(env.version()),
                       static_cast<int>(proto::PROTOCOL_VERSION_1));
  }
  if (env.sender().empty() || env.sender().size() > kMaxIdLength) {
    return "sender: expected a non-empty id of at most 256 bytes";
  }
  switch (env.kind_case()) {
    case Envelope::KIND_NOT_SET:
      return "no message kind set";
    case Envelope::kHello: {
      const auto& h = env.hello();
      if (h.worker_id().empty() || h.worker_id().size() > kMaxIdLength) return "hello: worker_id: expected 1..256 bytes";
      if (h.worker_id() != env.sender()) return "hello: worker_id differs from the sender";
      if (h.slots() < 1 || h.slots() > 4096) return fmt::format("hello: slots = {}: expected 1..4096", h.slots());
      if (h.gpus_size() > 4096) return "hello: too many gpus";
      return check_held(h.held());
    }
    case Envelope::kHeartbeat:
      return check_held(env.heartbeat().held());
    case Envelope::kAssign: {
      const auto& a = env.assign();
      if (auto e = check_trial(a.trial_id(), a.attempt()); !e.empty()) return "assign: " + e;
      if (a.config_json().empty()) return "assign: config_json: empty";
      if (a.run_dir().empty() || a.run_dir().find("..") != std::string::npos || a.run_dir()[0] == '/') {
        return fmt::format("assign: run_dir = \"{}\": expected a relative path without ..", a.run_dir());
      }
      if (a.slots_size() < 1) return "assign: slots: expected at least one";
      if (a.num_nodes() < 1 || a.node_rank() < 0 || a.node_rank() >= a.num_nodes()) {
        return fmt::format("assign: node_rank = {}, num_nodes = {}: out of range", a.node_rank(), a.num_nodes());
      }
      return "";
    }
    case Envelope::kStarted:
      return check_trial(env.started().trial_id(), env.started().attempt());
    case Envelope::kMetrics: {
      const auto& m = env.metrics();
      if (auto e = check_trial(m.trial_id(), m.attempt()); !e.empty()) return "metrics: " + e;
      if (m.seq() <= 0) return fmt::format("metrics: seq = {}: expected > 0", m.seq());
      if (m.metrics_size() > kMaxMetricsPerBatch) {
        return fmt::format("metrics: {} points: at most {} per batch", m.metrics_size(), kMaxMetricsPerBatch);
      }
      for (const auto& p : m.metrics()) {
        if (p.name().empty() || p.name().size() > 64) return "metrics: metric name: expected 1..64 bytes";
        if (p.step() < 0) return fmt::format("metrics: {}: step = {}: expected >= 0", p.name(), p.step());
      }
      return "";
    }
    case Envelope::kMetricsAck:
      return check_trial(env.metrics_ack().trial_id(), env.metrics_ack().attempt());
    case Envelope::kFinished: {
      const auto& f = env.finished();
      if (auto e = check_trial(f.trial_id(), f.attempt()); !e.empty()) return "finished: " + e;
      if (!proto::TrialOutcome_IsValid(f.outcome()) || f.outcome() == proto::TRIAL_OUTCOME_UNSPECIFIED) {
        return "finished: outcome: unknown value";
      }
      if (f.log_tail().size() > kMaxTextLength) return "finished: log_tail: longer than 64 KiB";
      return "";
    }
    case Envelope::kFinishedAck:
      return check_trial(env.finished_ack().trial_id(), env.finished_ack().attempt());
    case Envelope::kCancel:
      return check_trial(env.cancel().trial_id(), env.cancel().attempt());
    case Envelope::kRendezvous:
      if (env.rendezvous().payload().size() > kMaxTextLength) return "rendezvous: payload too large";
      return check_trial(env.rendezvous().trial_id(), env.rendezvous().attempt());
    case Envelope::kRequest: {
      const auto& r = env.request();
      if (r.kind_case() == proto::ClientRequest::KIND_NOT_SET) return "request: no request kind set";
      if (r.page_size() < 0 || r.page_size() > kMaxPageSize) {
        return fmt::format("request: page_size = {}: expected 0..{}", r.page_size(), kMaxPageSize);
      }
      // A worker list's token is the hex of a worker_id (<= 256 bytes): up to 513 bytes.
      if (r.page_token().size() > 1024) return "request: page_token: longer than 1024 bytes";
      if (r.has_submit_sweep()) {
        const auto& s = r.submit_sweep();
        if (s.name().empty()) return "request: submit_sweep: name: empty";
        // A tpe sweep (search_json set) comes without trials: the coordinator proposes them.
        const int min_trials = s.search_json().empty() ? 1 : 0;
        if (s.trials_size() < min_trials || s.trials_size() > kMaxTrialsPerSubmit) {
          return fmt::format("request: submit_sweep: {} trials: expected {}..{}", s.trials_size(), min_trials,
                             kMaxTrialsPerSubmit);
        }
        if (s.gpus_per_trial() < 1) return "request: submit_sweep: gpus_per_trial: expected >= 1";
        const int nodes = std::max(1, s.nodes_per_trial());
        if (s.gpus_per_trial() % nodes != 0) return "request: submit_sweep: nodes_per_trial must divide gpus_per_trial";
        if (s.search_json().size() > 1000000) return "request: submit_sweep: search_json: over 1 MB";
        for (const auto& t : s.trials()) {
          if (t.param_names_size() != t.param_values_size()) return "request: submit_sweep: param names/values differ in length";
          if (t.config_json().empty()) return "request: submit_sweep: a trial without config_json";
        }
      }
      return "";
    }
    case Envelope::kWelcome:
      if (env.welcome().heartbeat_ms() < 10 || env.welcome().heartbeat_ms() > 600000) {
        return fmt::format("welcome: heartbeat_ms = {}: expected 10..600000", env.welcome().heartbeat_ms());
      }
      return "";
    case Envelope::kReply:
    case Envelope::kDrain:
    case Envelope::kReregister:
      return "";
  }
  return "unknown message kind";
}

void poll(zmq::pollitem_t* items, size_t n, int timeout_ms) {
  try {
    zmq::poll(items, n, std::chrono::milliseconds(timeout_ms));
  } catch (const zmq::error_t& e) {
    if (e.num() != EINTR) throw;
    for (size_t i = 0; i < n; ++i) items[i].revents = 0;
  }
}

Envelope::KindCase peek_kind(const void* data, size_t size) {
  using google::protobuf::internal::WireFormatLite;
  if (size > kMaxMessageBytes) return Envelope::KIND_NOT_SET;
  google::protobuf::io::CodedInputStream in(static_cast<const uint8_t*>(data), static_cast<int>(size));
  static const auto* kind_oneof = Envelope::descriptor()->FindOneofByName("kind");
  auto kind = Envelope::KIND_NOT_SET;
  while (const uint32_t tag = in.ReadTag()) {
    const auto* field = Envelope::descriptor()->FindFieldByNumber(WireFormatLite::GetTagFieldNumber(tag));
    // As in parsing, the last member of the oneof on the wire is the one that counts.
    if (field && field->containing_oneof() == kind_oneof) kind = static_cast<Envelope::KindCase>(field->number());
    if (!WireFormatLite::SkipField(&in, tag)) return Envelope::KIND_NOT_SET;
  }
  return in.ConsumedEntireMessage() ? kind : Envelope::KIND_NOT_SET;
}

std::optional<Envelope> decode(const void* data, size_t size, std::string* error) {
  if (size > kMaxMessageBytes) {
    *error = fmt::format("message of {} bytes exceeds the limit of {} bytes", size, kMaxMessageBytes);
    return std::nullopt;
  }
  Envelope env;
  if (!env.ParseFromArray(data, static_cast<int>(size))) {
    *error = fmt::format("{} bytes that are not a protobuf Envelope", size);
    return std::nullopt;
  }
  sanitize_strings(&env);  // host names, reasons, log tails: valid UTF-8 from here on
  std::string why = validate(env);
  if (!why.empty()) {
    *error = kind_name(env) + " message rejected: " + why;
    return std::nullopt;
  }
  return env;
}

}  // namespace hylab::wire
