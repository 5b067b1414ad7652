// Many processes open one new database file at the same moment and write to it, as when
// several `hylab train --db F` runs start together: none may fail with "database is locked",
// and every row must arrive. Real processes (fork), released together through a pipe.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/check.h"
#include "store/db.h"
#include "store/local_run.h"
#include "store/store.h"

namespace hylab::store {
namespace {

namespace fs = std::filesystem;

constexpr int kProcesses = 8;
constexpr int kSteps = 5;   // metric writes per process, two points each
constexpr int kRounds = 4;  // new files per test: a collision is likely, not certain, per round

class ConcurrentOpenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("hylab_concurrent_open_" + std::to_string(getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    RunConfig cfg;
    cfg.set_depth(2);
    cfg.add_block_pattern("T,M");
    cfg.set_max_seq_len(32);
    cfg.set_name("tiny");
    resolved_ = resolve_config(cfg);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A path no file has yet, for the next round.
  void new_db_path(int round) { db_path_ = (dir_ / ("hylab-" + std::to_string(round) + ".db")).string(); }
  std::string err_path(int i) const { return db_path_ + ".child-" + std::to_string(i) + ".err"; }

  // Runs body(i) in kProcesses children that block on one pipe until all are forked, then
  // start together. A child exits 0 when body returns, 1 (its error in err_path(i)) when it
  // throws. Expects every child to exit 0.
  template <typename Body>
  void run_together(Body body) {
    int gate[2];
    ASSERT_EQ(pipe(gate), 0);
    std::fflush(nullptr);  // children must not flush the parent's buffered output again
    std::vector<pid_t> pids;
    for (int i = 0; i < kProcesses; ++i) {
      const pid_t pid = fork();
      ASSERT_GE(pid, 0) << "fork failed";
      if (pid == 0) {
        close(gate[1]);
        char c;
        while (read(gate[0], &c, 1) < 0) {
        }  // EOF: the parent closed the write end, everyone goes
        int status = 0;
        try {
          body(i);
        } catch (const std::exception& e) {
          std::ofstream(err_path(i)) << e.what();
          status = 1;
        }
        _exit(status);  // no gtest or static destructors in the child
      }
      pids.push_back(pid);
    }
    close(gate[0]);
    close(gate[1]);  // releases all children at once
    for (int i = 0; i < kProcesses; ++i) {
      int status = 0;
      ASSERT_EQ(waitpid(pids[i], &status, 0), pids[i]);
      std::stringstream err;
      err << std::ifstream(err_path(i)).rdbuf();
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
          << "child " << i << " status " << status << ": " << err.str();
    }
  }

  int64_t scalar(const std::string& sql) {
    auto db = Db::open(db_path_);
    auto st = db->prepare(sql);
    EXPECT_TRUE(st.step()) << sql;
    return st.int64(0);
  }
  std::string journal_mode() {
    auto db = Db::open(db_path_);
    auto st = db->prepare("PRAGMA journal_mode");
    EXPECT_TRUE(st.step());
    return st.text(0);
  }

  fs::path dir_;
  std::string db_path_;
  RunConfig resolved_;
};

TEST_F(ConcurrentOpenTest, LocalRunsStartingTogetherOnANewFileAllRecord) {
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    new_db_path(round);
    run_together([&](int i) {
      auto run = LocalRun::open(db_path_, resolved_, (dir_ / ("run" + std::to_string(i))).string());
      for (int s = 0; s < kSteps; ++s) {
        run->write({{s, "train_loss", 10.0 - s, 1000.0 + s}, {s, "lr", 0.02, 1000.0 + s}});
      }
      run->finish(proto::TRIAL_STATE_SUCCEEDED, "");
    });
    EXPECT_EQ(journal_mode(), "wal");
    EXPECT_EQ(scalar("PRAGMA user_version"), kSchemaVersion);
    EXPECT_EQ(scalar("SELECT COUNT(*) FROM sweeps"), 1);  // one "local" sweep, not one each
    EXPECT_EQ(scalar("SELECT COUNT(*) FROM trials WHERE state = 'succeeded'"), kProcesses);
    EXPECT_EQ(scalar("SELECT COUNT(DISTINCT trial_index) FROM trials"), kProcesses);
    EXPECT_EQ(scalar("SELECT COUNT(*) FROM trial_attempts WHERE state = 'succeeded'"), kProcesses);
    EXPECT_EQ(scalar("SELECT COUNT(*) FROM metrics"), kProcesses * kSteps * 2);
    EXPECT_EQ(scalar("SELECT COUNT(*) FROM trials WHERE last_step = " + std::to_string(kSteps - 1)),
              kProcesses);
  }
}

TEST_F(ConcurrentOpenTest, CoordinatorStoreAndLocalRunsOpenANewFileTogether) {
  // Half the processes open the file as the coordinator does (Store::open, a sweep in one
  // Tx), half as local runs; all on the same new file at once.
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    new_db_path(round);
    run_together([&](int i) {
      if (i % 2 == 0) {
        auto store = Store::open(db_path_);
        Tx tx(store->db());
        SweepRow sweep;
        sweep.name = "sweep" + std::to_string(i);
        NewTrial t;
        t.resolved = resolved_;
        store->create_sweep(sweep, {t, t});
        tx.commit();
      } else {
        auto run = LocalRun::open(db_path_, resolved_, (dir_ / ("run" + std::to_string(i))).string());
        run->write({{0, "train_loss", 3.0, 1000.0}});
        run->finish(proto::TRIAL_STATE_SUCCEEDED, "");
      }
    });
    EXPECT_EQ(journal_mode(), "wal");
    EXPECT_EQ(scalar("SELECT COUNT(*) FROM sweeps WHERE state = 'running'"), kProcesses / 2);
    EXPECT_EQ(scalar("SELECT COUNT(*) FROM sweeps WHERE state = 'local'"), 1);
    EXPECT_EQ(scalar("SELECT COUNT(*) FROM trials WHERE state = 'pending'"), kProcesses);
    EXPECT_EQ(scalar("SELECT COUNT(*) FROM trials WHERE state = 'succeeded'"), kProcesses / 2);
    EXPECT_EQ(scalar("SELECT COUNT(*) FROM metrics"), kProcesses / 2);
  }
}

TEST_F(ConcurrentOpenTest, ProcessesMigratingAnOldSchemaTogetherMigrateItOnce) {
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    new_db_path(round);
    {
      // A version 1 file: sweeps without nodes_per_trial.
      auto store = Store::open(db_path_);
      store->db().exec("ALTER TABLE sweeps DROP COLUMN nodes_per_trial; PRAGMA user_version = 1");
    }
    run_together([&](int i) {
      auto store = Store::open(db_path_);
      Tx tx(store->db());
      SweepRow sweep;
      sweep.name = "sweep" + std::to_string(i);
      sweep.nodes_per_trial = 2;
      store->create_sweep(sweep, {});
      tx.commit();
    });
    EXPECT_EQ(scalar("PRAGMA user_version"), kSchemaVersion);
    EXPECT_EQ(scalar("SELECT COUNT(*) FROM sweeps WHERE nodes_per_trial = 2"), kProcesses);
  }
}

}  // namespace
}  // namespace hylab::store
