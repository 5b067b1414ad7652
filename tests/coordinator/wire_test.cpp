// Message validation at the boundary, key files, the allow-list and the ZAP decision.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <google/protobuf/wire_format_lite.h>
#include <nlohmann/json.hpp>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include "common/check.h"
#include "common/proto_log.h"
#include "wire/security.h"
#include "wire/wire.h"

namespace hylab::wire {
namespace {

namespace fs = std::filesystem;

proto::Envelope metrics_batch(int64_t trial, int64_t attempt, int64_t seq, int n) {
  proto::Envelope env;
  auto* b = env.mutable_metrics();
  b->set_trial_id(trial);
  b->set_attempt(attempt);
  b->set_seq(seq);
  for (int i = 0; i < n; ++i) {
    auto* m = b->add_metrics();
    m->set_step(i);
    m->set_name("train_loss");
    m->set_value(1.0);
  }
  return env;
}

std::optional<proto::Envelope> roundtrip(const proto::Envelope& env, std::string* error,
                                         const std::string& sender = "w1") {
  const std::string bytes = encode(env, sender);
  return decode(bytes.data(), bytes.size(), error);
}

TEST(Wire, ValidMessagesRoundTrip) {
  std::string error;
  auto env = roundtrip(metrics_batch(3, 1, 1, 10), &error);
  ASSERT_TRUE(env) << error;
  EXPECT_EQ(env->metrics().metrics_size(), 10);
  EXPECT_EQ(env->sender(), "w1");
  EXPECT_EQ(kind_name(*env), "metrics");
}

TEST(Wire, MalformedMessagesAreRejectedWithAReason) {
  std::string error;
  const std::string garbage = "\xff\xff\xff\xff this is not protobuf";
  EXPECT_FALSE(decode(garbage.data(), garbage.size(), &error));
  EXPECT_NE(error.find("not a protobuf Envelope"), std::string::npos) << error;

  proto::Envelope empty;
  EXPECT_FALSE(roundtrip(empty, &error));
  EXPECT_NE(error.find("no message kind"), std::string::npos) << error;

  EXPECT_FALSE(roundtrip(metrics_batch(0, 1, 1, 1), &error));
  EXPECT_NE(error.find("trial_id = 0"), std::string::npos) << error;
  EXPECT_FALSE(roundtrip(metrics_batch(1, 1, 0, 1), &error));
  EXPECT_NE(error.find("seq = 0"), std::string::npos) << error;
  EXPECT_FALSE(roundtrip(metrics_batch(1, 1, 1, kMaxMetricsPerBatch + 1), &error));
  EXPECT_NE(error.find("at most"), std::string::npos) << error;

  proto::Envelope hello;
  hello.mutable_hello()->set_worker_id("w1");
  hello.mutable_hello()->set_slots(0);
  EXPECT_FALSE(roundtrip(hello, &error));
  EXPECT_NE(error.find("slots = 0"), std::string::npos) << error;
  hello.mutable_hello()->set_slots(1);
  EXPECT_TRUE(roundtrip(hello, &error)) << error;
  EXPECT_FALSE(roundtrip(hello, &error, "someone-else"));
  EXPECT_NE(error.find("differs from the sender"), std::string::npos) << error;

  proto::Envelope assign;
  auto* a = assign.mutable_assign();
  a->set_trial_id(1);
  a->set_attempt(1);
  a->set_config_json("{}");
  a->set_run_dir("../../etc");
  a->add_slots(0);
  EXPECT_FALSE(roundtrip(assign, &error));
  EXPECT_NE(error.find("run_dir"), std::string::npos) << error;

  proto::Envelope fin;
  fin.mutable_finished()->set_trial_id(1);
  fin.mutable_finished()->set_attempt(1);
  EXPECT_FALSE(roundtrip(fin, &error));  // outcome unspecified
  EXPECT_NE(error.find("outcome"), std::string::npos) << error;

  proto::Envelope list;
  list.mutable_request()->set_list_workers(true);
  list.mutable_request()->set_page_size(-1);
  EXPECT_FALSE(roundtrip(list, &error));
  EXPECT_NE(error.find("page_size = -1"), std::string::npos) << error;
  list.mutable_request()->set_page_size(kMaxPageSize + 1);
  EXPECT_FALSE(roundtrip(list, &error));
  list.mutable_request()->set_page_size(kMaxPageSize);
  list.mutable_request()->set_page_token(std::string(1025, 'w'));
  EXPECT_FALSE(roundtrip(list, &error));
  EXPECT_NE(error.find("page_token"), std::string::npos) << error;
  list.mutable_request()->set_page_token("w" + std::string(512, 'f'));  // the hex of a 256-byte worker_id
  EXPECT_TRUE(roundtrip(list, &error)) << error;

  // Wrong protocol version.
  proto::Envelope hb;
  hb.mutable_heartbeat();
  hb.set_version(proto::PROTOCOL_VERSION_UNSPECIFIED);
  hb.set_sender("w1");
  const std::string bytes = hb.SerializeAsString();
  EXPECT_FALSE(decode(bytes.data(), bytes.size(), &error));
  EXPECT_NE(error.find("protocol version"), std::string::npos) << error;
}

TEST(Wire, OversizedMessagesAreRejectedBeforeParsing) {
  std::string big(kMaxMessageBytes + 1, 'x');
  std::string error;
  EXPECT_FALSE(decode(big.data(), big.size(), &error));
  EXPECT_NE(error.find("exceeds the limit"), std::string::npos) << error;
}

TEST(Wire, NonUtf8TextFromAPeerIsMadeValidAtTheBoundary) {
  // A worker's host name and a failure reason end up in the database and in JSON replies;
  // one invalid byte there used to break `hylab workers`, `sweep show` and
  // `results --format json` for good (nlohmann::json::dump throws on it).
  proto::Envelope hello;
  auto* h = hello.mutable_hello();
  h->set_worker_id("w1");
  h->set_slots(1);
  h->set_host("box\xff\xfe-1");
  h->add_gpus()->set_name("H200 \xc3(");
  std::string error;
  auto got = roundtrip(hello, &error);
  ASSERT_TRUE(got) << error;
  EXPECT_EQ(got->hello().host(), "box\xEF\xBF\xBD\xEF\xBF\xBD-1");  // one U+FFFD per bad byte
  EXPECT_EQ(got->hello().gpus(0).name(), "H200 \xEF\xBF\xBD(");
  EXPECT_NO_THROW((void)nlohmann::json({{"host", got->hello().host()}}).dump());

  proto::Envelope fin;
  auto* f = fin.mutable_finished();
  f->set_trial_id(3);
  f->set_attempt(1);
  f->set_outcome(proto::TRIAL_OUTCOME_FAILED);
  f->set_reason("exit 1: \xed\xa0\x80 surrogate, \xc0\xaf overlong, caf\xc3\xa9 ok");
  got = roundtrip(fin, &error);
  ASSERT_TRUE(got) << error;
  EXPECT_EQ(got->finished().reason(),
            "exit 1: \xEF\xBF\xBD surrogate, \xEF\xBF\xBD overlong, caf\xc3\xa9 ok");
  EXPECT_NO_THROW((void)nlohmann::json({{"reason", got->finished().reason()}}).dump());
}

// Issue 15: a build without NDEBUG has libprotobuf check every string field it parses and
// print one stderr line per invalid one, so a peer sending garbage grew the log without
// bound. With the handler installed, 10,000 such complaints give at most one burst of lines
// (through spdlog) and none on stderr. A Release build's parser does not make the check, so
// the test calls libprotobuf's checker directly, as a Debug build's wire.pb.cc does on every
// string it parses.
TEST(Wire, LibprotobufComplaintsAboutGarbageAreRateLimited) {
  limit_protobuf_logs();
  std::ostringstream captured;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(captured);
  auto previous = spdlog::default_logger();
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("capture", sink));
  const int64_t suppressed_before = protobuf_log_lines_suppressed();
  const std::string garbage = "box\xff\xfe-1";
  testing::internal::CaptureStderr();
  for (int i = 0; i < 10000; ++i) {
    EXPECT_FALSE(google::protobuf::internal::WireFormatLite::VerifyUtf8String(
        garbage.data(), static_cast<int>(garbage.size()), google::protobuf::internal::WireFormatLite::PARSE,
        "hylab.proto.Hello.host"));
  }
  const std::string err = testing::internal::GetCapturedStderr();
  spdlog::set_default_logger(previous);
  EXPECT_EQ(err.find("invalid UTF-8"), std::string::npos) << err.substr(0, 500);
  const std::string log = captured.str();
  const auto lines = std::count(log.begin(), log.end(), '\n');
  EXPECT_GE(lines, 1) << "the first complaints are still logged";
  EXPECT_LE(lines, 11) << log.substr(0, 2000);
  EXPECT_NE(log.find("String field 'hylab.proto.Hello.host' contains invalid UTF-8"), std::string::npos) << log;
  EXPECT_GE(protobuf_log_lines_suppressed() - suppressed_before, 10000 - lines);
}

TEST(Wire, InsecureServersListenOnLoopbackUnlessTold) {
  EXPECT_TRUE(is_loopback_endpoint("tcp://127.0.0.1:5555"));
  EXPECT_TRUE(is_loopback_endpoint("tcp://127.0.0.1:*"));
  EXPECT_TRUE(is_loopback_endpoint("tcp://localhost:5555"));
  EXPECT_TRUE(is_loopback_endpoint("tcp://[::1]:5555"));
  EXPECT_TRUE(is_loopback_endpoint("ipc:///tmp/hylab.sock"));
  EXPECT_FALSE(is_loopback_endpoint("tcp://*:5555"));
  EXPECT_FALSE(is_loopback_endpoint("tcp://0.0.0.0:5555"));
  EXPECT_FALSE(is_loopback_endpoint("tcp://10.0.0.7:5555"));
  EXPECT_FALSE(is_loopback_endpoint("tcp://eth0:5555"));
  EXPECT_FALSE(is_loopback_endpoint("tcp://127.0.0.1.example.org:5555"));
  Security sec;
  sec.insecure = true;
  EXPECT_NO_THROW(check_bind("tcp://127.0.0.1:*", sec));
  try {
    check_bind("tcp://*:5555", sec);
    ADD_FAILURE() << "an insecure bind to every interface was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--insecure_any_interface"), std::string::npos) << e.what();
  }
  sec.insecure_any_interface = true;
  EXPECT_NO_THROW(check_bind("tcp://*:5555", sec));
  Security curve;  // with keys any interface is fine
  EXPECT_NO_THROW(check_bind("tcp://*:5555", curve));
}

class KeysTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("hylab_keys_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(KeysTest, KeygenFilesRoundTripAndTheSecretFileIsPrivate) {
  const KeyPair kp = generate_keypair();
  EXPECT_TRUE(is_z85_key(kp.public_z85));
  EXPECT_TRUE(is_z85_key(kp.secret_z85));
  const std::string name = (dir_ / "sub" / "w1").string();
  write_keypair(kp, name);
  const KeyPair back = read_key_file(name + ".key");
  EXPECT_EQ(back.public_z85, kp.public_z85);
  EXPECT_EQ(back.secret_z85, kp.secret_z85);
  const KeyPair pub = read_key_file(name + ".pub");
  EXPECT_EQ(pub.public_z85, kp.public_z85);
  EXPECT_TRUE(pub.secret_z85.empty());
  EXPECT_EQ(fs::status(name + ".key").permissions() & fs::perms::group_read, fs::perms::none);
  EXPECT_THROW(write_keypair(generate_keypair(), name), Error);  // never overwrites a secret
}

TEST_F(KeysTest, AllowListFromFileOrFolder) {
  const KeyPair a = generate_keypair(), b = generate_keypair(), c = generate_keypair();
  write_keypair(a, (dir_ / "keys" / "a").string());
  write_keypair(b, (dir_ / "keys" / "b").string());
  AllowList dir_list = AllowList::load((dir_ / "keys").string());
  EXPECT_EQ(dir_list.size(), 2u);
  {
    std::ofstream f(dir_ / "allow.txt");
    f << "# workers\n" << c.public_z85 << "\n\npublic-key = \"" << a.public_z85 << "\"\n";
  }
  AllowList file_list = AllowList::load((dir_ / "allow.txt").string());
  EXPECT_EQ(file_list.size(), 2u);
  {
    std::ofstream f(dir_ / "bad.txt");
    f << "not-a-key\n";
  }
  try {
    AllowList::load((dir_ / "bad.txt").string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.txt:1"), std::string::npos) << e.what();
  }
}

// Z85 uses '=' too: a bare key with one is a key, not an assignment. (A key never starts
// with '#': the first character of a Z85 group encodes at most 2^32 / 85^4 < 83.)
TEST_F(KeysTest, BareKeysMayContainEquals) {
  KeyPair with_eq;
  for (int i = 0; i < 1000 && with_eq.public_z85.empty(); ++i) {
    const KeyPair k = generate_keypair();
    if (k.public_z85.find('=') != std::string::npos) with_eq = k;
  }
  ASSERT_FALSE(with_eq.public_z85.empty());
  {
    std::ofstream f(dir_ / "allow.txt");
    f << "# a comment\n" << with_eq.public_z85 << "\n";
  }
  EXPECT_EQ(AllowList::load((dir_ / "allow.txt").string()).size(), 1u);
  write_keypair(with_eq, (dir_ / "e").string());
  EXPECT_EQ(read_key_file((dir_ / "e.key").string()).public_z85, with_eq.public_z85);
  EXPECT_EQ(read_key_file((dir_ / "e.pub").string()).public_z85, with_eq.public_z85);
}

TEST_F(KeysTest, ZapAllowsKnownKeysAndRefusesOthers) {
  const KeyPair known = generate_keypair(), stranger = generate_keypair();
  AllowList allow;
  allow.add(known.public_z85);
  auto binary = [](const std::string& z85) {
    std::string out(32, '\0');
    zmq_z85_decode(reinterpret_cast<uint8_t*>(out.data()), z85.c_str());
    return out;
  };
  std::string log;
  auto r = zap_reply({"1.0", "7", "hylab", "127.0.0.1", "", "CURVE", binary(known.public_z85)}, allow, &log);
  ASSERT_EQ(r.size(), 6u);
  EXPECT_EQ(r[1], "7");
  EXPECT_EQ(r[2], "200");
  EXPECT_EQ(r[4], known.public_z85);
  EXPECT_TRUE(log.empty());
  r = zap_reply({"1.0", "8", "hylab", "10.0.0.9", "", "CURVE", binary(stranger.public_z85)}, allow, &log);
  EXPECT_EQ(r[2], "400");
  EXPECT_NE(log.find(stranger.public_z85), std::string::npos) << log;
  EXPECT_NE(log.find("10.0.0.9"), std::string::npos) << log;
  r = zap_reply({"1.0", "9", "hylab", "10.0.0.9", "", "NULL"}, allow, &log);
  EXPECT_EQ(r[2], "400");
  r = zap_reply({"garbage"}, allow, &log);
  EXPECT_EQ(r[2], "500");
}

}  // namespace
}  // namespace hylab::wire
