// Tokenizer glue: a sentencepiece BPE model with byte fallback, trained by `hylab data
// prepare` and used by the trainer (bits per byte, text samples) and `hylab generate`.
//
// Training settings keep text byte-exact: identity normalisation, no dummy prefix, no
// whitespace folding, byte fallback for every character outside the vocabulary. Hence
// decode(encode(s)) == s for valid UTF-8, and the bytes a token stands for are well defined
// (token_bytes), which is what validation bits-per-byte divides by.
// Ids: 0 = <unk>, 1 = <s> (BOS, prepended to every document), 2 = </s>.
//
// sentencepiece itself runs in the helper program `hylab-spm` (trainer/spm_helper_main.cpp
// says why: its bundled protobuf collides with ours in one process). Training and encoding
// go through the helper; decoding and piece byte lengths read the model's piece table here
// (the protobuf wire format of ModelProto.pieces: piece, score, type), which needs no
// sentencepiece at all. Torch-free.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/spawn.h"

namespace hylab::trainer {

// Path of the hylab-spm helper: $HYLAB_SPM_HELPER, else next to the running executable,
// else the build tree's copy. Throws hylab::Error with a hint if none exists.
std::string spm_helper_path();

// One running hylab-spm encoder. Not thread-safe: use one per thread.
class TokenizerEncoder {
 public:
  explicit TokenizerEncoder(const std::string& model_path);  // throws hylab::Error
  ~TokenizerEncoder();
  // Token ids of each document (no BOS added).
  std::vector<std::vector<int>> encode(const std::vector<const std::string*>& docs);

 private:
  std::string model_path_;
  Process proc_;
};

class Tokenizer {
 public:
  enum class PieceType { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };
  struct Piece {
    std::string text;
    float score = 0;
    PieceType type = PieceType::kNormal;
  };

  // Loads a sentencepiece model file. Throws hylab::Error naming the path.
  static Tokenizer load(const std::string& model_path);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  int vocab_size() const { return static_cast<int>(pieces_.size()); }
  int bos_id() const { return bos_id_; }
  const Piece& piece(int id) const { return pieces_.at(static_cast<size_t>(id)); }
  const std::string& path() const { return path_; }
  // The file's bytes (what tokenizer.model holds).
  const std::string& serialized() const { return serialized_; }

  // Text of ids: pieces with U+2581 as space, byte pieces as raw bytes, control pieces empty,
  // unknown as U+2047 (sentencepiece's surface). Ids out of range throw hylab::Error.
  std::string decode(const std::vector<int>& ids) const;
  // Per id, the number of UTF-8 bytes of text it stands for: a piece's bytes with U+2581
  // counted as one byte (a space), 1 for a byte piece <0xNN>, 0 for control/unknown/unused.
  std::vector<int32_t> token_bytes() const;
  // Encodes through a hylab-spm helper started on first use (not thread-safe).
  std::vector<int> encode(const std::string& text) const;

 private:
  Tokenizer() = default;
  std::string path_, serialized_;
  std::vector<Piece> pieces_;
  int bos_id_ = -1;
  mutable std::unique_ptr<TokenizerEncoder> encoder_;
};

struct TokenizerTrainOptions {
  int vocab_size = 8192;
  int64_t max_sentences = 2000000;  // sentencepiece samples at most this many lines
  int num_threads = 2;
};

// Trains a BPE tokenizer on the lines that next_line yields (false when done; lines carry
// no '\n') and writes the model to out_model_path. Throws hylab::Error with sentencepiece's
// reason and a hint (e.g. vocab_size too small for the character set).
void train_tokenizer(const std::function<bool(std::string*)>& next_line,
                     const TokenizerTrainOptions& opt, const std::string& out_model_path);

}  // namespace hylab::trainer
