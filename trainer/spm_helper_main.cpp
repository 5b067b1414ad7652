// hylab-spm: runs sentencepiece in a process of its own.
//
// Why a separate process: Debian's libsentencepiece (0.1.97) carries a private copy of
// protobuf 3.14 and exports its symbols. In a process that also loads the system
// libprotobuf (ours, and LibTorch's), sentencepiece's calls bind to protobuf 3.21 and abort
// at start-up ("compiled against version 3.14.0 ... not compatible with 3.21.12"). This
// program links sentencepiece and nothing that pulls in protobuf, so it has no conflict. It
// must stay free of hylab_common and LibTorch. The client side is trainer/tokenizer.cpp.
//
//   hylab-spm train OUT_MODEL key=value...   training lines on stdin, one per line
//   hylab-spm encode MODEL                   framed requests on stdin, framed replies on stdout:
//     request  = u32 n_docs, then per doc: u32 n_bytes, bytes
//     reply    = per doc: u32 n_ids, then n_ids x i32
// Exit status 0 on success; 1 with a one-line reason on stderr otherwise.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/fd_io.h"

namespace {

using hylab::read_all;
using hylab::write_all;

class StdinLines : public sentencepiece::SentenceIterator {
 public:
  StdinLines() { Next(); }
  bool done() const override { return done_; }
  void Next() override { done_ = !std::getline(std::cin, line_); }
  const std::string& value() const override { return line_; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  std::string line_;
  bool done_ = false;
};

int fail(const std::string& what) {
  std::fprintf(stderr, "hylab-spm: %s\n", what.c_str());
  return 1;
}

int train(int argc, char** argv) {
  if (argc < 3) return fail("usage: hylab-spm train OUT_MODEL key=value...");
  std::unordered_map<std::string, std::string> args;
  for (int i = 3; i < argc; ++i) {
    const std::string kv = argv[i];
    const size_t eq = kv.find('=');
    if (eq == std::string::npos) return fail("argument \"" + kv + "\" is not key=value");
    args[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  std::ios::sync_with_stdio(false);
  StdinLines lines;
  std::string model;
  const auto status = sentencepiece::SentencePieceTrainer::Train(args, &lines, &model);
  if (!status.ok()) return fail(status.ToString());
  std::ofstream out(argv[2], std::ios::binary);
  out.write(model.data(), static_cast<std::streamsize>(model.size()));
  out.close();
  if (!out) return fail(std::string("cannot write ") + argv[2]);
  return 0;
}

int encode(int argc, char** argv) {
  if (argc != 3) return fail("usage: hylab-spm encode MODEL");
  sentencepiece::SentencePieceProcessor sp;
  const auto status = sp.Load(argv[2]);
  if (!status.ok()) return fail(std::string(argv[2]) + ": " + status.ToString());
  std::string doc;
  std::vector<int> ids;
  std::vector<char> reply;
  for (uint32_t n_docs; read_all(0, &n_docs, 4);) {
    reply.clear();
    for (uint32_t d = 0; d < n_docs; ++d) {
      uint32_t n = 0;
      if (!read_all(0, &n, 4)) return fail("truncated request");
      doc.resize(n);
      if (n && !read_all(0, doc.data(), n)) return fail("truncated request");
      const auto st = sp.Encode(doc, &ids);
      if (!st.ok()) return fail("encode: " + st.ToString());
      const uint32_t count = static_cast<uint32_t>(ids.size());
      const char* c = reinterpret_cast<const char*>(&count);
      reply.insert(reply.end(), c, c + 4);
      const char* p = reinterpret_cast<const char*>(ids.data());
      reply.insert(reply.end(), p, p + 4 * ids.size());
    }
    if (!write_all(1, reply.data(), reply.size())) return fail("cannot write reply");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string cmd = argc > 1 ? argv[1] : "";
  if (cmd == "train") return train(argc, argv);
  if (cmd == "encode") return encode(argc, argv);
  return fail("usage: hylab-spm train OUT_MODEL key=value... | hylab-spm encode MODEL");
}
