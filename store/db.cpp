#include "store/db.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

#include "common/check.h"

namespace hylab::store {
namespace {

constexpr int kBusyTimeoutMs = 30000;

[[noreturn]] void fail(sqlite3* db, const std::string& path, const std::string& what) {
  HYLAB_FAIL("SQLite database {}: {}: {}", path, what, db ? sqlite3_errmsg(db) : "out of memory");
}

// SQLite answers SQLITE_BUSY (or SQLITE_LOCKED) to a journal-mode change while another
// connection holds a lock on the file -- as when several processes create one new database at
// once -- without calling the busy handler, so busy_timeout does not help here. Retry with a
// short sleep until the same timeout has passed.
void set_wal(sqlite3* db, const std::string& path) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(kBusyTimeoutMs);
  for (;;) {
    const int rc = sqlite3_exec(db, "PRAGMA journal_mode=WAL", nullptr, nullptr, nullptr);
    if (rc == SQLITE_OK) return;
    const bool busy = (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED;
    if (!busy || std::chrono::steady_clock::now() >= deadline) {
      fail(db, path, "executing PRAGMA journal_mode=WAL");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

// A database opened for writing must be writable, and so must the WAL files beside it:
// SQLite would otherwise fall back to a read-only connection (every later write fails with
// "attempt to write a readonly database", deep inside a transaction) or map a read-only
// shared-memory file. Checked with open(O_RDWR), which also sees the immutable attribute
// and read-only mounts that permission bits (and root) do not.
void require_writable(const std::string& path) {
  for (const std::string& p : {path, path + "-wal", path + "-shm"}) {
    const int fd = ::open(p.c_str(), O_RDWR | O_CLOEXEC);
    if (fd >= 0) {
      ::close(fd);
      continue;
    }
    const int err = errno;
    if (err == ENOENT) continue;  // created on open
    HYLAB_FAIL("SQLite database {}: {} cannot be opened for writing: {}. It may be read-only "
               "(permissions), immutable (`lsattr {}`; `chattr -i` to undo) or on a read-only "
               "filesystem; commands that only read (`hylab results`) work on it, the "
               "coordinator and training need to write it",
               path, p, std::strerror(err), p);
  }
}

}  // namespace

Stmt::Stmt(sqlite3* db, sqlite3_stmt* stmt, std::string sql, std::string db_path)
    : db_(db), stmt_(stmt), sql_(std::move(sql)), db_path_(std::move(db_path)) {}

Stmt::Stmt(Stmt&& o) noexcept
    : db_(o.db_), stmt_(o.stmt_), sql_(std::move(o.sql_)), db_path_(std::move(o.db_path_)) {
  o.stmt_ = nullptr;
}

Stmt& Stmt::operator=(Stmt&& o) noexcept {
  if (this != &o) {
    if (stmt_) sqlite3_finalize(stmt_);
    db_ = o.db_;
    stmt_ = o.stmt_;
    sql_ = std::move(o.sql_);
    db_path_ = std::move(o.db_path_);
    o.stmt_ = nullptr;
  }
  return *this;
}

Stmt::~Stmt() {
  if (stmt_) sqlite3_finalize(stmt_);
}

Stmt& Stmt::bind(int i, int64_t v) {
  if (sqlite3_bind_int64(stmt_, i, v) != SQLITE_OK) fail(db_, db_path_, "bind in: " + sql_);
  return *this;
}

Stmt& Stmt::bind(int i, double v) {
  if (sqlite3_bind_double(stmt_, i, v) != SQLITE_OK) fail(db_, db_path_, "bind in: " + sql_);
  return *this;
}

Stmt& Stmt::bind(int i, const std::string& v) {
  if (sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT) !=
      SQLITE_OK) {
    fail(db_, db_path_, "bind in: " + sql_);
  }
  return *this;
}

Stmt& Stmt::bind_null(int i) {
  if (sqlite3_bind_null(stmt_, i) != SQLITE_OK) fail(db_, db_path_, "bind in: " + sql_);
  return *this;
}

bool Stmt::step() {
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  const std::string msg = sqlite3_errmsg(db_);
  sqlite3_reset(stmt_);
  HYLAB_FAIL("SQLite database {}: executing {}: {}", db_path_, sql_, msg);
}

void Stmt::run() {
  while (step()) {
  }
  sqlite3_reset(stmt_);
}

void Stmt::reset() { sqlite3_reset(stmt_); }
void Stmt::clear_bindings() { sqlite3_clear_bindings(stmt_); }

bool Stmt::is_null(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
int64_t Stmt::int64(int col) const { return sqlite3_column_int64(stmt_, col); }
double Stmt::real(int col) const { return sqlite3_column_double(stmt_, col); }
std::string Stmt::text(int col) const {
  const auto* p = sqlite3_column_text(stmt_, col);
  return p ? std::string(reinterpret_cast<const char*>(p),
                         static_cast<size_t>(sqlite3_column_bytes(stmt_, col)))
           : std::string();
}
int Stmt::column_type(int col) const { return sqlite3_column_type(stmt_, col); }
int Stmt::column_count() const { return sqlite3_column_count(stmt_); }
std::string Stmt::column_name(int col) const { return sqlite3_column_name(stmt_, col); }

std::unique_ptr<Db> Db::open(const std::string& path, bool read_only) {
  if (!read_only) {
    const auto parent = std::filesystem::path(path).parent_path();
    std::error_code ec;
    if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  } else if (!std::filesystem::exists(path)) {
    HYLAB_FAIL("SQLite database {} does not exist (pass --db PATH or set HYLAB_DB)", path);
  }
  if (!read_only) require_writable(path);
  sqlite3* db = nullptr;
  const int flags = read_only ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  if (sqlite3_open_v2(path.c_str(), &db, flags | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    HYLAB_FAIL("cannot open SQLite database {}: {}", path, msg);
  }
  std::unique_ptr<Db> out(new Db(db, path));
  sqlite3_busy_timeout(db, kBusyTimeoutMs);
  if (!read_only && sqlite3_db_readonly(db, "main") == 1) {
    HYLAB_FAIL("SQLite database {} opened read-only (a read-only file, directory or filesystem); "
               "the coordinator and training need to write it", path);
  }
  if (!read_only) {
    set_wal(db, path);
    out->exec("PRAGMA synchronous=NORMAL");
  }
  out->exec("PRAGMA foreign_keys=ON");
  return out;
}

void Db::manual_checkpoints() {
  // Replaces the hook sqlite3_wal_autocheckpoint installs: commits no longer checkpoint.
  sqlite3_wal_hook(
      db_,
      [](void* self, sqlite3*, const char*, int pages) {
        static_cast<Db*>(self)->wal_pages_ = pages;
        static_cast<Db*>(self)->committed_since_checkpoint_ = true;
        return SQLITE_OK;
      },
      this);
}

void Db::checkpoint() {
  if (!committed_since_checkpoint_) return;  // nothing new (a reader may hold the rest back)
  int log_pages = 0;
  int copied = 0;
  const int rc = sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, &log_pages, &copied);
  // BUSY: another connection is checkpointing; it does the work.
  if (rc != SQLITE_OK && rc != SQLITE_BUSY) fail(db_, path_, "running a WAL checkpoint");
  committed_since_checkpoint_ = false;
  if (rc == SQLITE_OK && copied == log_pages) wal_pages_ = 0;
}

Db::~Db() {
  cached_.clear();  // finalized before the connection closes
  sqlite3_close_v2(db_);
}

void Db::exec(const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errmsg(db_);
    sqlite3_free(err);
    HYLAB_FAIL("SQLite database {}: executing {}: {}", path_, sql.substr(0, 200), msg);
  }
}

Stmt Db::prepare(const std::string& sql) {
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db_, sql.c_str(), static_cast<int>(sql.size()), &stmt, nullptr) !=
      SQLITE_OK) {
    fail(db_, path_, "preparing " + sql);
  }
  return Stmt(db_, stmt, sql, path_);
}

Stmt& Db::cached(std::string_view sql) {
  auto it = cached_.find(sql);
  if (it == cached_.end()) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT,
                           &stmt, nullptr) != SQLITE_OK) {
      fail(db_, path_, "preparing " + std::string(sql));
    }
    auto kept = std::make_unique<Stmt>(db_, stmt, std::string(sql), path_);
    it = cached_.emplace(std::string(sql), std::move(kept)).first;
  }
  Stmt& st = *it->second;
  st.reset();
  st.clear_bindings();
  return st;
}

int64_t Db::last_insert_rowid() const { return sqlite3_last_insert_rowid(db_); }
int Db::changes() const { return sqlite3_changes(db_); }

Tx::Tx(Db& db) : db_(db) { db_.cached("BEGIN IMMEDIATE").run(); }

Tx::~Tx() {
  if (!done_) {
    try {
      db_.exec("ROLLBACK");
    } catch (...) {
      // The transaction may already be gone (e.g. SQLite rolled it back on an I/O error).
    }
  }
}

void Tx::commit() {
  db_.cached("COMMIT").run();
  done_ = true;
}

}  // namespace hylab::store
