#include "dashboard/server.h"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/check.h"
#include "dashboard/api.h"
#include "dashboard/web_assets.h"
#include "store/db.h"

namespace hylab::dashboard {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// The chart library, fetched at setup by scripts/fetch_web.sh (path under web_dir).
constexpr const char* kChartJs = "chart.js/package/dist/chart.umd.min.js";
constexpr int kDefaultMaxPoints = 2000;
constexpr const char* kTokenChars =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/=";

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string default_web_dir() {
  if (const char* env = std::getenv("HYLAB_WEB_DIR"); env && *env) return env;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? "web" : (exe.parent_path() / "web").string();
}

// Compares without an early exit, so the time taken says nothing about the token.
bool same_secret(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

std::string cookie_value(const httplib::Request& req, const std::string& name) {
  const std::string cookies = req.get_header_value("Cookie");
  size_t pos = 0;
  while (pos < cookies.size()) {
    size_t end = cookies.find(';', pos);
    if (end == std::string::npos) end = cookies.size();
    std::string part = cookies.substr(pos, end - pos);
    part.erase(0, part.find_first_not_of(' '));
    if (part.rfind(name + "=", 0) == 0) return part.substr(name.size() + 1);
    pos = end + 1;
  }
  return "";
}

// "127.0.0.1:8080" -> "127.0.0.1", "[::1]:8080" -> "::1", "localhost" -> "localhost".
std::string host_of(const std::string& host_header) {
  if (!host_header.empty() && host_header[0] == '[') {
    const auto close = host_header.find(']');
    return close == std::string::npos ? host_header : host_header.substr(1, close - 1);
  }
  return host_header.substr(0, host_header.find(':'));
}

void send_json(httplib::Response& res, const json& body, int status = 200) {
  res.status = status;
  res.set_header("Cache-Control", "no-store");
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

void send_error(httplib::Response& res, int status, const std::string& message) {
  send_json(res, {{"error", message}}, status);
}

int64_t id_param(const httplib::Request& req) { return std::stoll(req.matches[1].str()); }

int max_points_param(const httplib::Request& req) {
  if (!req.has_param("max_points")) return kDefaultMaxPoints;
  const std::string v = req.get_param_value("max_points");
  char* end = nullptr;
  const long n = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || n < 2 || n > 1000000) {
    throw std::invalid_argument("max_points=" + v + ": expected an integer from 2 to 1000000");
  }
  return static_cast<int>(n);
}

std::string metric_param(const httplib::Request& req) {
  const std::string m = req.has_param("metric") ? req.get_param_value("metric") : "train_loss";
  const bool ok = !m.empty() && m.size() <= 64 &&
                  m.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") == std::string::npos;
  if (!ok)
    throw std::invalid_argument("metric=" + m +
                                ": expected a metric name such as train_loss or val_bpb");
  return m;
}

}  // namespace

HttpAddress parse_http_address(const std::string& text, const std::string& flag) {
  HttpAddress a;
  std::string port = text;
  if (!text.empty() && text[0] == '[') {
    const auto close = text.find("]:");
    if (close == std::string::npos) HYLAB_FAIL("{} {}: expected [IPV6]:PORT", flag, text);
    a.host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else if (const auto colon = text.rfind(':'); colon != std::string::npos) {
    a.host = colon == 0 ? "127.0.0.1" : text.substr(0, colon);
    port = text.substr(colon + 1);
  } else {
    a.host = "127.0.0.1";
  }
  char* end = nullptr;
  const long p = std::strtol(port.c_str(), &end, 10);
  if (port.empty() || *end != '\0' || p < 0 || p > 65535 || a.host.empty()) {
    HYLAB_FAIL("{} {}: expected HOST:PORT (e.g. 127.0.0.1:8080; port 0 picks a free one)", flag,
               text);
  }
  a.port = static_cast<int>(p);
  return a;
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

std::string load_token(const std::string& file) {
  if (file.empty()) {
    const char* env = std::getenv("HYLAB_HTTP_TOKEN");
    return env ? env : "";
  }
  std::ifstream in(file);
  if (!in) HYLAB_FAIL("--http_token_file {}: cannot read it", file);
  std::string token;
  std::getline(in, token);
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) token.pop_back();
  if (token.empty())
    HYLAB_FAIL("--http_token_file {}: the first line is empty (expected the token)", file);
  return token;
}

struct Server::Impl {
  ServerOptions opt;
  httplib::Server http;
  std::thread thread;
  int port = 0;

  // Everything a request may touch; a throw here becomes a JSON error, never reaches the loop.
  void api(const httplib::Request& req, httplib::Response& res,
           const std::function<json(store::Db&)>& answer) {
    try {
      auto db = store::Db::open(opt.db_path, /*read_only=*/true);
      send_json(res, answer(*db));
    } catch (const NotFound& e) {
      send_error(res, 404, e.what());
    } catch (const std::logic_error& e) {  // invalid_argument, out_of_range: a bad parameter
      send_error(res, 400, e.what());
    } catch (const std::exception& e) {
      spdlog::warn("dashboard: {} {}: {}", req.method, req.path, e.what());
      send_error(res, 500, e.what());
    }
  }

  // Pre-routing: method, Host and token checks. Returns kHandled to refuse the request.
  httplib::Server::HandlerResponse guard(const httplib::Request& req, httplib::Response& res) {
    using R = httplib::Server::HandlerResponse;
    res.set_header("X-Content-Type-Options", "nosniff");
    res.set_header("X-Frame-Options", "DENY");
    res.set_header("Content-Security-Policy",
                   "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:");
    if (req.method != "GET" && req.method != "HEAD") {
      res.set_header("Allow", "GET, HEAD");
      send_error(res, 405, "the dashboard is read-only: " + req.method + " is not allowed");
      return R::Handled;
    }
    if (opt.token.empty()) {
      if (!is_loopback(host_of(req.get_header_value("Host")))) {
        send_error(res, 403, "Host must be a loopback name (localhost, 127.0.0.1, [::1])");
        return R::Handled;
      }
      return R::Unhandled;
    }
    const std::string auth = req.get_header_value("Authorization");
    if ((auth.rfind("Bearer ", 0) == 0 && same_secret(auth.substr(7), opt.token)) ||
        same_secret(cookie_value(req, "hylab_token"), opt.token)) {
      return R::Unhandled;
    }
    if (req.has_param("token") && same_secret(req.get_param_value("token"), opt.token)) {
      // A browser cannot send a header from a typed URL: trade the token for a cookie.
      res.set_header("Set-Cookie",
                     "hylab_token=" + opt.token + "; Path=/; HttpOnly; SameSite=Strict");
      res.set_redirect(req.path);
      return R::Handled;
    }
    res.set_header("WWW-Authenticate", "Bearer");
    send_error(
        res, 401,
        "a bearer token is required (Authorization: Bearer TOKEN, or open /?token=TOKEN once)");
    return R::Handled;
  }

  void routes() {
    http.set_pre_routing_handler([this](const auto& req, auto& res) { return guard(req, res); });

    // Pages: one HTML shell; app.js renders the page the path names.
    auto page = [](const httplib::Request&, httplib::Response& res) {
      const WebAsset* a = find_web_asset("index.html");
      res.set_content(a->body, a->content_type);
    };
    for (const char* p : {"/", "/sweep/(\\d+)", "/sweep/(\\d+)/layers", "/trial/(\\d+)"})
      http.Get(p, page);
    http.Get("/static/([a-z_]+\\.(js|css|svg))",
             [](const httplib::Request& req, httplib::Response& res) {
               const WebAsset* a = find_web_asset(req.matches[1].str());
               if (!a) return send_error(res, 404, "no asset " + req.matches[1].str());
               res.set_content(a->body, a->content_type);
             });
    http.Get("/vendor/chart.js", [this](const httplib::Request&, httplib::Response& res) {
      const fs::path path = fs::path(opt.web_dir) / kChartJs;
      std::ifstream in(path, std::ios::binary);
      if (!in) {
        return send_error(
            res, 404,
            "the chart library is not at " + path.string() +
                ": run scripts/fetch_web.sh (scripts/setup.sh does) or pass --web_dir");
      }
      const std::string body((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
      res.set_header("Cache-Control", "max-age=3600");
      res.set_content(body, "text/javascript; charset=utf-8");
    });

    http.Get("/api/sweeps", [this](const auto& req, auto& res) {
      api(req, res, [](store::Db& db) { return sweeps(db, unix_now()); });
    });
    http.Get("/api/sweeps/(\\d+)", [this](const auto& req, auto& res) {
      api(req, res, [&](store::Db& db) { return sweep(db, id_param(req), unix_now()); });
    });
    http.Get("/api/sweeps/(\\d+)/curves", [this](const auto& req, auto& res) {
      api(req, res, [&](store::Db& db) {
        return sweep_curves(db, id_param(req), metric_param(req), max_points_param(req));
      });
    });
    http.Get("/api/sweeps/(\\d+)/layers", [this](const auto& req, auto& res) {
      api(req, res, [&](store::Db& db) { return layer_map(db, id_param(req)); });
    });
    http.Get("/api/trials/(\\d+)", [this](const auto& req, auto& res) {
      api(req, res, [&](store::Db& db) { return trial(db, id_param(req), opt.work_dir); });
    });
    http.Get("/api/trials/(\\d+)/curves", [this](const auto& req, auto& res) {
      api(req, res,
          [&](store::Db& db) { return trial_curves(db, id_param(req), max_points_param(req)); });
    });
    http.Get("/api/sweeps/(\\d+)/pareto", [this](const auto& req, auto& res) {
      api(req, res, [&](store::Db& db) {
        return pareto(db, id_param(req),
                      req.has_param("x") ? req.get_param_value("x") : "tok_per_s");
      });
    });
    http.Get("/api/sweeps/(\\d+)/groups", [this](const auto& req, auto& res) {
      api(req, res, [&](store::Db& db) {
        std::vector<std::string> by;
        std::stringstream in(req.has_param("group_by") ? req.get_param_value("group_by") : "");
        for (std::string c; std::getline(in, c, ',');) {
          if (!c.empty()) by.push_back(c);
        }
        const std::string inc =
            req.has_param("include_stopped") ? req.get_param_value("include_stopped") : "0";
        return groups(db, id_param(req), by, inc == "1" || inc == "true");
      });
    });
    http.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (res.status == 404 && res.body.empty()) send_error(res, 404, "no such page: " + req.path);
    });
  }
};

Server::Server(ServerOptions opt) : impl_(std::make_unique<Impl>()) {
  if (opt.token.empty() && !is_loopback(opt.address.host)) {
    HYLAB_FAIL(
        "--http {}:{}: a bind address other than loopback needs a bearer token "
        "(--http_token_file FILE or $HYLAB_HTTP_TOKEN)",
        opt.address.host, opt.address.port);
  }
  if (opt.token.find_first_not_of(kTokenChars) != std::string::npos) {
    HYLAB_FAIL(
        "the dashboard token may hold only letters, digits and -._~+/= (it travels in a cookie)");
  }
  if (!fs::exists(opt.db_path)) HYLAB_FAIL("--db {}: no such database", opt.db_path);
  if (opt.web_dir.empty()) opt.web_dir = default_web_dir();
  if (opt.threads < 1) opt.threads = 1;
  if (!fs::exists(fs::path(opt.web_dir) / kChartJs)) {
    spdlog::warn(
        "dashboard: the chart library is not at {}/{}: pages will have no charts "
        "(run scripts/fetch_web.sh, or pass --web_dir)",
        opt.web_dir, kChartJs);
  }
  impl_->opt = std::move(opt);
  impl_->routes();
}

Server::~Server() { stop(); }

void Server::start() {
  Impl& m = *impl_;
  const int threads = m.opt.threads;
  m.http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  // One request per connection: a browser keeps idle connections open, and each open
  // connection would hold one of the few request threads until it timed out.
  m.http.set_keep_alive_max_count(1);
  m.http.set_read_timeout(5, 0);
  m.http.set_write_timeout(5, 0);
  const std::string& host = m.opt.address.host;
  if (m.opt.address.port == 0) {
    m.port = m.http.bind_to_any_port(host);
    if (m.port <= 0) HYLAB_FAIL("--http {}:0: cannot bind", host);
  } else {
    if (!m.http.bind_to_port(host, m.opt.address.port)) {
      HYLAB_FAIL("--http {}:{}: cannot bind (in use, or not an address of this host)", host,
                 m.opt.address.port);
    }
    m.port = m.opt.address.port;
  }
  m.thread = std::thread([&m] { m.http.listen_after_bind(); });
  spdlog::info("dashboard: {} (database {}, read-only{})", url(), m.opt.db_path,
               m.opt.token.empty() ? "" : ", bearer token required");
}

void Server::stop() {
  if (!impl_ || !impl_->thread.joinable()) return;
  impl_->http.stop();
  impl_->thread.join();
}

int Server::port() const { return impl_->port; }

std::string Server::url() const {
  const std::string& h = impl_->opt.address.host;
  const std::string host = h.find(':') != std::string::npos ? "[" + h + "]" : h;
  return "http://" + host + ":" + std::to_string(impl_->port) + "/";
}

}  // namespace hylab::dashboard
