// The protocol at the boundary: encoding Envelopes (proto/wire.proto) into one ZeroMQ frame,
// and validating what arrives before anything else looks at it.
//
// Shared by the coordinator, the worker and the clients (library hylab_wire). A message that
// fails validation is dropped and logged by the caller; nothing here throws on bad input.
#pragma once

#include <cstddef>
#include <optional>
#include <string>

#include <zmq.hpp>

#include "proto/wire.pb.h"

namespace hylab::wire {

using proto::Envelope;

// Larger frames are refused by libzmq (ZMQ_MAXMSGSIZE, the peer is disconnected) and by
// decode(). A metrics batch is capped well below (kMaxMetricsPerBatch).
constexpr size_t kMaxMessageBytes = 8u << 20;
constexpr int kMaxMetricsPerBatch = 2000;
constexpr int kMaxTrialsPerSubmit = 100000;
// Rows of one page of a client list (ClientRequest.page_size); the byte limit applies too.
constexpr int kMaxPageSize = 100000;

// Serialises with the current protocol version and the given sender.
std::string encode(Envelope env, const std::string& sender);

// Parses and validates one frame. On failure returns nullopt and says why in *error
// (size, not a protobuf Envelope, wrong version, no kind, a missing or out-of-range field).
// Every string field of the result is valid UTF-8 (invalid bytes become U+FFFD).
std::optional<Envelope> decode(const void* data, size_t size, std::string* error);

// Field checks per message kind (ids positive, names non-empty, sizes bounded, enums known).
// Returns "" when valid, else the reason.
std::string validate(const Envelope& env);

// The kind of an encoded Envelope, read from its top-level field tags without parsing it
// (no allocation): for ordering what to handle first. KIND_NOT_SET when the bytes do not say
// (not protobuf, no kind); decode() has the last word on what a frame is.
Envelope::KindCase peek_kind(const void* data, size_t size);

// "hello", "metrics", ... for logs.
std::string kind_name(const Envelope& env);

// zmq::poll that returns (nothing ready) when a signal interrupts it, so SIGTERM/SIGINT
// handlers can set their flag and the loop sees it.
void poll(zmq::pollitem_t* items, size_t n, int timeout_ms);

}  // namespace hylab::wire
