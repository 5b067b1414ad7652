#include "trainer/tokenizer.h"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/check.h"
#include "common/fd_io.h"

#ifndef HYLAB_SPM_HELPER_DEFAULT
#define HYLAB_SPM_HELPER_DEFAULT ""
#endif

namespace hylab::trainer {
namespace fs = std::filesystem;
namespace {

const char kWhitespaceMarker[] = "\xe2\x96\x81";  // U+2581, sentencepiece's space

// Minimal protobuf wire-format reader: just enough for ModelProto.pieces.
class WireReader {
 public:
  WireReader(const char* p, size_t n, const std::string& origin) : p_(p), end_(p + n), origin_(origin) {}
  bool done() const { return p_ >= end_; }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      need(1);
      const uint8_t b = static_cast<uint8_t>(*p_++);
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    bad("varint too long");
  }
  std::string_view bytes() {
    const uint64_t n = varint();
    need(n);
    std::string_view s(p_, n);
    p_ += n;
    return s;
  }
  uint32_t fixed32() {
    need(4);
    uint32_t v;
    std::memcpy(&v, p_, 4);
    p_ += 4;
    return v;
  }
  void skip(int wire_type) {
    switch (wire_type) {
      case 0: varint(); break;
      case 1: need(8), p_ += 8; break;
      case 2: bytes(); break;
      case 5: need(4), p_ += 4; break;
      default: bad("unsupported wire type " + std::to_string(wire_type));
    }
  }

 private:
  void need(uint64_t n) {
    if (static_cast<uint64_t>(end_ - p_) < n) bad("truncated");
  }
  [[noreturn]] void bad(const std::string& why) {
    HYLAB_FAIL("{}: not a sentencepiece model ({})", origin_, why);
  }
  const char* p_;
  const char* end_;
  const std::string& origin_;
};

Tokenizer::Piece parse_piece(std::string_view msg, const std::string& origin) {
  Tokenizer::Piece piece;
  WireReader r(msg.data(), msg.size(), origin);
  while (!r.done()) {
    const uint64_t key = r.varint();
    const int field = static_cast<int>(key >> 3), wire = static_cast<int>(key & 7);
    if (field == 1 && wire == 2) {
      piece.text = std::string(r.bytes());
    } else if (field == 2 && wire == 5) {
      const uint32_t bits = r.fixed32();
      std::memcpy(&piece.score, &bits, 4);
    } else if (field == 3 && wire == 0) {
      piece.type = static_cast<Tokenizer::PieceType>(r.varint());
    } else {
      r.skip(wire);
    }
  }
  return piece;
}

// Parses "<0xNN>" into its byte value; -1 if the text is not of that form.
int byte_piece_value(const std::string& t) {
  if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
  return static_cast<int>(std::strtol(t.substr(3, 2).c_str(), nullptr, 16));
}

std::string read_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) HYLAB_FAIL("cannot read {} {}", what, path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

std::string spm_helper_path() {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("HYLAB_SPM_HELPER"); env && *env) candidates.push_back(env);
  candidates.push_back((fs::path(self_executable_path()).parent_path() / "hylab-spm").string());
  if (*HYLAB_SPM_HELPER_DEFAULT) candidates.push_back(HYLAB_SPM_HELPER_DEFAULT);
  for (const std::string& c : candidates) {
    if (::access(c.c_str(), X_OK) == 0) return c;
  }
  HYLAB_FAIL("the sentencepiece helper hylab-spm was not found (looked at {}); it is built next "
             "to the hylab executable (`ninja hylab-spm`), or set HYLAB_SPM_HELPER",
             fmt::join(candidates, ", "));
}

TokenizerEncoder::TokenizerEncoder(const std::string& model_path) : model_path_(model_path) {
  SpawnOptions opt;
  opt.pipe_stdin = opt.pipe_stdout = true;
  proc_ = Process::spawn({spm_helper_path(), "encode", model_path}, opt);
}

TokenizerEncoder::~TokenizerEncoder() {
  proc_.close_stdin();  // the helper exits at EOF
  proc_.wait();
}

std::vector<std::vector<int>> TokenizerEncoder::encode(const std::vector<const std::string*>& docs) {
  std::string req;
  const uint32_t n_docs = static_cast<uint32_t>(docs.size());
  req.append(reinterpret_cast<const char*>(&n_docs), 4);
  for (const std::string* d : docs) {
    HYLAB_CHECK(d->size() < (1ull << 32), "document of {} bytes is too large to encode", d->size());
    const uint32_t n = static_cast<uint32_t>(d->size());
    req.append(reinterpret_cast<const char*>(&n), 4);
    req.append(*d);
  }
  std::vector<std::vector<int>> out(docs.size());
  bool ok = write_all(proc_.stdin_fd(), req.data(), req.size());
  for (size_t i = 0; ok && i < docs.size(); ++i) {
    uint32_t count = 0;
    ok = read_all(proc_.stdout_fd(), &count, 4);
    out[i].resize(count);
    if (ok && count) ok = read_all(proc_.stdout_fd(), out[i].data(), 4ull * count);
  }
  if (!ok) {
    proc_.close_stdin();
    const int code = proc_.wait().code();
    HYLAB_FAIL("the tokenizer helper (hylab-spm encode {}) stopped with exit code {}; its reason "
               "is on stderr above", model_path_, code);
  }
  return out;
}

Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::load(const std::string& model_path) {
  Tokenizer t;
  t.path_ = model_path;
  std::ifstream probe(model_path);
  if (!probe) {
    HYLAB_FAIL("cannot read tokenizer {}; `hylab data prepare` writes it into the data folder and "
               "the trainer copies it into each run folder", model_path);
  }
  t.serialized_ = read_file(model_path, "tokenizer");
  WireReader r(t.serialized_.data(), t.serialized_.size(), model_path);
  while (!r.done()) {
    const uint64_t key = r.varint();
    const int field = static_cast<int>(key >> 3), wire = static_cast<int>(key & 7);
    if (field == 1 && wire == 2) {
      t.pieces_.push_back(parse_piece(r.bytes(), model_path));
    } else {
      r.skip(wire);
    }
  }
  if (t.pieces_.empty()) HYLAB_FAIL("{}: not a sentencepiece model (no pieces)", model_path);
  for (size_t i = 0; i < t.pieces_.size(); ++i) {
    if (t.pieces_[i].type == PieceType::kControl && t.pieces_[i].text == "<s>") {
      t.bos_id_ = static_cast<int>(i);
    }
  }
  if (t.bos_id_ < 0) HYLAB_FAIL("{}: the model has no <s> (BOS) piece", model_path);
  return t;
}

std::string Tokenizer::decode(const std::vector<int>& ids) const {
  std::string out;
  for (int id : ids) {
    if (id < 0 || id >= vocab_size()) {
      HYLAB_FAIL("token id {} is outside the tokenizer's vocabulary (0..{})", id, vocab_size() - 1);
    }
    const Piece& p = pieces_[static_cast<size_t>(id)];
    switch (p.type) {
      case PieceType::kControl:
      case PieceType::kUnused:
        break;
      case PieceType::kUnknown:
        out += " \xe2\x81\x87 ";  // U+2047
        break;
      case PieceType::kByte: {
        const int b = byte_piece_value(p.text);
        if (b >= 0) out += static_cast<char>(b);
        break;
      }
      default:
        for (size_t i = 0; i < p.text.size();) {
          if (p.text.compare(i, 3, kWhitespaceMarker) == 0) {
            out += ' ';
            i += 3;
          } else {
            out += p.text[i++];
          }
        }
    }
  }
  return out;
}

std::vector<int32_t> Tokenizer::token_bytes() const {
  std::vector<int32_t> out(pieces_.size(), 0);
  for (size_t id = 0; id < pieces_.size(); ++id) {
    const Piece& p = pieces_[id];
    if (p.type == PieceType::kByte) {
      out[id] = 1;
    } else if (p.type == PieceType::kNormal || p.type == PieceType::kUserDefined) {
      int32_t bytes = 0;
      for (size_t i = 0; i < p.text.size(); ++bytes) {
        i += p.text.compare(i, 3, kWhitespaceMarker) == 0 ? 3 : 1;
      }
      out[id] = bytes;
    }
  }
  return out;
}

std::vector<int> Tokenizer::encode(const std::string& text) const {
  if (!encoder_) encoder_ = std::make_unique<TokenizerEncoder>(path_);
  return encoder_->encode({&text}).front();
}

void train_tokenizer(const std::function<bool(std::string*)>& next_line,
                     const TokenizerTrainOptions& opt, const std::string& out_model_path) {
  if (opt.vocab_size < 256 + 4) {
    HYLAB_FAIL("vocab_size = {}: a byte-fallback tokenizer needs 256 byte pieces + 3 specials + "
               "the text's distinct characters; use --vocab_size >= 512", opt.vocab_size);
  }
  const std::vector<std::string> args = {
      "model_type=bpe",
      "vocab_size=" + std::to_string(opt.vocab_size),
      "byte_fallback=true",
      "character_coverage=0.9995",
      "normalization_rule_name=identity",
      "add_dummy_prefix=false",
      "remove_extra_whitespaces=false",
      "split_digits=true",
      "allow_whitespace_only_pieces=true",
      "max_sentence_length=16384",
      "input_sentence_size=" + std::to_string(opt.max_sentences),
      "shuffle_input_sentence=true",
      "num_threads=" + std::to_string(std::max(1, opt.num_threads)),
      "unk_id=0",
      "bos_id=1",
      "eos_id=2",
      "pad_id=-1",
      "minloglevel=1",
  };
  std::vector<std::string> argv = {spm_helper_path(), "train", out_model_path};
  argv.insert(argv.end(), args.begin(), args.end());
  // The helper's stderr goes to a file so that its reason can be quoted in our error.
  const std::string err_path = out_model_path + ".stderr";
  SpawnOptions sopt;
  sopt.pipe_stdin = true;
  sopt.stderr_file = err_path;
  Process proc = Process::spawn(argv, sopt);
  std::string line;
  bool ok = true;
  while (ok && next_line(&line)) {
    line += '\n';
    ok = write_all(proc.stdin_fd(), line.data(), line.size());
  }
  proc.close_stdin();
  const int code = proc.wait().code();
  std::string reason;
  {
    std::ifstream in(err_path);
    std::stringstream ss;
    ss << in.rdbuf();
    reason = ss.str();
    while (!reason.empty() && (reason.back() == '\n' || reason.back() == ' ')) reason.pop_back();
    // Keep the last lines: the reason, not the progress log.
    size_t cut = reason.size();
    for (int lines = 0; lines < 4 && cut != std::string::npos && cut > 0; ++lines) {
      cut = reason.rfind('\n', cut - 1);
    }
    if (cut != std::string::npos && cut < reason.size()) reason = reason.substr(cut + 1);
  }
  std::remove(err_path.c_str());
  if (code != 0) {
    std::string hint;
    if (reason.find("required_chars") != std::string::npos) {
      hint = "; with byte fallback vocab_size must be >= 256 + the number of distinct characters "
             "+ 3 specials: raise --vocab_size";
    } else if (reason.find("Vocabulary size too high") != std::string::npos) {
      hint = "; the text is too small for that many pieces: lower --vocab_size or add text";
    }
    HYLAB_FAIL("training the tokenizer (vocab_size {}) failed (exit {}): {}{}", opt.vocab_size,
               code, reason.empty() ? "no reason given" : reason, hint);
  }
}

}  // namespace hylab::trainer
