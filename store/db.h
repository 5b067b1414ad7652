// A thin RAII layer over the SQLite C API: one connection (Db), prepared statements (Stmt,
// one-off from prepare() or kept by the connection from cached()) and write transactions
// (Tx). Every failure throws hylab::Error naming the database file, the statement and
// SQLite's message.
//
// Thread safety: a Db and its Stmts belong to one thread. Several processes may open the
// same file: connections use WAL and a busy_timeout (Db::open retries the switch to WAL, which
// the busy handler does not cover), and Tx takes the write lock up front (BEGIN IMMEDIATE) so
// two writers never deadlock on a lock upgrade.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

struct sqlite3;
struct sqlite3_stmt;

namespace hylab::store {

class Stmt {
 public:
  Stmt(sqlite3* db, sqlite3_stmt* stmt, std::string sql, std::string db_path);
  Stmt(Stmt&&) noexcept;
  Stmt& operator=(Stmt&&) noexcept;
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  ~Stmt();

  // Parameters are 1-based, as in SQLite. Returns *this to chain.
  Stmt& bind(int i, int64_t v);
  Stmt& bind(int i, int v) { return bind(i, static_cast<int64_t>(v)); }
  Stmt& bind(int i, double v);
  Stmt& bind(int i, const std::string& v);
  Stmt& bind(int i, const char* v) { return bind(i, std::string(v)); }
  Stmt& bind_null(int i);
  template <typename T>
  Stmt& bind(int i, const std::optional<T>& v) {
    return v ? bind(i, *v) : bind_null(i);
  }

  // Runs one step: true if a row is available, false when done.
  bool step();
  // step() until done (for statements without rows).
  void run();
  // Makes the statement ready to run again; bindings are kept unless cleared.
  void reset();
  // Unbinds every parameter (to NULL).
  void clear_bindings();

  // Columns are 0-based.
  bool is_null(int col) const;
  int64_t int64(int col) const;
  double real(int col) const;
  std::string text(int col) const;
  int column_count() const;
  // SQLite's storage class of the value: SQLITE_INTEGER, SQLITE_FLOAT, SQLITE_TEXT,
  // SQLITE_BLOB or SQLITE_NULL (for generic readers such as the dashboard's row -> JSON).
  int column_type(int col) const;
  std::string column_name(int col) const;

 private:
  sqlite3* db_ = nullptr;
  sqlite3_stmt* stmt_ = nullptr;
  std::string sql_;
  std::string db_path_;
};

class Db {
 public:
  // Opens (creating if needed unless read_only) the file and sets WAL, busy_timeout,
  // foreign_keys. Creates the parent directory of a new file. Throws hylab::Error.
  static std::unique_ptr<Db> open(const std::string& path, bool read_only = false);
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  void exec(const std::string& sql);
  Stmt prepare(const std::string& sql);
  // The statement for `sql`, prepared on its first use and kept until the connection closes,
  // for statements run per message or per row: compiling a statement costs more than running
  // a one-row write (docs/RELIABILITY.md, "Load"). It comes reset, every parameter unbound.
  // Not re-entrant: one use at a time per SQL text. A use ends with run(), step() returning
  // false, or reset() -- call reset() after reading fewer rows than there are, or the
  // statement keeps its read snapshot (and WAL checkpoints wait) until its next use.
  Stmt& cached(std::string_view sql);
  // WAL checkpoints taken over from SQLite. Its automatic one runs inside the commit that
  // takes the WAL past 1,000 pages and waits there for two fsyncs (2-90 ms each on a busy
  // disk): a stall of whatever that commit was answering. After manual_checkpoints() commits
  // only count the WAL's pages, and the owner runs checkpoint() when it suits it (the
  // coordinator: between iterations, when no message that can free a slot waits).
  void manual_checkpoints();
  // Pages in the WAL as of the last commit (manual mode), or 0 once checkpoint() copied them
  // all (the next write starts the WAL over). SQLite's own rule checkpoints at 1,000.
  int64_t wal_pages() const { return wal_pages_; }
  // A PASSIVE checkpoint, if anything was committed since the last: copies what no reader
  // still needs into the database file and fsyncs it; never waits for other connections.
  // Throws hylab::Error on an I/O error.
  void checkpoint();

  int64_t last_insert_rowid() const;
  int changes() const;
  const std::string& path() const { return path_; }
  sqlite3* raw() { return db_; }

 private:
  Db(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  sqlite3* db_;
  std::string path_;
  std::map<std::string, std::unique_ptr<Stmt>, std::less<>> cached_;  // by SQL text
  int64_t wal_pages_ = 0;       // manual_checkpoints: see wal_pages()
  bool committed_since_checkpoint_ = false;
};

// A write transaction: BEGIN IMMEDIATE in the constructor, ROLLBACK in the destructor
// unless commit() was called. (The coordinator runs one per poll-loop iteration.)
class Tx {
 public:
  explicit Tx(Db& db);
  ~Tx();
  void commit();
  Tx(const Tx&) = delete;
  Tx& operator=(const Tx&) = delete;

 private:
  Db& db_;
  bool done_ = false;
};

}  // namespace hylab::store
