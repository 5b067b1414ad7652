// The order the coordinator handles what it has read (coordinator/inbox.h), and the peek at
// an encoded Envelope's kind it rests on (wire::peek_kind).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "coordinator/inbox.h"
#include "wire/wire.h"

namespace hylab::coordinator {
namespace {

proto::Envelope metrics(int64_t seq) {
  proto::Envelope env;
  auto* b = env.mutable_metrics();
  b->set_trial_id(1);
  b->set_attempt(1);
  b->set_seq(seq);
  auto* m = b->add_metrics();
  m->set_step(seq);
  m->set_name("train_loss");
  m->set_value(1.0);
  return env;
}

proto::Envelope finished(int64_t trial) {
  proto::Envelope env;
  env.mutable_finished()->set_trial_id(trial);
  env.mutable_finished()->set_attempt(1);
  return env;
}

proto::Envelope heartbeat() {
  proto::Envelope env;
  env.mutable_heartbeat();
  return env;
}

// A message from `peer`, tagged in its sender field so the test can tell them apart.
Inbound from(const std::string& peer, proto::Envelope env, const std::string& tag) {
  return Inbound{peer, false, "", wire::encode(std::move(env), tag)};
}

std::vector<std::string> tags(const std::vector<Inbound>& batch) {
  std::vector<std::string> out;
  for (const auto& m : batch) {
    proto::Envelope env;
    EXPECT_TRUE(env.ParseFromString(m.payload));
    out.push_back(env.sender());
  }
  return out;
}

TEST(PeekKind, ReadsTheKindWithoutParsing) {
  EXPECT_EQ(wire::peek_kind(wire::encode(metrics(3), "w").data(), wire::encode(metrics(3), "w").size()),
            proto::Envelope::kMetrics);
  const std::string f = wire::encode(finished(2), "w");
  EXPECT_EQ(wire::peek_kind(f.data(), f.size()), proto::Envelope::kFinished);
  proto::Envelope rereg;
  rereg.set_reregister(true);
  const std::string r = wire::encode(rereg, "c");
  EXPECT_EQ(wire::peek_kind(r.data(), r.size()), proto::Envelope::kReregister);
}

TEST(PeekKind, SaysNotSetForWhatItCannotRead) {
  proto::Envelope none;
  none.set_sender("w");
  const std::string n = none.SerializeAsString();
  EXPECT_EQ(wire::peek_kind(n.data(), n.size()), proto::Envelope::KIND_NOT_SET);
  const std::string junk = "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff";
  EXPECT_EQ(wire::peek_kind(junk.data(), junk.size()), proto::Envelope::KIND_NOT_SET);
  const std::string m = wire::encode(metrics(1), "w");
  EXPECT_EQ(wire::peek_kind(m.data(), m.size() - 3), proto::Envelope::KIND_NOT_SET);  // truncated
  EXPECT_EQ(wire::peek_kind(m.data(), 0), proto::Envelope::KIND_NOT_SET);
}

TEST(PeekKind, TheLastMemberOfTheOneofCountsAsInParsing) {
  // Two kinds on the wire (a peer can send that): the parser keeps the last, and so does the peek.
  const std::string both = wire::encode(finished(1), "w") + wire::encode(metrics(1), "w");
  proto::Envelope parsed;
  ASSERT_TRUE(parsed.ParseFromString(both));
  EXPECT_EQ(parsed.kind_case(), proto::Envelope::kMetrics);
  EXPECT_EQ(wire::peek_kind(both.data(), both.size()), proto::Envelope::kMetrics);
}

TEST(Inbox, MetricsAloneGoInArrivalOrderInBatchesOfBulk) {
  Inbox inbox(2);
  for (int i = 0; i < 5; ++i) inbox.push(from("w" + std::to_string(i % 2), metrics(i), "m" + std::to_string(i)));
  EXPECT_EQ(tags(inbox.next_batch()), (std::vector<std::string>{"m0", "m1"}));
  EXPECT_EQ(tags(inbox.next_batch()), (std::vector<std::string>{"m2", "m3"}));
  EXPECT_EQ(tags(inbox.next_batch()), (std::vector<std::string>{"m4"}));
  EXPECT_TRUE(inbox.empty());
  EXPECT_TRUE(inbox.next_batch().empty());
}

TEST(Inbox, AFinishedGoesFirstWithItsPeersEarlierMessagesInOrder) {
  Inbox inbox(100);
  inbox.push(from("a", metrics(1), "a1"));
  inbox.push(from("b", metrics(1), "b1"));
  inbox.push(from("a", metrics(2), "a2"));
  inbox.push(from("c", metrics(1), "c1"));
  inbox.push(from("a", finished(7), "a-finished"));
  inbox.push(from("a", metrics(3), "a3"));  // after its Finished: waits with the others
  inbox.push(from("b", metrics(2), "b2"));
  // a's Finished, with a's two batches before it (its last metrics are stored first).
  EXPECT_EQ(tags(inbox.next_batch()), (std::vector<std::string>{"a1", "a2", "a-finished"}));
  EXPECT_EQ(inbox.size(), 4u);
  // Then the rest in arrival order.
  EXPECT_EQ(tags(inbox.next_batch()), (std::vector<std::string>{"b1", "c1", "a3", "b2"}));
}

TEST(Inbox, HeartbeatsCannotStarveMetrics) {
  // A heartbeat is not a metrics batch: it may free or take slots (it reconciles what a worker
  // holds). But when one arrives between every two batches, metrics still get every other turn.
  Inbox inbox(2);
  inbox.push(from("a", metrics(1), "a1"));
  inbox.push(from("b", metrics(1), "b1"));
  inbox.push(from("c", metrics(1), "c1"));
  inbox.push(from("d", heartbeat(), "d-hb"));
  EXPECT_EQ(tags(inbox.next_batch()), (std::vector<std::string>{"d-hb"}));
  inbox.push(from("e", heartbeat(), "e-hb"));
  EXPECT_EQ(tags(inbox.next_batch()), (std::vector<std::string>{"a1", "b1"}));  // metrics' turn
  EXPECT_EQ(tags(inbox.next_batch()), (std::vector<std::string>{"e-hb"}));
  EXPECT_EQ(tags(inbox.next_batch()), (std::vector<std::string>{"c1"}));
  EXPECT_TRUE(inbox.empty());
}

TEST(Inbox, APrefixTakesTheUrgentMessagesInItAlong) {
  // When the oldest `bulk` messages include an urgent one it goes with them (a prefix keeps
  // every peer's order), and is not taken twice.
  Inbox inbox(3);
  inbox.push(from("a", metrics(1), "a1"));
  inbox.push(from("z", heartbeat(), "z-hb"));
  EXPECT_EQ(tags(inbox.next_batch()), (std::vector<std::string>{"z-hb"}));
  inbox.push(from("b", finished(3), "b-finished"));
  inbox.push(from("c", metrics(1), "c1"));
  // After an urgent batch with metrics waiting: the oldest three, b's Finished among them.
  EXPECT_EQ(tags(inbox.next_batch()), (std::vector<std::string>{"a1", "b-finished", "c1"}));
  EXPECT_TRUE(inbox.empty());
  inbox.push(from("d", metrics(1), "d1"));
  EXPECT_EQ(tags(inbox.next_batch()), (std::vector<std::string>{"d1"}));
}

TEST(Inbox, UnreadableMessagesAreNotHeldBack) {
  // What peek_kind cannot read goes with the urgent ones: decode() then drops and logs it.
  Inbox inbox(10);
  inbox.push(from("a", metrics(1), "a1"));
  inbox.push(Inbound{"x", false, "", "not protobuf \xff\xff"});
  const auto batch = inbox.next_batch();
  ASSERT_EQ(batch.size(), 1u);
  EXPECT_EQ(batch[0].routing_id, "x");
}

}  // namespace
}  // namespace hylab::coordinator
