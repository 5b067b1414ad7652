// `hylab data prepare`: text files -> a BPE tokenizer + token shards + meta.json.
//
// Input: `.txt` files (documents separated by one or more blank lines), `.jsonl` files (one
// JSON object per line with a string field "text" = one document), or folders searched
// recursively for both. Every file must be readable, non-empty, valid UTF-8.
//
// Output folder (written as OUT.partial/ and renamed over OUT at the end, so a crash never
// leaves a half-written data folder behind):
//   tokenizer.model       sentencepiece BPE, byte fallback (trainer/tokenizer.h)
//   train_000000.bin ...  token shards (trainer/shard.h); every document starts with BOS
//   val_000000.bin ...    the validation documents (every k-th document, k = 1/val_fraction)
//   meta.json             {"format": "hylab-tokens", "version": 1, "vocab_size", "bos_id",
//                          "train_tokens", "val_tokens", "train_bytes", "val_bytes",
//                          "train_documents", "val_documents", "sources": [...]}
// Torch-free.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace hylab::trainer {

struct PrepareOptions {
  std::vector<std::string> inputs;  // files or folders
  std::string out_dir;
  int vocab_size = 8192;
  double val_fraction = 0.01;       // 0 < f < 1; at least one document goes to validation
  int64_t shard_tokens = 100000000;  // tokens per shard file
  int64_t tokenizer_max_sentences = 2000000;  // lines sentencepiece samples for training
  int num_threads = 2;
};

struct PrepareResult {
  int vocab_size = 0;
  int64_t train_tokens = 0, val_tokens = 0;
  int64_t train_bytes = 0, val_bytes = 0;  // UTF-8 bytes of the documents' text
  int64_t train_documents = 0, val_documents = 0;
  int64_t train_shards = 0, val_shards = 0;
  double seconds = 0;
};

// Runs the whole preparation; `progress` receives one human-readable line per stage and
// periodic progress while encoding (may be empty). Throws hylab::Error on bad input.
PrepareResult prepare_data(const PrepareOptions& opt,
                           const std::function<void(const std::string&)>& progress);

// Byte offset of the first invalid UTF-8 sequence in s, or -1 if s is valid UTF-8.
int64_t utf8_error_offset(const std::string& s);

// Metadata of a prepared data folder (meta.json); throws hylab::Error with a hint if absent.
struct DataMeta {
  int vocab_size = 0;
  int bos_id = 1;
  int64_t train_tokens = 0, val_tokens = 0, train_bytes = 0, val_bytes = 0;
};
DataMeta read_data_meta(const std::string& dir);

}  // namespace hylab::trainer
