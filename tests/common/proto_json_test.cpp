// The fast JSON paths of common/proto_json.h against the library they stand in for
// (google::protobuf::util): the same text out, the same message (or the same error) in, on
// random configs, hand-picked edge cases and mutated JSON.
#include "common/proto_json.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/run_config.h"

namespace hylab {
namespace {

namespace pb = google::protobuf;
using FD = pb::FieldDescriptor;

pb::util::JsonPrintOptions compact() {
  pb::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;  // as config_to_json
  return o;
}

// A RunConfig with a random subset of fields set to values from awkward pools; half of them
// only from values the fast path writes itself (the first entries of the pools).
RunConfig random_config(std::mt19937_64& rng) {
  const bool plain = rng() % 2 == 0;
  const std::vector<double> doubles = {0.0, -0.0, 1e-7, 0.1, 1.0 / 3, 2.5, -17.25, 1e300, 5e-324, 123456789.123,
                                       1e21, 1e-5, std::nan(""), std::numeric_limits<double>::infinity()};
  const std::vector<std::string> strings = {"", "data/default", "T*2,M*2", "a\"quote", "back\\slash", "x<y>",
                                            "caf\xc3\xa9", "tab\there", "amp&", "eq=", "it's", "\x7f", "~!@#$%^*()"};
  RunConfig c;
  const pb::Descriptor* d = c.GetDescriptor();
  const pb::Reflection* r = c.GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const FD* f = d->field(i);
    if (rng() % 3 == 0) continue;
    const int n = f->is_repeated() ? static_cast<int>(rng() % 4) : 1;
    for (int k = 0; k < n; ++k) {
      switch (f->cpp_type()) {
        case FD::CPPTYPE_INT32: {
          const int32_t v = rng() % 4 == 0 ? std::numeric_limits<int32_t>::min() + static_cast<int32_t>(rng() % 3)
                                           : static_cast<int32_t>(rng());
          f->is_repeated() ? r->AddInt32(&c, f, v) : r->SetInt32(&c, f, v);
          break;
        }
        case FD::CPPTYPE_INT64: {
          const int64_t v = rng() % 4 == 0 ? std::numeric_limits<int64_t>::max() : static_cast<int64_t>(rng());
          f->is_repeated() ? r->AddInt64(&c, f, v) : r->SetInt64(&c, f, v);
          break;
        }
        case FD::CPPTYPE_DOUBLE: {
          double v = doubles[rng() % (plain ? 12 : doubles.size())];
          if (rng() % 3 == 0) {  // any finite bit pattern
            const uint64_t bits = rng();
            std::memcpy(&v, &bits, sizeof v);
            if (!std::isfinite(v)) v = 0.5;
          }
          f->is_repeated() ? r->AddDouble(&c, f, v) : r->SetDouble(&c, f, v);
          break;
        }
        case FD::CPPTYPE_BOOL:
          f->is_repeated() ? r->AddBool(&c, f, rng() % 2) : r->SetBool(&c, f, rng() % 2);
          break;
        case FD::CPPTYPE_STRING: {
          const std::string v = strings[rng() % (plain ? 3 : strings.size())];
          f->is_repeated() ? r->AddString(&c, f, v) : r->SetString(&c, f, v);
          break;
        }
        default:
          break;
      }
    }
  }
  return c;
}

// Both parsers on one input: the same success and the same message, or the same error.
void expect_same_parse(const std::string& json) {
  RunConfig slow, fast;
  const auto a = pb::util::JsonStringToMessage(json, &slow, pb::util::JsonParseOptions());
  const auto b = json_to_message(json, &fast, pb::util::JsonParseOptions());
  ASSERT_EQ(a.ok(), b.ok()) << json << "\nlibrary: " << a.ToString() << "\nours: " << b.ToString();
  if (a.ok()) {
    EXPECT_EQ(slow.SerializeAsString(), fast.SerializeAsString()) << json;
  } else {
    EXPECT_EQ(a.ToString(), b.ToString()) << json;
  }
}

TEST(ProtoJson, PrintsWhatTheLibraryPrints) {
  std::mt19937_64 rng(7);
  int fast_hits = 0;
  for (int i = 0; i < 2000; ++i) {
    const RunConfig c = random_config(rng);
    std::string want, got, fast;
    const auto a = pb::util::MessageToJsonString(c, &want, compact());
    const auto b = message_to_json(c, &got, compact());
    ASSERT_EQ(a.ok(), b.ok());
    ASSERT_EQ(want, got) << c.ShortDebugString();
    if (message_to_json_fast(c, &fast)) {
      ++fast_hits;
      ASSERT_EQ(want, fast);
    }
  }
  EXPECT_GT(fast_hits, 500) << "the pools should leave many configs to the fast path";
  // The resolved configs that sweeps hash and store take the fast path.
  RunConfig base;
  base.set_depth(4);
  base.add_block_pattern("T*2,M*2");
  std::string fast;
  EXPECT_TRUE(message_to_json_fast(resolve_config(base), &fast));
}

TEST(ProtoJson, ParsesWhatTheLibraryParses) {
  std::mt19937_64 rng(11);
  std::vector<std::string> texts;
  for (int i = 0; i < 300; ++i) {
    std::string s;
    (void)pb::util::MessageToJsonString(random_config(rng), &s, compact());
    texts.push_back(s);
  }
  for (const auto& t : texts) expect_same_parse(t);
  // Edge cases: each must be decided as the library decides it.
  for (const char* t : {
           "{}", "", "[]", "null", "{\"depth\": 4}", "{\"depth\": 4.0}", "{\"depth\": \"4\"}", "{\"depth\": null}",
           "{\"depth\": 2147483648}", "{\"depth\": -2147483648}", "{\"depth\": -2147483649}", "{\"depth\": true}",
           "{\"seed\": \"007\"}", "{\"seed\": \"+5\"}", "{\"seed\": \"-0\"}", "{\"seed\": 5}", "{\"seed\": \"-9223372036854775808\"}",
           "{\"seed\": \"9223372036854775808\"}", "{\"seed\": 9223372036854775808}", "{\"seed\": 1e3}",
           "{\"matrix_lr\": 1}", "{\"matrix_lr\": \"0.5\"}", "{\"matrix_lr\": \"NaN\"}", "{\"matrix_lr\": 1e400}",
           "{\"matrix_lr\": -0.0}", "{\"matrix_lr\": 18446744073709551615}", "{\"matrixLr\": 0.5}",
           "{\"name\": \"a\\u0000b\"}", "{\"name\": \"caf\xc3\xa9\"}", "{\"name\": \"bad \xff\"}", "{\"name\": 5}",
           "{\"block_pattern\": [\"T\", \"M\"]}", "{\"block_pattern\": \"T\"}", "{\"block_pattern\": [1]}",
           "{\"block_pattern\": []}", "{\"depth\": 2, \"depth\": 3}", "{\"nope\": 1}", "{\"depth\": 4} x",
           "{\"depth\": {\"a\": 1}}", "{\"deterministic\": \"true\"}", "{\"deterministic\": 1}"}) {
    expect_same_parse(t);
  }
  // Mutated JSON, as a fuzzer would send it.
  for (int i = 0; i < 2000; ++i) {
    std::string s = texts[rng() % texts.size()];
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits && !s.empty(); ++e) {
      const size_t at = rng() % s.size();
      switch (rng() % 3) {
        case 0: s[at] = "0123456789\"{}[],:-.eE\\ atn"[rng() % 26]; break;
        case 1: s.erase(at, 1 + rng() % 4); break;
        default: s.insert(at, s.substr(rng() % s.size(), rng() % 8)); break;
      }
    }
    expect_same_parse(s);
  }
}

}  // namespace
}  // namespace hylab
