// The dashboard's HTTP server (cpp-httplib): the pages, their assets and the JSON API of
// dashboard/api.h, read-only, over the results database. Served by `hylab dashboard` and, with
// --http, by the coordinator (docs/DASHBOARD.md).
//
// Threads: start() binds and then serves on a thread of its own with a small pool of request
// threads; each request opens its own read-only SQLite connection (WAL: readers never block
// the coordinator's writes, and a slow or failing request touches nothing of the caller).
// stop() (or the destructor) closes the socket and joins. start/stop from one thread.
//
// Security: read-only (GET/HEAD only). A bind address other than loopback needs a bearer
// token; with a token every request must carry `Authorization: Bearer TOKEN` or the cookie
// that `/?token=TOKEN` sets. Without a token, requests must name a loopback Host (so a web
// page elsewhere cannot reach the dashboard through DNS rebinding).
#pragma once

#include <memory>
#include <string>

namespace hylab::dashboard {

struct HttpAddress {
  std::string host;
  int port = 0;  // 0 = any free port
};
// "HOST:PORT", "[::1]:PORT", ":PORT" (loopback) or "PORT". Throws hylab::Error naming `flag`.
HttpAddress parse_http_address(const std::string& text, const std::string& flag);
bool is_loopback(const std::string& host);

// The token from a file (first line, trimmed) or, when file is "", $HYLAB_HTTP_TOKEN ("" if
// unset). Throws hylab::Error naming --http_token_file when the file cannot be read or is empty.
std::string load_token(const std::string& file);

struct ServerOptions {
  std::string db_path;  // the results database (must exist)
  HttpAddress address{"127.0.0.1", 8080};
  std::string token;    // required unless address.host is loopback
  std::string web_dir;  // fetched chart library; "" = $HYLAB_WEB_DIR, else <exe dir>/web
  std::string work_dir = "runs/work";  // the workers' work_dir: resolves sweep trials' run_dir
  int threads = 2;                     // request threads
};

class Server {
 public:
  // Validates the options (token rule, database exists). Throws hylab::Error.
  explicit Server(ServerOptions opt);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds (throws hylab::Error naming --http if it cannot) and serves on its own thread.
  void start();
  void stop();
  int port() const;         // the bound port (after start)
  std::string url() const;  // http://HOST:PORT/

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hylab::dashboard
