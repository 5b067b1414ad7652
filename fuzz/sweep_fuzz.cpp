// Fuzz target: a sweep YAML through `hylab sweep submit --dry_run`'s path.
//
// parse_sweep_yaml (schema + validation), then build_submission on a fixed small base
// config with a vocabulary lookup that needs no files: expansion (grid, random, seeds,
// generated patterns) or the tpe start-up proposals, and the SubmitSweep request; the
// request is then validated as the coordinator validates what arrives. Seeds:
// fuzz/corpus/sweep/ (sweeps/*.yaml and the specs of tests/coordinator/sweep_test.cpp).
#include <cstddef>
#include <cstdint>
#include <string>

#include "sweep/submission.h"
#include "sweep/sweep_spec.h"
#include "wire/wire.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  hylab::fuzz::guarded([&] {
    const hylab::proto::SweepSpec spec = hylab::coordinator::parse_sweep_yaml(text, "<fuzz>");
    hylab::RunConfig base;
    base.set_depth(4);
    base.set_max_seq_len(64);
    const auto sub = hylab::coordinator::build_submission(
        spec, base, [](const std::string&) { return 256; }, text, "<fuzz>");
    hylab::proto::Envelope env;
    *env.mutable_request()->mutable_submit_sweep() = sub.request;
    env.set_version(hylab::proto::PROTOCOL_VERSION_1);
    env.set_sender("fuzz");
    (void)hylab::wire::validate(env);
  });
  return 0;
}
