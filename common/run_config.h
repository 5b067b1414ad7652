// Loading, overriding, resolving and serialising a run's config (proto/config.proto).
//
// Data flow: YAML file -> load_config_file -> apply_override("key", "value")... ->
// resolve_config -> (stored as JSON with the run / trial) -> gpt_config() for the model.
// Every error is a hylab::ConfigError whose message names the field and what is allowed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "proto/config.pb.h"

namespace hylab {

using proto::RunConfig;

// The layer kinds of block_pattern. Adding one: a value here, a row in kBlockTypeNames
// (common/run_config.cpp) and a row in the mixer table (model/mixer.cpp).
enum class BlockType { kTransformer, kMamba, kMamba2 };

// "T", "M" or "M2".
const char* block_type_letter(BlockType t);

// Parses one pattern entry, case-insensitive: T/transformer, M/mamba or M2/mamba2. Returns
// false if not.
bool parse_block_type(const std::string& s, BlockType* out);

// The most layers a model may have (n_layer's limit); a pattern that would expand to more is
// refused while it is parsed, before it is expanded.
constexpr int kMaxPatternLayers = 1024;

// "T/transformer, M/mamba or M2/mamba2": the allowed entries, for error messages.
std::string block_type_choices();

// Parses a compact pattern: "TTMM", "T*12,M*8", "(T,M)*10", "T,transformer,M*2", "(T,M2*3)*3",
// "TM2M2" (a run of letters reads M2 as one token).
// Throws ConfigError naming `field` and the offending text.
std::vector<BlockType> parse_block_pattern(const std::string& text,
                                           const std::string& field = "block_pattern");

// The block_pattern field of a config (list or one compact string) as one type per layer.
// Empty list -> empty vector (the caller decides the default).
std::vector<BlockType> block_pattern_of(const RunConfig& cfg);

// Run-length form for display and sweep names: {T,T,M} -> "T*2,M".
std::string compact_block_pattern(const std::vector<BlockType>& pattern);

// The Mamba matrices a mamba_muon_params value sends to Muon, in the order in_proj, x_proj,
// dt_proj, out_proj ("none" -> empty). Throws ConfigError naming the field, the bad entry and
// the allowed values (an unknown name, a repeat, an empty entry).
std::vector<std::string> mamba_muon_param_list(const std::string& value);

// Reads a YAML (or JSON) file into a config. Unknown keys are errors. Paths: as given.
RunConfig load_config_file(const std::string& path);
// The same from text; `where` names the source in messages.
RunConfig config_from_yaml(const std::string& text, const std::string& where);

// Sets one field from text, as from `--key=value` (hyphens in key become underscores).
// The value is parsed as YAML, so lists ("[T, M]") and numbers work.
void apply_override(RunConfig* cfg, const std::string& key, const std::string& value);

// Applies `--key=value` / `--key value` arguments; returns the ones that are not config
// keys (so callers can reject them). Flags with hyphens or underscores are both accepted.
std::vector<std::string> apply_override_args(RunConfig* cfg, const std::vector<std::string>& args);

// True if `key` (after hyphen normalisation) names a RunConfig field.
bool is_config_key(const std::string& key);

// Validates and fills every derived field. The result has every field set.
// Throws ConfigError naming the first bad field.
RunConfig resolve_config(const RunConfig& cfg);

// Canonical JSON of a config (every set field, proto field names). Parses back identically.
std::string config_to_json(const RunConfig& cfg, bool pretty = true);
RunConfig config_from_json(const std::string& json);

// The JSON users read (`hylab config show`, `sweep submit --dry_run --format json`): as
// config_to_json, but 64-bit integers are JSON numbers (protobuf's JSON mapping writes them
// as strings). Field order is kept; config_from_json reads it back.
std::string config_to_display_json(const RunConfig& cfg);

// Stable 16-hex-digit hash of a resolved config's identity (config_identity below): the
// sweep de-duplication key. Keys a config does not use do not count:
std::string config_hash(const RunConfig& resolved);

// A resolved config with every key that it does not use set back to its default, so that
// two configs that train the same model the same way compare equal:
//   no Mamba layer:        mamba_*
//   no Mamba-2 layer:      mamba2_*
//   no M or M2 layer:      scalar_lr (it only steers their A_log, D, dt bias, conv, ...)
//   no Transformer layer:  n_head, n_kv_head, rope_base, rope (attention only)
//   num_iterations >= 0:   target_param_data_ratio (the horizon is explicit)
//   always:                depth (0; the resolved widths say it all)
// Requires a resolved config; the result is for comparing, not for training.
RunConfig config_identity(const RunConfig& resolved);

// The model's view of a resolved config, with typed pattern and derived sizes.
struct GPTConfig {
  int sequence_len = 2048;
  int vocab_size = 32768;
  int n_layer = 12;
  int n_embd = 768;   // C
  int n_head = 6;     // H
  int n_kv_head = 6;  // Hkv
  std::vector<BlockType> block_pattern;  // one per layer
  int mamba_d_state = 16;  // N
  int mamba_d_conv = 4;    // K
  int mamba_expand = 2;
  bool mamba_use_mlp = false;
  int mamba_dt_rank = 48;  // R
  double mamba_dt_min = 0.001;
  double mamba_dt_max = 0.1;
  double mamba_dt_init_floor = 1e-4;
  // Mamba-2 (M2) blocks (model/mamba2.h).
  int mamba2_d_state = 128;   // N
  int mamba2_headdim = 64;    // P
  int mamba2_ngroups = 1;     // G: heads share B and C in groups
  int mamba2_chunk_size = 64;  // Q: SSD chunk length
  int mamba2_expand = 2;
  int mamba2_d_conv = 4;      // K
  bool mamba2_use_mlp = true;
  double rope_base = 10000;
  bool rope = true;  // rotary embeddings in T blocks
  double logit_softcap = 15;
  bool fused_block = true;  // T blocks on CUDA use kernels/fused_block (not an architecture key)

  int head_dim() const { return n_embd / n_head; }                      // Dh
  int d_inner() const { return mamba_expand * n_embd; }                 // E
  int mamba2_d_inner() const { return mamba2_expand * n_embd; }         // E of an M2 block
  int mamba2_nheads() const { return mamba2_d_inner() / mamba2_headdim; }  // H of an M2 block
  int padded_vocab_size() const { return (vocab_size + 63) / 64 * 64; }  // V padded to 64
  int count(BlockType t) const;
};

// Requires a resolved config (resolve_config).
GPTConfig gpt_config(const RunConfig& resolved);

}  // namespace hylab
