#include "coordinator/effects.h"

#include <iterator>

#include "wire/wire.h"

namespace hylab::coordinator {

void Effects::to(const std::string& routing_id, proto::Envelope env, bool delimiter) {
  send.push_back({routing_id, delimiter, wire::encode(std::move(env), "coordinator")});
}

void Effects::cancel(const std::string& worker_id, int64_t trial_id, int64_t attempt, const std::string& reason) {
  proto::Envelope env;
  auto* c = env.mutable_cancel();
  c->set_trial_id(trial_id);
  c->set_attempt(attempt);
  c->set_reason(reason);
  to(worker_id, std::move(env));
}

void Effects::append(Effects&& other) {
  if (send.empty()) {
    send = std::move(other.send);
    return;
  }
  send.insert(send.end(), std::make_move_iterator(other.send.begin()), std::make_move_iterator(other.send.end()));
  other.send.clear();
}

}  // namespace hylab::coordinator
