#include "common/run_config.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/util/json_util.h>
#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <iterator>
#include <sstream>

#include "common/check.h"
#include "common/config_keys.h"
#include "common/proto_json.h"

namespace hylab {
namespace {

namespace pb = google::protobuf;

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string normalise_key(std::string key) {
  while (!key.empty() && key[0] == '-') key.erase(0, 1);
  std::replace(key.begin(), key.end(), '-', '_');
  return key;
}

const pb::FieldDescriptor* find_field(const std::string& key) {
  return RunConfig::descriptor()->FindFieldByName(normalise_key(key));
}

// Sets one scalar field from a YAML scalar. `where` names the field for messages.
void set_scalar(RunConfig* cfg, const pb::FieldDescriptor* f, const YAML::Node& node,
                const std::string& where) {
  const pb::Reflection* r = cfg->GetReflection();
  if (!node.IsScalar()) {
    throw ConfigError(fmt::format("{}: expected a single value, got a {}", where,
                                  node.IsSequence() ? "list" : "map"));
  }
  const std::string text = node.Scalar();
  try {
    switch (f->cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_INT32:
        if (f->is_repeated()) break;
        r->SetInt32(cfg, f, node.as<int32_t>());
        return;
      case pb::FieldDescriptor::CPPTYPE_INT64:
        r->SetInt64(cfg, f, node.as<int64_t>());
        return;
      case pb::FieldDescriptor::CPPTYPE_DOUBLE:
        r->SetDouble(cfg, f, node.as<double>());
        return;
      case pb::FieldDescriptor::CPPTYPE_BOOL: {
        const std::string v = lower(text);
        if (v == "true" || v == "1" || v == "yes" || v == "on") {
          r->SetBool(cfg, f, true);
        } else if (v == "false" || v == "0" || v == "no" || v == "off") {
          r->SetBool(cfg, f, false);
        } else {
          throw ConfigError(fmt::format("{} = \"{}\": expected true or false", where, text));
        }
        return;
      }
      case pb::FieldDescriptor::CPPTYPE_STRING:
        if (f->is_repeated()) {
          r->AddString(cfg, f, text);
        } else {
          r->SetString(cfg, f, text);
        }
        return;
      default:
        break;
    }
  } catch (const YAML::Exception&) {
    const char* type = f->cpp_type() == pb::FieldDescriptor::CPPTYPE_DOUBLE ? "a number"
                                                                            : "an integer";
    throw ConfigError(fmt::format("{} = \"{}\": expected {}", where, text, type));
  }
  throw ConfigError(fmt::format("{}: unsupported field type", where));
}

// `checkpoint_keep: {last: L, best: B}`: the YAML form of checkpoint_keep_last/_best.
constexpr const char* kCheckpointKeep = "checkpoint_keep";

void set_checkpoint_keep(RunConfig* cfg, const YAML::Node& node) {
  if (!node.IsMap()) {
    throw ConfigError(fmt::format("{}: expected a map such as {{last: 1, best: 1}}", kCheckpointKeep));
  }
  for (const auto& kv : node) {
    const std::string k = kv.first.as<std::string>();
    if (k != "last" && k != "best") {
      throw ConfigError(fmt::format("{}.{}: unknown key; allowed: last, best", kCheckpointKeep, k));
    }
    const pb::FieldDescriptor* f = find_field(std::string(kCheckpointKeep) + "_" + k);
    set_scalar(cfg, f, kv.second, std::string(kCheckpointKeep) + "." + k);
  }
}

void set_field(RunConfig* cfg, const std::string& key, const YAML::Node& node) {
  if (normalise_key(key) == kCheckpointKeep) return set_checkpoint_keep(cfg, node);
  const pb::FieldDescriptor* f = find_field(key);
  if (f == nullptr) {
    throw ConfigError(fmt::format("unknown config key \"{}\"{}", key, unknown_config_key_hint(key)));
  }
  const pb::Reflection* r = cfg->GetReflection();
  if (f->is_repeated()) {
    r->ClearField(cfg, f);
    if (node.IsNull()) return;  // block_pattern: null = all Transformer
    if (node.IsSequence()) {
      for (size_t i = 0; i < node.size(); ++i) {
        set_scalar(cfg, f, node[i], fmt::format("{}[{}]", f->name(), i));
      }
      return;
    }
    set_scalar(cfg, f, node, f->name());
    return;
  }
  if (node.IsNull()) {
    r->ClearField(cfg, f);  // back to the default
    return;
  }
  set_scalar(cfg, f, node, f->name());
}

// ---- block pattern parser: list := item (',' item)* ; item := atom ('*' INT)? ;
//      atom := '(' list ')' | NAME (T, M, M2, transformer, mamba, mamba2) | run of T/M/M2 ----
class PatternParser {
 public:
  PatternParser(const std::string& text, const std::string& field) : s_(text), field_(field) {}

  std::vector<BlockType> parse() {
    std::vector<BlockType> out = list(0);
    skip_space();
    if (pos_ != s_.size()) fail(fmt::format("unexpected \"{}\"", s_.substr(pos_)));
    if (out.empty()) fail("empty pattern");
    return out;
  }

 private:
  // Syntax errors have no layer yet: they name the character (1-based).
  [[noreturn]] void fail(const std::string& why) const {
    throw ConfigError(fmt::format(
        "{} = \"{}\": {} at character {}; expected {}, "
        "e.g. \"TTMM\", \"T*12,M*8\", \"(T,M)*10\" or \"(T,M2*3)*3\"",
        field_, s_, why, pos_ + 1, block_type_choices()));
  }
  // A bad block type names the layer it would have been, as the list form does:
  // "T,T,X,T" -> block_pattern[2] = "X".
  [[noreturn]] void fail_layer(size_t layer, const std::string& word) const {
    throw ConfigError(fmt::format(
        "{}[{}] = \"{}\": unknown block type \"{}\" in {} = \"{}\"; expected {}, "
        "e.g. \"TTMM\", \"T*12,M*8\", \"(T,M)*10\" or \"(T,M2*3)*3\"",
        field_, layer, word, word, field_, s_, block_type_choices()));
  }
  void skip_space() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  // `first_layer`: the layer index the text being parsed starts at (for messages).
  // The layer count is checked before anything is expanded: "((T*999)*999)*999" is refused
  // from its size, not after allocating it.
  void check_layers(uint64_t layers) const {
    if (layers > kMaxPatternLayers) {
      fail(fmt::format("the pattern has more than {} layers", kMaxPatternLayers));
    }
  }
  std::vector<BlockType> list(size_t first_layer) {
    std::vector<BlockType> out = item(first_layer);
    skip_space();
    while (pos_ < s_.size() && s_[pos_] == ',') {
      ++pos_;
      std::vector<BlockType> more = item(first_layer + out.size());
      check_layers(uint64_t{out.size()} + more.size());
      out.insert(out.end(), more.begin(), more.end());
      skip_space();
    }
    return out;
  }
  std::vector<BlockType> item(size_t first_layer) {
    std::vector<BlockType> a = atom(first_layer);
    skip_space();
    if (pos_ < s_.size() && s_[pos_] == '*') {
      ++pos_;
      skip_space();
      size_t start = pos_;
      while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) ++pos_;
      if (start == pos_) fail("expected a repeat count after '*'");
      const std::string digits = s_.substr(start, pos_ - start);
      const long n = digits.size() > 6 ? 1000000 : std::stol(digits);
      if (n < 1 || n > 100000) fail(fmt::format("repeat count {} out of range 1..100000", digits));
      check_layers(uint64_t{a.size()} * static_cast<uint64_t>(n));
      std::vector<BlockType> out;
      for (long i = 0; i < n; ++i) out.insert(out.end(), a.begin(), a.end());
      return out;
    }
    return a;
  }
  std::vector<BlockType> atom(size_t first_layer) {
    skip_space();
    if (pos_ < s_.size() && s_[pos_] == '(') {
      if (++depth_ > kMaxNesting) fail(fmt::format("more than {} nested parentheses", kMaxNesting));
      ++pos_;
      std::vector<BlockType> inner = list(first_layer);
      --depth_;
      skip_space();
      if (pos_ >= s_.size() || s_[pos_] != ')') fail("missing ')'");
      ++pos_;
      return inner;
    }
    const size_t start = pos_;
    // Letters, then digits only as part of a name ("M2", "mamba2", "TM2M").
    while (pos_ < s_.size() && std::isalnum(static_cast<unsigned char>(s_[pos_]))) ++pos_;
    const std::string word = s_.substr(start, pos_ - start);
    if (word.empty()) fail("expected a block type");
    BlockType t;
    if (parse_block_type(word, &t)) return {t};
    // A run of letters: "TTMM", "TM2M2" (an M followed by 2 is one M2 layer).
    std::vector<BlockType> out;
    bool letters = word.size() > 1;
    for (size_t i = 0; i < word.size() && letters; ++i) {
      const size_t len = (i + 1 < word.size() && word[i + 1] == '2') ? 2 : 1;
      if (!parse_block_type(word.substr(i, len), &t)) {
        // "TTX": the letters are layers, so the bad one is layer first_layer + out.size();
        // a word that is no run of letters ("Q", "mambo", "M3") is one layer.
        const std::string rest = word.substr(i + len);
        if (std::isalpha(static_cast<unsigned char>(word[i])) &&
            rest.find_first_not_of("TtMm2") == std::string::npos) {
          fail_layer(first_layer + out.size(), word.substr(i, len));
        }
        letters = false;
        break;
      }
      out.push_back(t);
      i += len - 1;
    }
    if (!letters) fail_layer(first_layer, word);
    check_layers(out.size());
    return out;
  }

  static constexpr int kMaxNesting = 32;
  const std::string& s_;
  const std::string& field_;
  size_t pos_ = 0;
  int depth_ = 0;
};

constexpr int kMaxWidth = 1 << 20;     // n_embd, mamba_dt_rank, device_batch_size
constexpr int kMaxVocab = 1 << 28;
constexpr int kMaxSequence = 1 << 24;  // max_seq_len, sequence_len

void require(bool ok, const std::string& message) {
  if (!ok) throw ConfigError(message);
}

void require_one_of(const std::string& field, const std::string& value,
                    std::initializer_list<const char*> allowed) {
  std::string list;
  for (const char* a : allowed) {
    if (value == a) return;
    if (!list.empty()) list += ", ";
    list += a;
  }
  throw ConfigError(fmt::format("{} = \"{}\": expected one of {}", field, value, list));
}

}  // namespace

std::vector<std::string> mamba_muon_param_list(const std::string& value) {
  static const std::vector<std::string> kKinds = {"in_proj", "x_proj", "dt_proj", "out_proj"};
  if (value == "none") return {};
  std::vector<std::string> listed;
  size_t start = 0;
  while (true) {
    const size_t comma = value.find(',', start);
    std::string item = value.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    const size_t first = item.find_first_not_of(" \t");
    item = first == std::string::npos ? "" : item.substr(first, item.find_last_not_of(" \t") - first + 1);
    if (std::find(kKinds.begin(), kKinds.end(), item) == kKinds.end()) {
      throw ConfigError(fmt::format("mamba_muon_params = \"{}\": \"{}\" is not a Mamba matrix; "
                                    "expected none or a comma-separated list of in_proj, x_proj, "
                                    "dt_proj, out_proj", value, item));
    }
    if (std::find(listed.begin(), listed.end(), item) != listed.end()) {
      throw ConfigError(fmt::format("mamba_muon_params = \"{}\": \"{}\" is listed twice", value, item));
    }
    listed.push_back(item);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  std::vector<std::string> out;
  for (const std::string& k : kKinds) {
    if (std::find(listed.begin(), listed.end(), k) != listed.end()) out.push_back(k);
  }
  return out;
}

// One row per block type: its pattern letter and long name (both case-insensitive).
struct BlockTypeName {
  BlockType type;
  const char* letter;
  const char* name;
};
constexpr BlockTypeName kBlockTypeNames[] = {
    {BlockType::kTransformer, "T", "transformer"},
    {BlockType::kMamba, "M", "mamba"},
    {BlockType::kMamba2, "M2", "mamba2"},
};

const char* block_type_letter(BlockType t) {
  for (const auto& row : kBlockTypeNames) {
    if (row.type == t) return row.letter;
  }
  return "?";
}

bool parse_block_type(const std::string& s, BlockType* out) {
  const std::string v = lower(s);
  for (const auto& row : kBlockTypeNames) {
    if (v == lower(row.letter) || v == row.name) {
      *out = row.type;
      return true;
    }
  }
  return false;
}

std::string block_type_choices() {
  std::string out;
  const size_t n = std::size(kBlockTypeNames);
  for (size_t i = 0; i < n; ++i) {
    if (i > 0) out += i + 1 == n ? " or " : ", ";
    out += fmt::format("{}/{}", kBlockTypeNames[i].letter, kBlockTypeNames[i].name);
  }
  return out;
}

std::vector<BlockType> parse_block_pattern(const std::string& text, const std::string& field) {
  return PatternParser(text, field).parse();
}

std::vector<BlockType> block_pattern_of(const RunConfig& cfg) {
  std::vector<BlockType> out;
  if (cfg.block_pattern_size() == 1) return parse_block_pattern(cfg.block_pattern(0));
  for (int i = 0; i < cfg.block_pattern_size(); ++i) {
    BlockType t;
    if (!parse_block_type(cfg.block_pattern(i), &t)) {
      throw ConfigError(fmt::format("block_pattern[{}] = \"{}\": expected {}", i,
                                    cfg.block_pattern(i), block_type_choices()));
    }
    out.push_back(t);
  }
  return out;
}

std::string compact_block_pattern(const std::vector<BlockType>& pattern) {
  std::string out;
  for (size_t i = 0; i < pattern.size();) {
    size_t j = i;
    while (j < pattern.size() && pattern[j] == pattern[i]) ++j;
    if (!out.empty()) out += ",";
    out += block_type_letter(pattern[i]);
    if (j - i > 1) out += "*" + std::to_string(j - i);
    i = j;
  }
  return out;
}

int GPTConfig::count(BlockType t) const {
  return static_cast<int>(std::count(block_pattern.begin(), block_pattern.end(), t));
}

RunConfig load_config_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(fmt::format("cannot read config file {}", path));
  std::stringstream text;
  text << in.rdbuf();
  return config_from_yaml(text.str(), path);
}

RunConfig config_from_yaml(const std::string& text, const std::string& where) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw ConfigError(fmt::format("{}: not valid YAML: {}", where, e.what()));
  }
  RunConfig cfg;
  if (root.IsNull()) return cfg;
  if (!root.IsMap()) throw ConfigError(fmt::format("{}: expected a map of config keys", where));
  for (const auto& kv : root) {
    if (!kv.first.IsScalar()) throw ConfigError(fmt::format("{}: a key that is not a name", where));
    const std::string key = kv.first.as<std::string>();
    try {
      set_field(&cfg, key, kv.second);
    } catch (const ConfigError& e) {
      throw ConfigError(fmt::format("{}: {}", where, e.what()));
    }
  }
  return cfg;
}

bool is_config_key(const std::string& key) {
  return find_field(key) != nullptr || normalise_key(key) == kCheckpointKeep;
}

void apply_override(RunConfig* cfg, const std::string& key, const std::string& value) {
  YAML::Node node;
  try {
    node = YAML::Load(value);
  } catch (const YAML::Exception&) {
    node = YAML::Node(value);  // not YAML: take the text as it is
  }
  // A plain string such as "T*12,M*8" parses as a scalar already; "[T, M]" as a list.
  set_field(cfg, key, node);
}

std::vector<std::string> apply_override_args(RunConfig* cfg, const std::vector<std::string>& args) {
  std::vector<std::string> rest;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--", 0) != 0) {
      rest.push_back(a);
      continue;
    }
    const size_t eq = a.find('=');
    const std::string key = a.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    if (!is_config_key(key)) {
      rest.push_back(a);
      continue;
    }
    std::string value;
    if (eq != std::string::npos) {
      value = a.substr(eq + 1);
    } else if (i + 1 < args.size() && args[i + 1].rfind("--", 0) != 0) {
      value = args[++i];
    } else if (find_field(key) && find_field(key)->cpp_type() == pb::FieldDescriptor::CPPTYPE_BOOL) {
      value = "true";  // a bare boolean flag
    } else {
      throw ConfigError(fmt::format("--{} needs a value", normalise_key(key)));
    }
    apply_override(cfg, key, value);
  }
  return rest;
}

RunConfig resolve_config(const RunConfig& in) {
  RunConfig c = in;

  // depth: the one dial, as nanochat derives it. Fields set explicitly win.
  // depth 0 means "widths given directly" (what resolving writes), so a resolved config
  // resolves again to itself.
  if (c.has_depth() && c.depth() != 0) {
    require(c.depth() >= 1 && c.depth() <= 256,
            fmt::format("depth = {}: expected 1..256, or 0 for widths given directly", c.depth()));
    const int n_embd = c.depth() * 64;
    const int n_head = std::max(1, (n_embd + 127) / 128);
    if (!c.has_n_layer()) c.set_n_layer(c.depth());
    if (!c.has_n_embd()) c.set_n_embd(n_embd);
    if (!c.has_n_head()) c.set_n_head(n_head);
    if (!c.has_n_kv_head()) c.set_n_kv_head(c.n_head());
  } else {
    c.set_depth(0);  // 0 = widths given directly
  }

  if (!c.has_n_kv_head()) c.set_n_kv_head(c.n_head());  // plain multi-head unless told

  std::vector<BlockType> pattern = block_pattern_of(c);
  if (!pattern.empty() && !c.has_n_layer()) {
    c.set_n_layer(static_cast<int>(pattern.size()));  // pattern alone decides the depth
  }
  require(c.n_layer() >= 1 && c.n_layer() <= 1024,
          fmt::format("n_layer = {}: expected 1..1024", c.n_layer()));
  if (pattern.empty()) pattern.assign(c.n_layer(), BlockType::kTransformer);
  require(static_cast<int>(pattern.size()) == c.n_layer(),
          fmt::format("block_pattern has {} entries ({}) but n_layer is {}", pattern.size(),
                      compact_block_pattern(pattern), c.n_layer()));
  c.clear_block_pattern();
  for (BlockType t : pattern) c.add_block_pattern(block_type_letter(t));

  // Upper bounds keep every size product (parameter, FLOP and cache-byte counts, d_inner,
  // padded vocab) far inside int64 (and int where it is stored as int): a huge config is a
  // clear error here, not a negative parameter count later.
  require(c.n_embd() >= 1 && c.n_embd() <= kMaxWidth,
          fmt::format("n_embd = {}: expected 1..{}", c.n_embd(), kMaxWidth));
  require(c.n_head() >= 1, fmt::format("n_head = {}: expected >= 1", c.n_head()));
  require(c.n_kv_head() >= 1, fmt::format("n_kv_head = {}: expected >= 1", c.n_kv_head()));
  require(c.n_embd() % c.n_head() == 0,
          fmt::format("n_embd = {} is not divisible by n_head = {}", c.n_embd(), c.n_head()));
  require((c.n_embd() / c.n_head()) % 2 == 0,
          fmt::format("head_dim = n_embd/n_head = {} must be even (rotary embeddings)",
                      c.n_embd() / c.n_head()));
  require(c.n_head() % c.n_kv_head() == 0,
          fmt::format("n_kv_head = {} must divide n_head = {}", c.n_kv_head(), c.n_head()));
  require(c.vocab_size() >= 2 && c.vocab_size() <= kMaxVocab,
          fmt::format("vocab_size = {}: expected 2..{}", c.vocab_size(), kMaxVocab));

  require(c.mamba_d_state() >= 1 && c.mamba_d_state() <= 256,
          fmt::format("mamba_d_state = {}: expected 1..256", c.mamba_d_state()));
  require(c.mamba_d_conv() >= 2 && c.mamba_d_conv() <= 4,
          fmt::format("mamba_d_conv = {}: expected 2..4", c.mamba_d_conv()));
  require(c.mamba_expand() >= 1 && c.mamba_expand() <= 16,
          fmt::format("mamba_expand = {}: expected 1..16", c.mamba_expand()));
  require(c.mamba_dt_rank() >= 0 && c.mamba_dt_rank() <= kMaxWidth,
          fmt::format("mamba_dt_rank = {}: expected 1..{}, or 0 for auto", c.mamba_dt_rank(), kMaxWidth));
  if (c.mamba_dt_rank() == 0) c.set_mamba_dt_rank((c.n_embd() + 15) / 16);
  require(c.mamba_dt_min() > 0 && c.mamba_dt_min() < c.mamba_dt_max() && c.mamba_dt_max() <= 1,
          fmt::format("mamba_dt_min = {}, mamba_dt_max = {}: expected 0 < dt_min < dt_max <= 1",
                      c.mamba_dt_min(), c.mamba_dt_max()));
  require(c.mamba_dt_init_floor() > 0,
          fmt::format("mamba_dt_init_floor = {}: expected > 0", c.mamba_dt_init_floor()));
  require(c.mamba2_d_state() >= 64 && c.mamba2_d_state() <= 256,
          fmt::format("mamba2_d_state = {}: expected 64..256", c.mamba2_d_state()));
  require(c.mamba2_headdim() >= 1 && c.mamba2_headdim() <= 256,
          fmt::format("mamba2_headdim = {}: expected 1..256", c.mamba2_headdim()));
  require(c.mamba2_ngroups() >= 1,
          fmt::format("mamba2_ngroups = {}: expected >= 1", c.mamba2_ngroups()));
  require(c.mamba2_chunk_size() >= 1 && c.mamba2_chunk_size() <= 1024,
          fmt::format("mamba2_chunk_size = {}: expected 1..1024", c.mamba2_chunk_size()));
  require(c.mamba2_expand() >= 1 && c.mamba2_expand() <= 16,
          fmt::format("mamba2_expand = {}: expected 1..16", c.mamba2_expand()));
  require(c.mamba2_d_conv() >= 2 && c.mamba2_d_conv() <= 4,
          fmt::format("mamba2_d_conv = {}: expected 2..4 (the conv kernel's widths)",
                      c.mamba2_d_conv()));
  if (std::count(pattern.begin(), pattern.end(), BlockType::kMamba2) > 0) {
    // The head split only matters when there is an M2 layer to split.
    const int e2 = c.mamba2_expand() * c.n_embd();
    require(e2 % c.mamba2_headdim() == 0,
            fmt::format("mamba2_headdim = {} must divide mamba2_expand * n_embd = {}",
                        c.mamba2_headdim(), e2));
    require((e2 / c.mamba2_headdim()) % c.mamba2_ngroups() == 0,
            fmt::format("mamba2_ngroups = {} must divide the M2 heads (mamba2_expand * n_embd / "
                        "mamba2_headdim = {})",
                        c.mamba2_ngroups(), e2 / c.mamba2_headdim()));
  }
  require(c.rope_base() > 0, fmt::format("rope_base = {}: expected > 0", c.rope_base()));
  require(c.logit_softcap() >= 0,
          fmt::format("logit_softcap = {}: expected >= 0 (0 = off)", c.logit_softcap()));

  require(c.device_batch_size() >= 1 && c.device_batch_size() <= kMaxWidth,
          fmt::format("device_batch_size = {}: expected 1..{}", c.device_batch_size(), kMaxWidth));
  require(c.max_seq_len() >= 1 && c.max_seq_len() <= kMaxSequence,
          fmt::format("max_seq_len = {}: expected 1..{}", c.max_seq_len(), kMaxSequence));
  if (!c.has_sequence_len()) c.set_sequence_len(c.max_seq_len());
  require(c.sequence_len() >= c.max_seq_len(),
          fmt::format("sequence_len = {} is shorter than max_seq_len = {}", c.sequence_len(),
                      c.max_seq_len()));
  require(c.sequence_len() <= kMaxSequence,
          fmt::format("sequence_len = {}: expected at most {}", c.sequence_len(), kMaxSequence));
  require(c.total_batch_size() == -1 || c.total_batch_size() >= 1,
          fmt::format("total_batch_size = {}: expected >= 1, or -1 for one micro-step",
                      c.total_batch_size()));
  require(c.num_iterations() == -1 || c.num_iterations() >= 0,
          fmt::format("num_iterations = {}: expected >= 0, or -1 for the Chinchilla horizon",
                      c.num_iterations()));
  for (auto [name, v] : {std::pair<const char*, double>{"target_flops", c.target_flops()},
                         {"target_tokens", c.target_tokens()}}) {
    require(v == -1 || (v > 0 && std::isfinite(v)),
            fmt::format("{} = {}: expected > 0, or -1 for no budget", name, v));
  }
  {
    std::vector<std::string> horizons;
    if (c.num_iterations() >= 0) horizons.push_back(fmt::format("num_iterations = {}", c.num_iterations()));
    if (c.target_flops() > 0) horizons.push_back(fmt::format("target_flops = {:g}", c.target_flops()));
    if (c.target_tokens() > 0) horizons.push_back(fmt::format("target_tokens = {:g}", c.target_tokens()));
    if (horizons.size() > 1) {
      throw ConfigError(fmt::format("{} and {} both set the horizon: set one (the other to -1)",
                                    horizons[0], horizons[1]));
    }
  }
  require(c.checkpoint_keep_last() == -1 || c.checkpoint_keep_last() >= 1,
          fmt::format("checkpoint_keep_last = {}: expected >= 1 (the newest checkpoint is what "
                      "--resume needs), or -1 to keep every checkpoint",
                      c.checkpoint_keep_last()));
  require(c.checkpoint_keep_best() >= 0,
          fmt::format("checkpoint_keep_best = {}: expected >= 0", c.checkpoint_keep_best()));
  require(c.target_param_data_ratio() > 0,
          fmt::format("target_param_data_ratio = {}: expected > 0", c.target_param_data_ratio()));
  for (auto [name, v] : {std::pair<const char*, double>{"embedding_lr", c.embedding_lr()},
                         {"unembedding_lr", c.unembedding_lr()},
                         {"matrix_lr", c.matrix_lr()},
                         {"scalar_lr", c.scalar_lr()},
                         {"weight_decay", c.weight_decay()},
                         {"grad_clip", c.grad_clip()}}) {
    require(v >= 0 && std::isfinite(v), fmt::format("{} = {}: expected >= 0", name, v));
  }
  require(c.adam_beta1() >= 0 && c.adam_beta1() < 1 && c.adam_beta2() >= 0 && c.adam_beta2() < 1,
          "adam_beta1 and adam_beta2: expected 0 <= beta < 1");
  require(c.warmup_ratio() >= 0 && c.warmdown_ratio() >= 0 &&
              c.warmup_ratio() + c.warmdown_ratio() <= 1,
          fmt::format("warmup_ratio = {}, warmdown_ratio = {}: expected >= 0 with sum <= 1",
                      c.warmup_ratio(), c.warmdown_ratio()));
  require(c.final_lr_frac() >= 0 && c.final_lr_frac() <= 1,
          fmt::format("final_lr_frac = {}: expected 0..1", c.final_lr_frac()));
  for (auto [name, v] : {std::pair<const char*, int>{"eval_every", c.eval_every()},
                         {"sample_every", c.sample_every()},
                         {"checkpoint_every", c.checkpoint_every()}}) {
    require(v >= 0, fmt::format("{} = {}: expected >= 0 (0 = only at the end/never)", name, v));
  }
  require(c.log_every() >= 1, fmt::format("log_every = {}: expected >= 1", c.log_every()));
  require(c.probe_steps() >= 0,
          fmt::format("probe_steps = {}: expected >= 0 (0 = skip the inference probe)", c.probe_steps()));
  require(c.eval_tokens() >= 1, fmt::format("eval_tokens = {}: expected >= 1", c.eval_tokens()));
  // The recall probe (trainer/recall_probe.h): pairs 0 = as many as fit twice in max_seq_len
  // (context and queries), at most 64.
  require(c.recall_probes() >= 0 && c.recall_probes() <= 100000,
          fmt::format("recall_probes = {}: expected 0..100000 (0 = skip the recall probe)", c.recall_probes()));
  require(c.recall_key_len() >= 1 && c.recall_key_len() <= 64,
          fmt::format("recall_key_len = {}: expected 1..64", c.recall_key_len()));
  require(c.recall_value_len() >= 1 && c.recall_value_len() <= 64,
          fmt::format("recall_value_len = {}: expected 1..64", c.recall_value_len()));
  require(c.recall_pairs() >= 0 && c.recall_pairs() <= 4096,
          fmt::format("recall_pairs = {}: expected 0..4096 (0 = auto from max_seq_len)", c.recall_pairs()));
  if (c.recall_pairs() == 0) {
    const int per_pair = c.recall_key_len() + c.recall_value_len();
    c.set_recall_pairs(std::max(1, std::min(64, (c.max_seq_len() - 1) / (2 * per_pair))));
  }
  require_one_of("device", c.device(), {"auto", "cpu", "cuda"});
  require_one_of("dtype", c.dtype(), {"auto", "bf16", "fp32"});
  require_one_of("kernels", c.kernels(), {"auto", "reference"});
  {  // canonical form: the listed kinds in model order, or "none"
    std::string canonical;
    for (const std::string& k : mamba_muon_param_list(c.mamba_muon_params())) {
      canonical += (canonical.empty() ? "" : ",") + k;
    }
    c.set_mamba_muon_params(canonical.empty() ? "none" : canonical);
  }
  require(c.ddp_bucket_mb() > 0 && std::isfinite(c.ddp_bucket_mb()),
          fmt::format("ddp_bucket_mb = {}: expected > 0 (MiB per gradient bucket)", c.ddp_bucket_mb()));
  require(!c.name().empty(), "name: must not be empty");

  // Make every field explicit so the stored JSON is complete.
  const pb::Descriptor* d = RunConfig::descriptor();
  const pb::Reflection* r = c.GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const pb::FieldDescriptor* f = d->field(i);
    if (f->is_repeated() || r->HasField(c, f)) continue;
    switch (f->cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_INT32: r->SetInt32(&c, f, r->GetInt32(c, f)); break;
      case pb::FieldDescriptor::CPPTYPE_INT64: r->SetInt64(&c, f, r->GetInt64(c, f)); break;
      case pb::FieldDescriptor::CPPTYPE_DOUBLE: r->SetDouble(&c, f, r->GetDouble(c, f)); break;
      case pb::FieldDescriptor::CPPTYPE_BOOL: r->SetBool(&c, f, r->GetBool(c, f)); break;
      case pb::FieldDescriptor::CPPTYPE_STRING: r->SetString(&c, f, r->GetString(c, f)); break;
      default: break;
    }
  }
  return c;
}

std::string config_to_json(const RunConfig& cfg, bool pretty) {
  pb::util::JsonPrintOptions opt;
  opt.add_whitespace = pretty;
  opt.preserve_proto_field_names = true;
  std::string out;
  auto status = message_to_json(cfg, &out, opt);  // proto_json.h: the library's output, faster
  HYLAB_CHECK(status.ok(), "config_to_json: {}", status.ToString());
  return out;
}

std::string config_to_display_json(const RunConfig& cfg) {
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(config_to_json(cfg, false));
  const pb::Descriptor* d = RunConfig::descriptor();
  for (int i = 0; i < d->field_count(); ++i) {
    const pb::FieldDescriptor* f = d->field(i);
    if (f->cpp_type() != pb::FieldDescriptor::CPPTYPE_INT64 || f->is_repeated()) continue;
    auto it = j.find(f->name());
    if (it != j.end() && it->is_string()) *it = std::stoll(it->get<std::string>());
  }
  return j.dump(2);
}

RunConfig config_from_json(const std::string& json) {
  RunConfig cfg;
  pb::util::JsonParseOptions opt;
  auto status = json_to_message(json, &cfg, opt);  // proto_json.h: the library's result, faster
  if (!status.ok()) throw ConfigError("config JSON: " + status.ToString());
  return cfg;
}

RunConfig config_identity(const RunConfig& resolved) {
  RunConfig c = resolved;
  const std::vector<BlockType> pattern = block_pattern_of(c);
  const bool any_mamba = std::count(pattern.begin(), pattern.end(), BlockType::kMamba) > 0;
  const bool any_mamba2 = std::count(pattern.begin(), pattern.end(), BlockType::kMamba2) > 0;
  const bool any_attention = std::count(pattern.begin(), pattern.end(), BlockType::kTransformer) > 0;
  const pb::Descriptor* d = RunConfig::descriptor();
  const pb::Reflection* r = c.GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const pb::FieldDescriptor* f = d->field(i);
    const std::string& name = f->name();
    const bool unused = (!any_mamba && name.rfind("mamba_", 0) == 0) ||
                        (!any_mamba2 && name.rfind("mamba2_", 0) == 0) ||
                        (!any_mamba && !any_mamba2 && name == "scalar_lr") ||
                        (!any_attention && (name == "n_head" || name == "n_kv_head" ||
                                            name == "rope_base" || name == "rope")) ||
                        (c.num_iterations() >= 0 && name == "target_param_data_ratio") ||
                        name == "depth";
    if (unused) r->ClearField(&c, f);
  }
  return c;
}

std::string config_hash(const RunConfig& resolved) {
  const std::string json = config_to_json(config_identity(resolved), false);
  uint64_t h = 1469598103934665603ull;  // FNV-1a 64
  for (unsigned char ch : json) {
    h ^= ch;
    h *= 1099511628211ull;
  }
  return fmt::format("{:016x}", h);
}

GPTConfig gpt_config(const RunConfig& r) {
  GPTConfig g;
  g.sequence_len = r.sequence_len();
  g.vocab_size = r.vocab_size();
  g.n_layer = r.n_layer();
  g.n_embd = r.n_embd();
  g.n_head = r.n_head();
  g.n_kv_head = r.n_kv_head();
  g.block_pattern = block_pattern_of(r);
  if (g.block_pattern.empty()) g.block_pattern.assign(g.n_layer, BlockType::kTransformer);
  HYLAB_CHECK(static_cast<int>(g.block_pattern.size()) == g.n_layer,
              "gpt_config needs a resolved config (block_pattern {} vs n_layer {})",
              g.block_pattern.size(), g.n_layer);
  g.mamba_d_state = r.mamba_d_state();
  g.mamba_d_conv = r.mamba_d_conv();
  g.mamba_expand = r.mamba_expand();
  g.mamba_use_mlp = r.mamba_use_mlp();
  g.mamba_dt_rank = r.mamba_dt_rank() > 0 ? r.mamba_dt_rank() : (r.n_embd() + 15) / 16;
  g.mamba_dt_min = r.mamba_dt_min();
  g.mamba_dt_max = r.mamba_dt_max();
  g.mamba_dt_init_floor = r.mamba_dt_init_floor();
  g.mamba2_d_state = r.mamba2_d_state();
  g.mamba2_headdim = r.mamba2_headdim();
  g.mamba2_ngroups = r.mamba2_ngroups();
  g.mamba2_chunk_size = r.mamba2_chunk_size();
  g.mamba2_expand = r.mamba2_expand();
  g.mamba2_d_conv = r.mamba2_d_conv();
  g.mamba2_use_mlp = r.mamba2_use_mlp();
  g.rope_base = r.rope_base();
  g.rope = r.rope();
  g.logit_softcap = r.logit_softcap();
  g.fused_block = r.fused_block();
  return g;
}

}  // namespace hylab
