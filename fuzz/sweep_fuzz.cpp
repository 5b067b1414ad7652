// Fuzz target: a sweep YAML through `hylab sweep submit --dry_run`'s path.
//
// parse_sweep_yaml (schema + validation), then build_submission on a fixed small base
// config with a vocabulary lookup that needs no files: expansion (grid, random, seeds,
// generated patterns) or the tpe start-up proposals, and the SubmitSweep request; the
// request is then validated as the coordinator validates what arrives. Seeds:
// fuzz/corpus/sweep/ (sweeps/*.yaml and the specs of tests/coordinator/sweep_test.cpp).
//
// Trials are bounded at kFuzzMaxTrials (build_submission's max_trials), not the 100,000 of a
// real sweep: each trial is resolved, hashed and printed to JSON (~0.4 ms under ASan), so an
// input with a few hundred trials cost as much as a thousand small ones and inputs like that
// took most of the time. The bound is checked by the same code, before expansion, as the
// real one (a larger count is refused the same way); the seed sweeps expand to at most 24.
#include <cstddef>
#include <cstdint>
#include <string>

#include "sweep/submission.h"
#include "sweep/sweep_spec.h"
#include "wire/wire.h"
#include "fuzz/fuzz_util.h"

namespace {
constexpr int64_t kFuzzMaxTrials = 64;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  hylab::fuzz::guarded([&] {
    const hylab::proto::SweepSpec spec = hylab::coordinator::parse_sweep_yaml(text, "<fuzz>");
    hylab::RunConfig base;
    base.set_depth(4);
    base.set_max_seq_len(64);
    const auto sub = hylab::coordinator::build_submission(
        spec, base, [](const std::string&) { return 256; }, text, "<fuzz>", kFuzzMaxTrials);
    hylab::proto::Envelope env;
    *env.mutable_request()->mutable_submit_sweep() = sub.request;
    env.set_version(hylab::proto::PROTOCOL_VERSION_1);
    env.set_sender("fuzz");
    (void)hylab::wire::validate(env);
  });
  return 0;
}
