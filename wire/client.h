// A client of the coordinator (`hylab sweep ...`, `hylab workers`, `hylab local`): one DEALER
// socket to the coordinator's ROUTER, one request at a time, each answered or timed out.
//
// Not thread-safe; one Client per thread.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "wire/security.h"
#include "proto/wire.pb.h"

namespace hylab::wire {

// Security for clients and workers from flags, with environment defaults:
// key_path (else $HYLAB_KEY), server_key_path (else $HYLAB_SERVER_KEY). Throws hylab::Error
// naming the missing piece unless insecure.
Security peer_security(bool insecure, const std::string& key_path, const std::string& server_key_path);

// The endpoint flag's default: $HYLAB_COORDINATOR, else tcp://127.0.0.1:5555.
std::string default_coordinator_endpoint();

class Client {
 public:
  Client(const std::string& endpoint, const Security& sec, int timeout_ms = 10000);
  ~Client();

  // Sends the request and waits for its reply. Throws hylab::Error when the coordinator
  // does not answer in time, or answers !ok (with its error message).
  proto::ClientReply call(proto::ClientRequest request);
  // call() and parse the reply's JSON.
  nlohmann::json call_json(proto::ClientRequest request);
  // call_json() for a list (list_workers, list_sweeps, show_sweep's trials), read in pages of
  // page_size rows until the coordinator sends no next_page_token, so that no reply is over
  // the frame limit. Returns it as one reply: the rows of every page in `rows_key` ("" = the
  // reply is the array), the other fields from the last page.
  static constexpr int kDefaultPageSize = 2000;
  nlohmann::json call_all_pages(proto::ClientRequest request, const std::string& rows_key = "",
                                int page_size = kDefaultPageSize);

 private:
  std::string endpoint_;
  int timeout_ms_;
  std::string id_;
  int64_t next_request_id_ = 1;
  zmq::context_t ctx_;
  zmq::socket_t socket_;
};

}  // namespace hylab::wire
