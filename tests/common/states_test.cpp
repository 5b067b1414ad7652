// The words of the states (common/states.h): the database and users' scripts hold them, so
// each is pinned here, and every enum value round-trips through its word.
#include "common/states.h"

#include <gtest/gtest.h>

#include <google/protobuf/descriptor.h>

#include <set>
#include <string>

#include "common/check.h"

namespace hylab {
namespace {

// Every value but UNSPECIFIED (and its aliases) of an enum round-trips; the words are unique.
template <typename E, typename Parse>
void round_trips(const google::protobuf::EnumDescriptor* d, Parse parse) {
  std::set<std::string> words;
  for (int i = 0; i < d->value_count(); ++i) {
    const auto e = static_cast<E>(d->value(i)->number());
    if (d->value(i)->number() == 0) {
      EXPECT_THROW(to_string(e), Error) << d->value(i)->name();
      continue;
    }
    const std::string w = to_string(e);
    EXPECT_EQ(parse(w), e) << w;
    EXPECT_TRUE(words.insert(w).second) << "two values share the word " << w;
  }
}

TEST(States, EveryValueRoundTripsThroughItsWord) {
  round_trips<proto::TrialState>(proto::TrialState_descriptor(), parse_trial_state);
  round_trips<proto::AttemptState>(proto::AttemptState_descriptor(), parse_attempt_state);
  round_trips<proto::SweepState>(proto::SweepState_descriptor(), parse_sweep_state);
  round_trips<proto::WorkerState>(proto::WorkerState_descriptor(), parse_worker_state);
}

TEST(States, TheStoredWordsAreTheOnesUsersSee) {
  EXPECT_EQ(trial_state_list(), "pending, running, succeeded, failed, diverged, oom, cancelled, stopped");
  EXPECT_EQ(to_string(proto::SWEEP_STATE_RUNNING), "running");
  EXPECT_EQ(to_string(proto::SWEEP_STATE_COMPLETED), "completed");
  EXPECT_EQ(to_string(proto::SWEEP_STATE_CANCELLED), "cancelled");
  EXPECT_EQ(to_string(proto::SWEEP_STATE_LOCAL), "local");
  EXPECT_EQ(to_string(proto::WORKER_STATE_ALIVE), "alive");
  EXPECT_EQ(to_string(proto::WORKER_STATE_DRAINING), "draining");
  EXPECT_EQ(to_string(proto::WORKER_STATE_LOST), "lost");
  EXPECT_EQ(to_string(proto::WORKER_STATE_DRAINED), "drained");
  EXPECT_EQ(to_string(proto::ATTEMPT_STATE_PREEMPTED), "preempted");
  EXPECT_EQ(to_string(proto::ATTEMPT_STATE_ABANDONED), "abandoned");
}

TEST(States, AnUnknownWordIsAnErrorThatListsTheKnownOnes) {
  try {
    parse_trial_state("exploded");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("\"exploded\" is not a trial state"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(trial_state_list()), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_sweep_state(""), Error);
  EXPECT_THROW(parse_worker_state("Alive"), Error);  // exact words only
  proto::TrialState s = proto::TRIAL_STATE_RUNNING;
  EXPECT_FALSE(try_parse_trial_state("nope", &s));
  EXPECT_EQ(s, proto::TRIAL_STATE_RUNNING);
  EXPECT_TRUE(try_parse_trial_state("oom", &s));
  EXPECT_EQ(s, proto::TRIAL_STATE_OOM);
}

TEST(States, FinalAndResultStates) {
  EXPECT_FALSE(is_final(proto::TRIAL_STATE_PENDING));
  EXPECT_FALSE(is_final(proto::TRIAL_STATE_RUNNING));
  EXPECT_FALSE(is_final(proto::TRIAL_STATE_UNSPECIFIED));
  for (auto s : {proto::TRIAL_STATE_SUCCEEDED, proto::TRIAL_STATE_FAILED, proto::TRIAL_STATE_DIVERGED,
                 proto::TRIAL_STATE_OOM, proto::TRIAL_STATE_CANCELLED, proto::TRIAL_STATE_STOPPED}) {
    EXPECT_TRUE(is_final(s)) << to_string(s);
  }
  EXPECT_TRUE(is_result(proto::TRIAL_STATE_STOPPED));
  EXPECT_TRUE(is_result(proto::TRIAL_STATE_OOM));
  EXPECT_FALSE(is_result(proto::TRIAL_STATE_FAILED));
  EXPECT_FALSE(is_result(proto::TRIAL_STATE_CANCELLED));
}

TEST(States, HowAnAttemptEnded) {
  EXPECT_EQ(attempt_state(proto::TRIAL_OUTCOME_BAD_CONFIG), proto::ATTEMPT_STATE_FAILED);
  EXPECT_EQ(attempt_state(proto::TRIAL_OUTCOME_PREEMPTED), proto::ATTEMPT_STATE_PREEMPTED);
  EXPECT_EQ(attempt_state(proto::TRIAL_OUTCOME_LOST), proto::ATTEMPT_STATE_LOST);
  EXPECT_EQ(attempt_state(proto::TRIAL_OUTCOME_SUCCEEDED), proto::ATTEMPT_STATE_SUCCEEDED);
  EXPECT_EQ(attempt_state(proto::TRIAL_STATE_STOPPED), proto::ATTEMPT_STATE_STOPPED);
  EXPECT_EQ(attempt_state(proto::TRIAL_STATE_CANCELLED), proto::ATTEMPT_STATE_CANCELLED);
}

TEST(States, TrainerExitStatusesAreTheDocumentedOnes) {
  EXPECT_EQ(proto::TRAINER_EXIT_OK, 0);
  EXPECT_EQ(proto::TRAINER_EXIT_FAILED, 1);
  EXPECT_EQ(proto::TRAINER_EXIT_BAD_CONFIG, 2);
  EXPECT_EQ(proto::TRAINER_EXIT_DIVERGED, 3);
  EXPECT_EQ(proto::TRAINER_EXIT_OOM, 4);
  EXPECT_EQ(proto::TRAINER_EXIT_INTERRUPTED, 128 + 2);   // SIGINT
  EXPECT_EQ(proto::TRAINER_EXIT_TERMINATED, 128 + 15);   // SIGTERM
}

}  // namespace
}  // namespace hylab
