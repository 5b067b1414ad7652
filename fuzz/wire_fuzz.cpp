// Fuzz target: one ZeroMQ frame as the coordinator and the worker decode it.
//
// wire::decode (size limit, protobuf parse, per-kind validation), then what each side does
// next with the payload it trusts: the coordinator resolves every trial config of a
// submit_sweep, reads its early_stop and search state and proposes the first trial of a
// tpe/random sweep; the worker resolves an assignment's config. Seeds: fuzz/corpus/wire/.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/run_config.h"
#include "sweep/search.h"
#include "sweep/sweep_spec.h"
#include "wire/wire.h"
#include "fuzz/fuzz_util.h"

namespace {

using hylab::fuzz::guarded;

void as_coordinator(const hylab::proto::Envelope& env) {
  if (!env.has_request() || !env.request().has_submit_sweep()) return;
  const auto& s = env.request().submit_sweep();
  for (const auto& t : s.trials()) {
    guarded([&] { (void)hylab::config_hash(hylab::resolve_config(hylab::config_from_json(t.config_json()))); });
  }
  guarded([&] { (void)hylab::coordinator::early_stop_from_json(s.early_stop_json()); });
  if (!s.search_json().empty()) {
    guarded([&] {
      const auto state = hylab::coordinator::search_state_from_json(s.search_json());
      (void)hylab::coordinator::propose_trials(state, {}, 0, 1);
    });
  }
}

void as_worker(const hylab::proto::Envelope& env) {
  if (!env.has_assign()) return;
  guarded([&] { (void)hylab::resolve_config(hylab::config_from_json(env.assign().config_json())); });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string error;
  const auto env = hylab::wire::decode(data, size, &error);
  if (!env) return 0;
  (void)hylab::wire::kind_name(*env);
  as_coordinator(*env);
  as_worker(*env);
  return 0;
}
