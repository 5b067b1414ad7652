#include "coordinator/inbox.h"

#include <algorithm>
#include <unordered_map>
#include <utility>

#include "wire/wire.h"

namespace hylab::coordinator {

void Inbox::push(Inbound m) {
  const bool urgent = wire::peek_kind(m.payload.data(), m.payload.size()) != proto::Envelope::kMetrics;
  urgent_ += urgent;
  queue_.push_back(Entry{std::move(m), urgent});
}

std::vector<Inbound> Inbox::next_batch() {
  const bool metrics_waiting = queue_.size() > urgent_;
  if (urgent_ > 0 && !(urgent_last_ && metrics_waiting)) {
    urgent_last_ = true;
    return take_urgent();
  }
  urgent_last_ = false;
  return take_oldest(bulk_);
}

std::vector<Inbound> Inbox::take_oldest(size_t n) {
  n = std::min(n, queue_.size());
  std::vector<Inbound> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    urgent_ -= queue_[i].urgent;
    out.push_back(std::move(queue_[i].m));
  }
  queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
  return out;
}

std::vector<Inbound> Inbox::take_urgent() {
  std::vector<Inbound> out;
  // Per peer, the position of its last urgent message: it and everything of that peer's
  // before it go now.
  std::unordered_map<std::string, size_t> last_urgent;
  for (size_t i = 0; i < queue_.size(); ++i) {
    if (queue_[i].urgent) last_urgent[queue_[i].m.routing_id] = i;
  }
  std::deque<Entry> rest;
  for (size_t i = 0; i < queue_.size(); ++i) {
    const auto it = last_urgent.find(queue_[i].m.routing_id);
    if (it != last_urgent.end() && i <= it->second) {
      out.push_back(std::move(queue_[i].m));
    } else {
      rest.push_back(std::move(queue_[i]));
    }
  }
  queue_ = std::move(rest);
  urgent_ = 0;
  return out;
}

}  // namespace hylab::coordinator
