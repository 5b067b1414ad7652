// A database that cannot be written (read-only file, immutable attribute, read-only WAL
// files): opening it for writing is a clear error that says what to check, before SQLite
// falls back to a read-only connection; opening it to read still works.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "common/check.h"
#include "store/db.h"

namespace hylab::store {
namespace {

namespace fs = std::filesystem;

class DbAccessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("hylab_db_access_" + std::to_string(getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    path_ = (dir_ / "hylab.db").string();
    auto db = Db::open(path_);
    db->exec("CREATE TABLE t(x INTEGER)");
    db->exec("INSERT INTO t VALUES (7)");
  }
  void TearDown() override {
    for (const auto& f : immutable_) std::system(("chattr -i '" + f + "' 2>/dev/null").c_str());
    fs::remove_all(dir_);
  }
  // chattr +i needs CAP_LINUX_IMMUTABLE and a filesystem with attributes.
  bool make_immutable(const std::string& file) {
    if (std::system(("chattr +i '" + file + "' 2>/dev/null").c_str()) != 0) return false;
    immutable_.push_back(file);
    return true;
  }
  std::string open_error(const std::string& path) {
    try {
      Db::open(path);
    } catch (const Error& e) {
      return e.what();
    }
    return "opened";
  }
  fs::path dir_;
  std::string path_;
  std::vector<std::string> immutable_;
};

TEST_F(DbAccessTest, AnImmutableDatabaseIsAClearErrorAndStillReadable) {
  if (!make_immutable(path_)) GTEST_SKIP() << "chattr +i is not permitted here";
  const std::string e = open_error(path_);
  EXPECT_NE(e.find("cannot be opened for writing"), std::string::npos) << e;
  EXPECT_NE(e.find("immutable"), std::string::npos) << e;
  auto ro = Db::open(path_, /*read_only=*/true);
  auto st = ro->prepare("SELECT x FROM t");
  ASSERT_TRUE(st.step());
  EXPECT_EQ(st.int64(0), 7);
}

TEST_F(DbAccessTest, AnImmutableSharedMemoryFileIsAClearError) {
  const std::string shm = path_ + "-shm";
  { auto db = Db::open(path_); db->exec("INSERT INTO t VALUES (8)"); }
  if (!fs::exists(shm)) std::system(("touch '" + shm + "'").c_str());
  if (!make_immutable(shm)) GTEST_SKIP() << "chattr +i is not permitted here";
  const std::string e = open_error(path_);
  EXPECT_NE(e.find(shm + " cannot be opened for writing"), std::string::npos) << e;
}

TEST_F(DbAccessTest, AReadOnlyFileIsAClearError) {
  if (geteuid() == 0) GTEST_SKIP() << "root writes read-only files (see the immutable tests)";
  fs::permissions(path_, fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
  const std::string e = open_error(path_);
  EXPECT_NE(e.find("cannot be opened for writing"), std::string::npos) << e;
}

}  // namespace
}  // namespace hylab::store
