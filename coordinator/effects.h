// What a book's handler decides besides its own state: the messages to send. The books
// (worker_book.h, trial_book.h, sweep_book.h) never touch a socket; they append here, and
// Coordinator::Impl::step returns the messages only once the iteration's transaction is
// committed, so an ack always means "stored".
//
// Rows are not effects: the books write them through the store inside step()'s transaction
// (coordinator_impl.h says why).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "proto/wire.pb.h"

namespace hylab::coordinator {

using AttemptKey = std::pair<int64_t, int64_t>;  // (trial_id, attempt)

// One message for the ROUTER socket, already encoded.
struct Outgoing {
  std::string routing_id;
  bool delimiter = false;  // REQ peers want an empty frame before the payload
  std::string payload;
};

struct Effects {
  std::vector<Outgoing> send;

  // Encodes `env` as the coordinator's and queues it for `routing_id`.
  void to(const std::string& routing_id, proto::Envelope env, bool delimiter = false);
  // Asks a worker to stop an attempt (it answers with a Finished, or nothing if it has none).
  void cancel(const std::string& worker_id, int64_t trial_id, int64_t attempt, const std::string& reason);
  void append(Effects&& other);
};

}  // namespace hylab::coordinator
