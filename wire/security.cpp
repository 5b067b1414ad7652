#include "wire/security.h"

#include <sys/stat.h>
#include <zmq.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/check.h"

namespace hylab::wire {
namespace {

namespace fs = std::filesystem;

std::string trim(std::string s) {
  const char* ws = " \t\r\n";
  s.erase(0, s.find_first_not_of(ws));
  s.erase(s.find_last_not_of(ws) + 1);
  return s;
}

// `public-key = "..."` -> ("public-key", "...") ; a bare key -> ("", key). Z85 keys may
// contain '=', so only the two known names make a line an assignment.
std::pair<std::string, std::string> parse_line(const std::string& raw) {
  std::string line = trim(raw);
  for (const char* name : {"public-key", "secret-key"}) {
    const std::string n = name;
    if (line.compare(0, n.size(), n) != 0) continue;
    std::string rest = trim(line.substr(n.size()));
    if (rest.empty() || rest[0] != '=') continue;
    std::string value = trim(rest.substr(1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
      value = value.substr(1, value.size() - 2);
    }
    return {n, value};
  }
  return {"", line};
}

// Blank lines and comments (# ...) carry nothing. (No Z85 key starts with '#'.)
bool skip_line(const std::string& t) { return t.empty() || t[0] == '#'; }

std::string binary_of(const std::string& z85) {
  std::string out(32, '\0');
  if (!is_z85_key(z85) || zmq_z85_decode(reinterpret_cast<uint8_t*>(out.data()), z85.c_str()) == nullptr) {
    HYLAB_FAIL("\"{}\" is not a CurveZMQ key (expected 40 Z85 characters)", z85);
  }
  return out;
}

void add_keys_from_file(AllowList* list, const fs::path& path) {
  std::ifstream in(path);
  if (!in) HYLAB_FAIL("cannot read allow-list file {}", path.string());
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    const std::string t = trim(line);
    if (skip_line(t)) continue;
    auto [key, value] = parse_line(t);
    if (key == "secret-key") continue;  // a .key file given by mistake: use its public half
    if (!is_z85_key(value)) {
      HYLAB_FAIL("{}:{}: \"{}\" is not a CurveZMQ public key (40 Z85 characters)", path.string(), n, value);
    }
    list->add(value);
  }
}

}  // namespace

bool is_z85_key(const std::string& s) {
  static const std::string kAlphabet =
      "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
  if (s.size() != 40) return false;
  for (char c : s) {
    if (kAlphabet.find(c) == std::string::npos) return false;
  }
  return true;
}

std::string z85_of(const std::string& key32) {
  if (key32.size() != 32) return "<invalid key>";
  char out[41] = {0};
  zmq_z85_encode(out, reinterpret_cast<const uint8_t*>(key32.data()), 32);
  return out;
}

KeyPair generate_keypair() {
  char pub[41] = {0}, sec[41] = {0};
  if (zmq_curve_keypair(pub, sec) != 0) {
    HYLAB_FAIL("cannot generate a CurveZMQ key pair: {} (is libzmq built with CURVE?)", zmq_strerror(zmq_errno()));
  }
  return {pub, sec};
}

void write_keypair(const KeyPair& kp, const std::string& name) {
  const std::string key_path = name + ".key", pub_path = name + ".pub";
  if (fs::exists(key_path)) {
    HYLAB_FAIL("{} exists already; refusing to overwrite a secret key (choose another --out)", key_path);
  }
  const auto parent = fs::path(name).parent_path();
  if (!parent.empty()) fs::create_directories(parent);
  {
    std::ofstream out(key_path);
    if (!out) HYLAB_FAIL("cannot write {}", key_path);
    out << "# hylab CurveZMQ key pair. Keep this file secret; give " << pub_path << " to the other side.\n"
        << "public-key = \"" << kp.public_z85 << "\"\n"
        << "secret-key = \"" << kp.secret_z85 << "\"\n";
  }
  ::chmod(key_path.c_str(), 0600);
  std::ofstream out(pub_path);
  if (!out) HYLAB_FAIL("cannot write {}", pub_path);
  out << "# hylab CurveZMQ public key (add it to the coordinator's --allow file)\n"
      << "public-key = \"" << kp.public_z85 << "\"\n";
}

KeyPair read_key_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) HYLAB_FAIL("cannot read key file {} (make one with `hylab keygen --out NAME`)", path);
  KeyPair kp;
  std::string line;
  while (std::getline(in, line)) {
    const std::string t = trim(line);
    if (skip_line(t)) continue;
    auto [key, value] = parse_line(t);
    if (key == "secret-key") kp.secret_z85 = value;
    else kp.public_z85 = value;  // public-key = "..." or a bare key
  }
  if (!kp.secret_z85.empty()) {
    if (!is_z85_key(kp.secret_z85)) HYLAB_FAIL("{}: secret-key is not 40 Z85 characters", path);
    char pub[41] = {0};
    if (zmq_curve_public(pub, kp.secret_z85.c_str()) != 0) HYLAB_FAIL("{}: invalid secret-key", path);
    if (!kp.public_z85.empty() && kp.public_z85 != pub) {
      HYLAB_FAIL("{}: public-key does not belong to secret-key", path);
    }
    kp.public_z85 = pub;
  }
  if (!is_z85_key(kp.public_z85)) HYLAB_FAIL("{}: no valid public-key (40 Z85 characters)", path);
  return kp;
}

AllowList AllowList::load(const std::string& path) {
  AllowList list;
  if (fs::is_directory(path)) {
    for (const auto& e : fs::directory_iterator(path)) {
      if (e.path().extension() == ".pub") add_keys_from_file(&list, e.path());
    }
  } else {
    add_keys_from_file(&list, path);
  }
  return list;
}

void AllowList::add(const std::string& public_z85) { keys_.insert(binary_of(public_z85)); }

bool AllowList::allows_binary(const std::string& key32) const { return keys_.count(key32) > 0; }

void apply_server(zmq::socket_t& s, const Security& sec) {
  if (sec.insecure) return;
  if (sec.own.secret_z85.empty()) HYLAB_FAIL("the coordinator needs its secret key (--key NAME.key) or --insecure");
  s.set(zmq::sockopt::curve_server, true);
  s.set(zmq::sockopt::curve_secretkey, sec.own.secret_z85);
  s.set(zmq::sockopt::zap_domain, "hylab");
}

void apply_client(zmq::socket_t& s, const Security& sec) {
  if (sec.insecure) return;
  if (sec.own.secret_z85.empty()) {
    HYLAB_FAIL("a key pair is needed to talk to the coordinator (--key NAME.key or HYLAB_KEY), "
               "or --insecure for plain TCP");
  }
  if (sec.server_public.empty()) {
    HYLAB_FAIL("the coordinator's public key is needed (--server_key coordinator.pub or "
               "HYLAB_SERVER_KEY), or --insecure for plain TCP");
  }
  s.set(zmq::sockopt::curve_serverkey, sec.server_public);
  s.set(zmq::sockopt::curve_publickey, sec.own.public_z85);
  s.set(zmq::sockopt::curve_secretkey, sec.own.secret_z85);
}

std::vector<std::string> zap_reply(const std::vector<std::string>& req, const AllowList& allow,
                                   std::string* log) {
  // Request: version, request_id, domain, address, routing id, mechanism, credentials...
  const std::string request_id = req.size() > 1 ? req[1] : "";
  auto reply = [&](const char* code, const std::string& text, const std::string& user) {
    return std::vector<std::string>{"1.0", request_id, code, text, user, ""};
  };
  if (req.size() < 6 || req[0] != "1.0") {
    *log = "malformed ZAP request refused";
    return reply("500", "malformed ZAP request", "");
  }
  const std::string& address = req[3];
  const std::string& mechanism = req[5];
  if (mechanism != "CURVE" || req.size() < 7 || req[6].size() != 32) {
    *log = "peer " + address + " refused: mechanism " + mechanism + " (only CURVE is allowed)";
    return reply("400", "CURVE required", "");
  }
  const std::string key = z85_of(req[6]);
  if (!allow.allows_binary(req[6])) {
    *log = "peer " + address + " refused: public key " + key + " is not in the allow-list";
    return reply("400", "unknown key", "");
  }
  return reply("200", "OK", key);
}

bool is_loopback_endpoint(const std::string& endpoint) {
  if (endpoint.rfind("ipc://", 0) == 0 || endpoint.rfind("inproc://", 0) == 0) return true;
  if (endpoint.rfind("tcp://", 0) != 0) return false;
  std::string host = endpoint.substr(6);
  if (const size_t semi = host.find(';'); semi != std::string::npos) host = host.substr(semi + 1);  // source;dest
  if (!host.empty() && host[0] == '[') {
    const size_t close = host.find(']');
    return close != std::string::npos && host.substr(1, close - 1) == "::1";
  }
  host = host.substr(0, host.rfind(':'));
  if (host == "localhost") return true;
  // 127.a.b.c with every part a number.
  if (host.rfind("127.", 0) != 0) return false;
  int dots = 0;
  for (char ch : host) {
    if (ch == '.') {
      ++dots;
    } else if (ch < '0' || ch > '9') {
      return false;
    }
  }
  return dots == 3;
}

void check_bind(const std::string& endpoint, const Security& sec) {
  if (!sec.insecure || sec.insecure_any_interface || is_loopback_endpoint(endpoint)) return;
  HYLAB_FAIL("--bind {} with --insecure: plain TCP without keys would accept anyone who can reach "
             "this machine. Bind to loopback (e.g. tcp://127.0.0.1:5555, the default with "
             "--insecure), use CurveZMQ keys (--key, --allow), or pass --insecure_any_interface "
             "on a network you trust",
             endpoint);
}

}  // namespace hylab::wire
