// CurveZMQ security: key files, the coordinator's allow-list, and the ZAP handler logic.
//
// Key files (`hylab keygen --out NAME`): NAME.key holds a key pair and must stay secret,
// NAME.pub holds only the public key and is what the other side gets. Both are text:
//   # comment lines
//   public-key = "<40 Z85 characters>"
//   secret-key = "<40 Z85 characters>"      (NAME.key only)
// An allow-list file (`--allow FILE`) lists public keys, one per line: bare Z85 keys or
// `public-key = "..."` lines (so .pub files can be concatenated); a directory means every
// *.pub file in it. Blank lines and # comments are ignored.
//
// The coordinator is a CURVE server with a ZAP handler (inproc://zeromq.zap.01) that it
// polls in its own event loop: a peer whose key is not allowed is refused and logged.
// Workers and clients are CURVE clients: their own key pair plus the coordinator's public key.
#pragma once

#include <set>
#include <string>
#include <vector>

#include <zmq.hpp>

namespace hylab::wire {

struct KeyPair {
  std::string public_z85;  // 40 characters
  std::string secret_z85;  // 40 characters; empty when only the public key is known
};

KeyPair generate_keypair();
// Writes NAME.key (mode 0600) and NAME.pub. Refuses to overwrite an existing NAME.key.
void write_keypair(const KeyPair& kp, const std::string& name);
// Reads NAME.key (both keys) or a file with only a public key. Throws hylab::Error.
KeyPair read_key_file(const std::string& path);
bool is_z85_key(const std::string& s);

class AllowList {
 public:
  static AllowList load(const std::string& path);  // a file or a directory of *.pub
  void add(const std::string& public_z85);
  bool allows_binary(const std::string& key32) const;  // the 32 raw bytes ZAP gives
  size_t size() const { return keys_.size(); }

 private:
  std::set<std::string> keys_;  // binary, 32 bytes each
};

// Security settings of one side. insecure = plain TCP (NULL mechanism).
struct Security {
  bool insecure = false;
  KeyPair own;               // the coordinator's (server) or this peer's (client) pair
  std::string server_public; // clients: the coordinator's public key (Z85)
  AllowList allow;           // coordinator only
  // Coordinator only: let an insecure socket listen beyond loopback (--insecure_any_interface).
  bool insecure_any_interface = false;
};

// True for endpoints only this host can reach: tcp:// on 127.0.0.0/8, localhost or [::1];
// ipc:// and inproc://.
bool is_loopback_endpoint(const std::string& endpoint);

// Before a server binds: an insecure socket (no authentication, no encryption) listens only
// on loopback unless insecure_any_interface is set. Throws hylab::Error saying what to do.
void check_bind(const std::string& endpoint, const Security& sec);

// Socket options before bind/connect.
void apply_server(zmq::socket_t& s, const Security& sec);
void apply_client(zmq::socket_t& s, const Security& sec);

// The ZAP handler's decision for one request (RFC 27 frames). Returns the reply frames;
// *log gets a line when a peer is refused.
std::vector<std::string> zap_reply(const std::vector<std::string>& request, const AllowList& allow,
                                   std::string* log);

// Z85 text of 32 raw key bytes.
std::string z85_of(const std::string& key32);

}  // namespace hylab::wire
