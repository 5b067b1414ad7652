// `hylab config keys` and "did you mean": names, defaults and help derived from
// proto/config.proto; the nearest-name rule.
#include "common/config_keys.h"

#include <gtest/gtest.h>

#include "common/run_config.h"
#include "common/suggest.h"

namespace hylab {
namespace {

const ConfigKeyDoc& doc(const std::string& name) {
  for (const auto& d : config_key_docs()) {
    if (d.name == name) return d;
  }
  throw std::runtime_error("no key " + name);
}

TEST(ConfigKeys, EveryFieldOfTheSchemaIsListedWithHelp) {
  const auto& docs = config_key_docs();
  ASSERT_EQ(docs.size(), static_cast<size_t>(RunConfig::descriptor()->field_count()));
  for (const auto& d : docs) {
    EXPECT_TRUE(is_config_key(d.name)) << d.name;
    // A new field without a comment in config.proto fails here: write one line of help.
    EXPECT_FALSE(d.help.empty()) << d.name << " has no comment in proto/config.proto";
    EXPECT_EQ(d.help.find('\n'), std::string::npos) << d.name;
  }
}

TEST(ConfigKeys, DefaultsTypesAndHelpComeFromTheProto) {
  EXPECT_EQ(doc("num_iterations").default_value, "-1");
  EXPECT_EQ(doc("num_iterations").type, "int64");
  EXPECT_NE(doc("num_iterations").help.find("explicit horizon"), std::string::npos);
  EXPECT_EQ(doc("mamba_dt_min").default_value, "0.001");
  EXPECT_EQ(doc("mamba_use_mlp").default_value, "false");
  EXPECT_EQ(doc("device").default_value, "auto");
  EXPECT_EQ(doc("block_pattern").type, "list of string");
  // A comment above the field and one after it are joined on one line.
  EXPECT_NE(doc("block_pattern").help.find("\"T*12,M*8\""), std::string::npos)
      << doc("block_pattern").help;
  EXPECT_NE(doc("depth").help.find("One-dial"), std::string::npos) << doc("depth").help;
  EXPECT_EQ(doc("probe_steps").default_value, "32");
}

TEST(Suggest, NearestNameWithinAFewEdits) {
  const std::vector<std::string> keys = config_key_names();
  EXPECT_EQ(nearest_name("num_iteration", keys), "num_iterations");
  EXPECT_EQ(nearest_name("--num-iteratoins", keys), "num_iterations");  // transposition
  EXPECT_EQ(nearest_name("DEVICE_BATCH_SIZ", keys), "device_batch_size");
  EXPECT_EQ(nearest_name("mamba_d_stat", keys), "mamba_d_state");
  EXPECT_EQ(nearest_name("warmdown", keys), "warmdown_ratio");  // the only key it begins
  EXPECT_EQ(nearest_name("zebra", keys), "");
  EXPECT_EQ(nearest_name("lr", keys), "");     // too short to guess
  EXPECT_EQ(nearest_name("depth", keys), "");  // a valid name is no typo
  EXPECT_EQ(edit_distance("abc", "acb"), 1);
  EXPECT_EQ(edit_distance("", "abc"), 3);
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3);
}

}  // namespace
}  // namespace hylab
