// The lists a client asks for (list_sweeps, show_sweep's trials, list_workers), a page at a
// time: a reply larger than the client's frame limit would be dropped by the client's socket
// and look like a coordinator that did not answer, and building it would cost the event
// loop memory and time in proportion to the database. So a page stops at page_size rows or
// at the reply limit, whichever comes first, and its next_page_token names its last row
// (store.h's page keys); the client asks again from there (wire::Client::call_all_pages).
//
// A request without page_size (a client older than paging) gets every row when they fit,
// else an error that says why; the coordinator never builds more than one reply's worth.
#include <spdlog/fmt/fmt.h>

#include <algorithm>

#include "common/check.h"
#include "coordinator/coordinator_impl.h"
#include "wire/wire.h"

namespace hylab::coordinator {
namespace {

// Room left in a reply for the envelope around the JSON (ids, token, framing).
int64_t envelope_slack(int64_t limit) { return std::min<int64_t>(4096, limit / 4); }

std::string dump(const nlohmann::json& j) {
  // Rows stored before the wire sanitised text may hold invalid UTF-8: U+FFFD, not an error.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// Collects rows from a store visitor into `rows` (a JSON array) while they fit in `budget`
// bytes of JSON and number at most `page_size` (0 = no count limit). Returns the next page's
// token: empty when the list ended within this page.
class PageFill {
 public:
  PageFill(const proto::ClientRequest& req, int64_t budget)
      : page_size_(req.page_size()), budget_(budget) {}

  store::Store::RowVisitor visitor() {
    return [this](const std::string& key, nlohmann::json row) {
      const int64_t size = static_cast<int64_t>(dump(row).size()) + 1;  // + the comma
      const bool full = (page_size_ > 0 && static_cast<int64_t>(rows.size()) >= page_size_) ||
                        (used_ + size > budget_ && !rows.empty());
      if (full) {
        more_ = true;
        return false;
      }
      if (used_ + size > budget_) {
        HYLAB_FAIL("one row of the list is {:.1f} MiB, over the {:.1f} MiB a reply may carry",
                   static_cast<double>(size) / (1 << 20), static_cast<double>(budget_) / (1 << 20));
      }
      used_ += size;
      rows.push_back(std::move(row));
      last_key_ = key;
      return true;
    };
  }

  // The token for the reply; refuses a client that does not page when rows were left out.
  std::string next_token(const char* what) const {
    if (!more_) return "";
    if (page_size_ == 0) {
      HYLAB_FAIL("the {} does not fit in the {:.1f} MiB a reply may carry (more than {} rows); this "
                 "client asks for it in one reply: a hylab client that pages (page_size) reads it "
                 "whole, and hylab results reads the database directly",
                 what, static_cast<double>(budget_) / (1 << 20), rows.size());
    }
    return last_key_;
  }

  nlohmann::json rows = nlohmann::json::array();

 private:
  int64_t page_size_;
  int64_t budget_;
  int64_t used_ = 2;  // "[]"
  bool more_ = false;
  std::string last_key_;
};

}  // namespace

int64_t Coordinator::Impl::max_reply_bytes() const {
  return opt.max_reply_bytes > 0 ? opt.max_reply_bytes : static_cast<int64_t>(wire::kMaxMessageBytes) - 65536;
}

void Coordinator::Impl::list_sweeps(const proto::ClientRequest& req, proto::ClientReply* reply) {
  PageFill page(req, max_reply_bytes() - envelope_slack(max_reply_bytes()));
  store->visit_sweeps(req.page_token(), page.visitor());
  reply->set_next_page_token(page.next_token("sweep list"));
  reply->set_json(dump(page.rows));
}

void Coordinator::Impl::show_sweep(const proto::ClientRequest& req, proto::ClientReply* reply) {
  nlohmann::json out = store->sweep_header_json(req.show_sweep());
  const int64_t header = static_cast<int64_t>(dump(out).size()) + 16;  // + ,"trials":
  PageFill page(req, max_reply_bytes() - envelope_slack(max_reply_bytes()) - header);
  store->visit_trials(req.show_sweep(), req.page_token(), page.visitor());
  reply->set_next_page_token(page.next_token("sweep's trial list"));
  out["trials"] = std::move(page.rows);
  reply->set_json(dump(out));
}

void Coordinator::Impl::list_workers(const proto::ClientRequest& req, int64_t now, proto::ClientReply* reply) {
  PageFill page(req, max_reply_bytes() - envelope_slack(max_reply_bytes()));
  auto fill = page.visitor();
  // The database row and, for a worker registered with this coordinator, what it runs now.
  store->visit_workers(req.page_token(), [&](const std::string& key, nlohmann::json w) {
    const auto& workers = worker_book.all();
    auto it = workers.find(w["worker_id"].get<std::string>());
    if (it != workers.end()) {
      const WorkerInfo& info = it->second;
      nlohmann::json running = nlohmann::json::array();
      for (const auto& [k, h] : info.assigned) running.push_back({{"trial_id", k.first}, {"attempt", k.second}});
      w["slots"] = info.slots;
      w["free_slots"] = info.free_slots().size();
      w["running"] = running;
      w["heard_ms_ago"] = now - info.last_heard_ms;
    }
    return fill(key, std::move(w));
  });
  reply->set_next_page_token(page.next_token("worker list"));
  reply->set_json(dump(page.rows));
}

}  // namespace hylab::coordinator
