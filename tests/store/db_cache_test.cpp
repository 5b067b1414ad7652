// Db::cached: the statements a connection keeps prepared for the coordinator's per-message
// writes. Each use starts afresh (reset, nothing bound), a schema change does not break a
// kept statement, and transactions through the kept BEGIN / COMMIT commit or roll back.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "common/check.h"
#include "store/db.h"

namespace hylab::store {
namespace {

namespace fs = std::filesystem;

class DbCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("hylab_db_cache_" + std::to_string(getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    path_ = (dir_ / "hylab.db").string();
    db_ = Db::open(path_);
    db_->exec("CREATE TABLE t(k INTEGER PRIMARY KEY, x INTEGER)");
  }
  void TearDown() override {
    db_.reset();
    fs::remove_all(dir_);
  }
  int64_t count(const std::string& where) {
    auto q = db_->prepare("SELECT COUNT(*) FROM t WHERE " + where);
    return q.step() ? q.int64(0) : -1;
  }
  fs::path dir_;
  std::string path_;
  std::unique_ptr<Db> db_;
};

TEST_F(DbCacheTest, OneStatementPerSqlTextThatComesWithNothingBound) {
  Stmt& ins = db_->cached("INSERT INTO t(k, x) VALUES(?, ?)");
  ins.bind(1, int64_t{1}).bind(2, int64_t{10}).run();
  Stmt& again = db_->cached("INSERT INTO t(k, x) VALUES(?, ?)");
  EXPECT_EQ(&ins, &again);
  // x of the first use is not bound any more: NULL.
  again.bind(1, int64_t{2}).run();
  EXPECT_EQ(count("k = 1 AND x = 10"), 1);
  EXPECT_EQ(count("k = 2 AND x IS NULL"), 1);
  EXPECT_NE(&db_->cached("SELECT x FROM t WHERE k = ?"), &ins);
}

TEST_F(DbCacheTest, AUseLeftBeforeTheLastRowStartsAgainFromTheFirst) {
  db_->exec("INSERT INTO t(k, x) VALUES (1, 10), (2, 20), (3, 30)");
  Stmt& q = db_->cached("SELECT x FROM t ORDER BY k");
  ASSERT_TRUE(q.step());
  ASSERT_TRUE(q.step());
  EXPECT_EQ(q.int64(0), 20);
  Stmt& q2 = db_->cached("SELECT x FROM t ORDER BY k");
  ASSERT_TRUE(q2.step());
  EXPECT_EQ(q2.int64(0), 10);
  q2.reset();
}

TEST_F(DbCacheTest, AKeptStatementOutlivesASchemaChange) {
  db_->cached("INSERT INTO t(k, x) VALUES(?, ?)").bind(1, int64_t{1}).bind(2, int64_t{1}).run();
  db_->exec("ALTER TABLE t ADD COLUMN y INTEGER NOT NULL DEFAULT 5");
  db_->exec("CREATE INDEX t_by_x ON t(x)");
  db_->cached("INSERT INTO t(k, x) VALUES(?, ?)").bind(1, int64_t{2}).bind(2, int64_t{2}).run();
  EXPECT_EQ(count("y = 5"), 2);
}

TEST_F(DbCacheTest, TransactionsCommitAndRollBackThroughKeptStatements) {
  {
    Tx tx(*db_);
    db_->cached("INSERT INTO t(k, x) VALUES(?, ?)").bind(1, int64_t{1}).bind(2, int64_t{1}).run();
    tx.commit();
  }
  {
    Tx tx(*db_);  // not committed: rolled back
    db_->cached("INSERT INTO t(k, x) VALUES(?, ?)").bind(1, int64_t{2}).bind(2, int64_t{2}).run();
  }
  {
    Tx tx(*db_);
    db_->cached("SAVEPOINT message").run();
    db_->cached("INSERT INTO t(k, x) VALUES(?, ?)").bind(1, int64_t{3}).bind(2, int64_t{3}).run();
    db_->exec("ROLLBACK TO message");
    db_->cached("RELEASE message").run();
    db_->cached("SAVEPOINT message").run();
    db_->cached("INSERT INTO t(k, x) VALUES(?, ?)").bind(1, int64_t{4}).bind(2, int64_t{4}).run();
    db_->cached("RELEASE message").run();
    tx.commit();
  }
  db_.reset();  // what another connection (a restarted coordinator) sees
  db_ = Db::open(path_);
  EXPECT_EQ(count("1"), 2);
  EXPECT_EQ(count("k IN (1, 4)"), 2);
}

TEST_F(DbCacheTest, BadSqlIsAnErrorNamingTheStatement) {
  try {
    db_->cached("SELECT nope FROM t");
    FAIL() << "prepared bad SQL";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("SELECT nope FROM t"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace hylab::store
