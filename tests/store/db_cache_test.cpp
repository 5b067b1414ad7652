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

// Writes `pages` pages' worth of rows in one transaction (4 KiB pages, ~4 KiB rows).
void write_pages(Db& db, int first_key, int pages) {
  Tx tx(db);
  auto& ins = db.cached("INSERT INTO t(k, x) VALUES(?, zeroblob(4000))");
  for (int i = 0; i < pages; ++i) ins.bind(1, first_key + i).run();
  tx.commit();
}

int64_t wal_bytes(const std::string& path) {
  std::error_code ec;
  const auto n = fs::file_size(path + "-wal", ec);
  return ec ? 0 : static_cast<int64_t>(n);
}

TEST_F(DbCacheTest, ManualCheckpointsLeaveTheWalToTheOwner) {
  // SQLite's own checkpoint would have run inside the commits past 1,000 pages (and started
  // the WAL over); in manual mode the WAL only grows and its pages are counted.
  db_->manual_checkpoints();
  EXPECT_EQ(db_->wal_pages(), 0);
  for (int i = 0; i < 6; ++i) write_pages(*db_, 1 + 300 * i, 300);
  EXPECT_GE(db_->wal_pages(), 1800);
  EXPECT_GE(wal_bytes(path_), 1800 * 4096);
  {
    // What another connection reads meanwhile comes from the WAL.
    auto other = Db::open(path_, /*read_only=*/true);
    auto q = other->prepare("SELECT COUNT(*) FROM t");
    ASSERT_TRUE(q.step());
    EXPECT_EQ(q.int64(0), 1800);
  }
  db_->checkpoint();
  EXPECT_EQ(db_->wal_pages(), 0);
  // The checkpoint caught up, so the next write starts the WAL over: a few pages, not 1,800+.
  write_pages(*db_, 5000, 3);
  EXPECT_GT(db_->wal_pages(), 0);
  EXPECT_LT(db_->wal_pages(), 20);
  db_.reset();
  db_ = Db::open(path_);
  EXPECT_EQ(count("1"), 1803);
}

TEST_F(DbCacheTest, ACheckpointAReaderHoldsBackLeavesThePagesCounted) {
  db_->manual_checkpoints();
  write_pages(*db_, 1, 50);
  auto other = Db::open(path_, /*read_only=*/true);
  {
    auto snapshot = other->prepare("SELECT k FROM t ORDER BY k");
    ASSERT_TRUE(snapshot.step());  // a read transaction open on the WAL as it is now
    write_pages(*db_, 100, 50);
    db_->checkpoint();  // cannot copy past the reader's snapshot: the WAL cannot start over
    EXPECT_GE(db_->wal_pages(), 100);
    write_pages(*db_, 200, 10);
    EXPECT_GE(db_->wal_pages(), 110);  // counted on, as SQLite's own rule would
  }
  db_->checkpoint();  // the reader is gone
  EXPECT_EQ(db_->wal_pages(), 0);
  write_pages(*db_, 300, 2);
  EXPECT_LT(db_->wal_pages(), 10);
}

}  // namespace
}  // namespace hylab::store
