// `hylab bench decode`: inference speed of the engine (model/decoder.h) on random prompts,
// over batch sizes and prompt lengths, as JSON (one record per point):
//   prefill_ms          the prompt's forward pass (B x prompt tokens, eager)
//   decode_ms_per_step  one new token for each of B sequences (median-free mean over the
//                       timed steps; a CUDA graph replay where the engine captures one)
//   tok_per_s           B / decode time per step
//   bytes_per_step      what a step must read: every weight it uses (bf16 matrices, fp32
//                       rest, B embedding rows) + the KV cache up to the mean context of the
//                       timed steps + the Mamba states (model/accounting.h)
//   mbu                 bytes_per_step / step time / the copy bandwidth measured at start
//   cache_bytes         the cache allocated for B x (prompt + new) (checked equal to the
//                       accounting), peak_mem_gib the peak allocated over the point
// Random weights unless --checkpoint. Runs on CPU too (small points). Torch-free header.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hylab::trainer {

struct DecodePoint {
  int64_t batch = 1, prompt = 1, new_tokens = 1;
};

struct DecodeBenchOptions {
  std::string config_path;  // YAML, optional
  std::vector<std::string>
      overrides;           // --key=value config overrides (block_pattern, vocab_size...)
  std::string checkpoint;  // a checkpoint (or run) directory: its model and config
  // The points, in order (the CLI makes them from --batch_sizes x --prompt_lens with
  // --new_tokens, or from --points BxP+N,...).
  std::vector<DecodePoint> points;
  bool cuda_graphs = true;   // false: eager decoding (for comparison)
  std::string json_path;     // also write the JSON here
  std::string profile_path;  // profile 8 decode steps of the last point: trace to this file
};

// Prints the JSON to stdout; returns an exit status (0 ok, 2 bad arguments, 1 other).
int run_bench_decode(const DecodeBenchOptions& opt);

}  // namespace hylab::trainer
