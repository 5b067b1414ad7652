// `hylab data prepare`: text -> tokenizer + token shards; `hylab data info`: what a data
// folder holds. The work is in trainer/data_prepare.h.
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include "cli/command.h"
#include "cli/usage.h"
#include "common/check.h"
#include "trainer/data_prepare.h"

namespace hylab::cli {
namespace {

struct PrepareArgs {
  std::vector<std::string> inputs;
  std::string out;
  int vocab_size = 8192;
  double val_fraction = 0.01;
  int64_t shard_tokens = 100000000;
  int threads = 0;
};

void setup(CLI::App& root) {
  auto* cmd = root.add_subcommand("data", "Prepare training data: tokenizer and token shards");
  cmd->require_subcommand(1);

  auto a = std::make_shared<PrepareArgs>();
  auto* prep = cmd->add_subcommand(
      "prepare", "Train a BPE tokenizer (sentencepiece, byte fallback) on text and write token shards");
  prep->add_option("--input", a->inputs,
                   "Text files (.txt: documents separated by blank lines; .jsonl: a \"text\" field "
                   "per line) or folders of them")
      ->required()
      ->expected(1, -1);
  prep->add_option("--out", a->out, "Output data folder, e.g. data/default")->required();
  prep->add_option(flag("vocab_size"), a->vocab_size, "Tokenizer vocabulary size")
      ->capture_default_str()
      ->check(CLI::Range(260, 1 << 24));
  prep->add_option(flag("val_fraction"), a->val_fraction,
                   "Fraction of documents held out for validation")
      ->capture_default_str();
  prep->add_option(flag("shard_tokens"), a->shard_tokens, "Tokens per shard file")
      ->capture_default_str();
  prep->add_option("--threads", a->threads, "Threads (default: all cores)");
  prep->callback([a] {
    trainer::PrepareOptions opt;
    opt.inputs = a->inputs;
    opt.out_dir = a->out;
    opt.vocab_size = a->vocab_size;
    opt.val_fraction = a->val_fraction;
    opt.shard_tokens = a->shard_tokens;
    opt.num_threads = a->threads > 0 ? a->threads
                                     : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    const auto r = trainer::prepare_data(opt, [](const std::string& line) {
      std::fprintf(stderr, "%s\n", line.c_str());
    });
    std::printf(
        "wrote %s: vocab_size %d, train %lld tokens (%lld documents, %lld bytes, %lld shards), "
        "val %lld tokens (%lld documents, %lld bytes) in %.1f s\n",
        a->out.c_str(), r.vocab_size, static_cast<long long>(r.train_tokens),
        static_cast<long long>(r.train_documents), static_cast<long long>(r.train_bytes),
        static_cast<long long>(r.train_shards), static_cast<long long>(r.val_tokens),
        static_cast<long long>(r.val_documents), static_cast<long long>(r.val_bytes), r.seconds);
  });

  auto dir = std::make_shared<std::string>();
  auto* info = cmd->add_subcommand("info", "Print a data folder's meta.json");
  // One input, accepted as `info DIR` or `info --data DIR`; listed once in --help.
  info->add_option("folder", *dir, "Data folder, e.g. data/default (also accepted as --data DIR)");
  info->add_option("--data", *dir)->group("");
  info->callback([dir] {
    if (dir->empty()) throw UsageError("which data folder? e.g. `hylab data info data/default`");
    trainer::read_data_meta(*dir);  // validates, with a hint if it is not a data folder
    std::ifstream in(*dir + "/meta.json");
    std::stringstream ss;
    ss << in.rdbuf();
    std::printf("%s", ss.str().c_str());
  });
}

HYLAB_REGISTER_COMMAND("data", 20, setup);

}  // namespace
}  // namespace hylab::cli
