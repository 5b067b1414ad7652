#include "wire/client.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <random>

#include "common/check.h"
#include "wire/wire.h"

namespace hylab::wire {

Security peer_security(bool insecure, const std::string& key_path, const std::string& server_key_path) {
  Security sec;
  sec.insecure = insecure;
  if (insecure) return sec;
  std::string key = key_path, server = server_key_path;
  if (key.empty() && std::getenv("HYLAB_KEY")) key = std::getenv("HYLAB_KEY");
  if (server.empty() && std::getenv("HYLAB_SERVER_KEY")) server = std::getenv("HYLAB_SERVER_KEY");
  if (key.empty()) {
    HYLAB_FAIL("no key pair: pass --key NAME.key (or set HYLAB_KEY; make one with `hylab keygen "
               "--out NAME`), or --insecure for plain TCP");
  }
  if (server.empty()) {
    HYLAB_FAIL("no coordinator public key: pass --server_key coordinator.pub (or set "
               "HYLAB_SERVER_KEY), or --insecure for plain TCP");
  }
  sec.own = read_key_file(key);
  if (sec.own.secret_z85.empty()) HYLAB_FAIL("{} has no secret-key: pass the NAME.key file, not NAME.pub", key);
  sec.server_public = read_key_file(server).public_z85;
  return sec;
}

std::string default_coordinator_endpoint() {
  const char* env = std::getenv("HYLAB_COORDINATOR");
  return env && *env ? env : "tcp://127.0.0.1:5555";
}

Client::Client(const std::string& endpoint, const Security& sec, int timeout_ms)
    : endpoint_(endpoint), timeout_ms_(timeout_ms), ctx_(1), socket_(ctx_, zmq::socket_type::dealer) {
  std::random_device rd;
  char host[128] = {0};
  gethostname(host, sizeof(host) - 1);
  id_ = "client:" + std::string(host) + ":" + std::to_string(getpid()) + ":" + std::to_string(rd() % 1000000);
  socket_.set(zmq::sockopt::linger, 0);
  socket_.set(zmq::sockopt::routing_id, id_);
  socket_.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(kMaxMessageBytes));
  apply_client(socket_, sec);
  try {
    socket_.connect(endpoint);
  } catch (const zmq::error_t& e) {
    HYLAB_FAIL("cannot connect to coordinator endpoint \"{}\": {} (expected e.g. tcp://HOST:5555)", endpoint, e.what());
  }
}

Client::~Client() = default;

proto::ClientReply Client::call(proto::ClientRequest request) {
  const int64_t id = next_request_id_++;
  request.set_request_id(id);
  proto::Envelope env;
  *env.mutable_request() = request;
  const std::string bytes = encode(env, id_);
  if (!socket_.send(zmq::buffer(bytes), zmq::send_flags::dontwait)) {
    HYLAB_FAIL("cannot send to the coordinator at {} (queue full)", endpoint_);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms_);
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) break;
    zmq::pollitem_t items[] = {{socket_.handle(), 0, ZMQ_POLLIN, 0}};
    poll(items, 1, static_cast<int>(left));
    if (!(items[0].revents & ZMQ_POLLIN)) continue;
    zmq::message_t msg;
    if (!socket_.recv(msg, zmq::recv_flags::dontwait)) continue;
    std::string error;
    auto reply = decode(msg.data(), msg.size(), &error);
    if (!reply || !reply->has_reply() || reply->reply().request_id() != id) continue;
    if (!reply->reply().ok()) HYLAB_FAIL("coordinator: {}", reply->reply().error());
    return reply->reply();
  }
  HYLAB_FAIL("the coordinator at {} did not answer within {} ms (is it running? are the keys "
             "right, or do both sides use --insecure?)",
             endpoint_, timeout_ms_);
}

nlohmann::json Client::call_json(proto::ClientRequest request) {
  const auto reply = call(std::move(request));
  try {
    return reply.json().empty() ? nlohmann::json() : nlohmann::json::parse(reply.json());
  } catch (const nlohmann::json::exception& e) {
    HYLAB_FAIL("coordinator sent a reply that is not JSON: {}", e.what());
  }
}

nlohmann::json Client::call_all_pages(proto::ClientRequest request, const std::string& rows_key, int page_size) {
  request.set_page_size(page_size);
  request.clear_page_token();
  nlohmann::json rows = nlohmann::json::array();
  nlohmann::json last;
  while (true) {
    const auto reply = call(request);
    try {
      last = nlohmann::json::parse(reply.json());
    } catch (const nlohmann::json::exception& e) {
      HYLAB_FAIL("coordinator sent a reply that is not JSON: {}", e.what());
    }
    nlohmann::json& page = rows_key.empty() ? last : last[rows_key];
    if (!page.is_array()) HYLAB_FAIL("coordinator sent a page without its list of rows");
    for (auto& row : page) rows.push_back(std::move(row));
    if (reply.next_page_token().empty()) break;
    if (reply.next_page_token() == request.page_token()) {
      HYLAB_FAIL("coordinator sent the same page token twice (\"{}\"): paging made no progress",
                 reply.next_page_token());
    }
    request.set_page_token(reply.next_page_token());
  }
  if (rows_key.empty()) return rows;
  last[rows_key] = std::move(rows);
  return last;
}

}  // namespace hylab::wire
