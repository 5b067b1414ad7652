// What the coordinator has read from its ROUTER socket and not yet handled, and the order it
// is handled in.
//
// A metrics batch frees no slot and changes no decision; any other message may (a Finished
// frees a slot, a Hello brings new ones, a client submits or cancels). Handled in arrival
// order, a message that frees a slot waits behind every metrics batch read before it, and
// the Assign that answers it goes out only when they are all stored and committed: after a
// stall (a WAL checkpoint's fsync) that is a whole backlog. So the next batch is:
//   - every waiting message that is not a metrics batch, each with the messages its peer
//     sent before it. A peer's messages keep their order (a worker's last metrics must be
//     stored before its Finished ends the attempt); different peers' messages have none to
//     keep: the ROUTER interleaves them anyway;
//   - when there is none of those, or the batch before was such a batch and metrics are
//     waiting (so that a steady stream of heartbeats cannot starve them), the oldest
//     `bulk` messages.
// So a freed slot waits for at most the batch in hand and its own. A bulk batch holds at most
// `bulk` messages; an urgent one every urgent message waiting (with their peers' earlier
// ones), which in a registration wave can be hundreds (471 in one 16 ms iteration at 1,000
// workers, session 11).
#pragma once

#include <cstddef>
#include <deque>
#include <string>
#include <vector>

namespace hylab::coordinator {

// One message as it came off the ROUTER socket.
struct Inbound {
  std::string routing_id;
  bool delimiter = false;
  std::string user_id;     // the CurveZMQ public key (Z85) of the peer; empty when insecure
  std::string payload;     // one encoded Envelope
};

class Inbox {
 public:
  explicit Inbox(size_t bulk) : bulk_(bulk < 1 ? 1 : bulk) {}

  void push(Inbound m);
  size_t size() const { return queue_.size(); }
  bool empty() const { return queue_.empty(); }
  // Whether anything but metrics batches waits.
  bool has_urgent() const { return urgent_ > 0; }

  // The messages to handle next (see above), removed from the inbox; empty when it is.
  std::vector<Inbound> next_batch();

 private:
  std::vector<Inbound> take_urgent();
  std::vector<Inbound> take_oldest(size_t n);

  struct Entry {
    Inbound m;
    bool urgent;  // anything but a metrics batch (wire::peek_kind)
  };
  std::deque<Entry> queue_;
  size_t urgent_ = 0;         // entries with urgent set
  bool urgent_last_ = false;  // the last batch was take_urgent()'s
  size_t bulk_;
};

}  // namespace hylab::coordinator
