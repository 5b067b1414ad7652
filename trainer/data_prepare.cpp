#include "trainer/data_prepare.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <memory>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/check.h"
#include "trainer/shard.h"
#include "trainer/tokenizer.h"

namespace hylab::trainer {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

bool has_text_extension(const fs::path& p) {
  const std::string ext = p.extension().string();
  return ext == ".txt" || ext == ".jsonl";
}

// Expands inputs into a sorted, de-duplicated list of .txt/.jsonl files.
std::vector<fs::path> collect_files(const std::vector<std::string>& inputs) {
  if (inputs.empty()) HYLAB_FAIL("no --input given: pass text files (.txt, .jsonl) or folders");
  std::vector<fs::path> files;
  for (const std::string& in : inputs) {
    std::error_code ec;
    const fs::path p(in);
    if (fs::is_directory(p, ec)) {
      std::vector<fs::path> found;
      for (auto it = fs::recursive_directory_iterator(p, ec); !ec && it != fs::end(it);
           it.increment(ec)) {
        if (it->is_regular_file() && has_text_extension(it->path())) found.push_back(it->path());
      }
      if (ec) HYLAB_FAIL("cannot read input folder {}: {}", in, ec.message());
      if (found.empty()) HYLAB_FAIL("input folder {} holds no .txt or .jsonl files", in);
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else if (fs::is_regular_file(p, ec)) {
      if (!has_text_extension(p)) {
        HYLAB_FAIL("input {}: unsupported file type \"{}\"; expected .txt (documents separated by "
                   "blank lines) or .jsonl (objects with a \"text\" field)", in,
                   p.extension().string());
      }
      files.push_back(p);
    } else {
      HYLAB_FAIL("input {} does not exist or is not a readable file or folder", in);
    }
  }
  std::sort(files.begin(), files.end());
  files.erase(std::unique(files.begin(), files.end()), files.end());
  return files;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) HYLAB_FAIL("cannot read input file {}", p.string());
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) HYLAB_FAIL("error while reading input file {}", p.string());
  return ss.str();
}

// 1-based line number of a byte offset, for error messages.
int64_t line_of(const std::string& s, int64_t offset) {
  return 1 + std::count(s.begin(), s.begin() + offset, '\n');
}

bool is_blank(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isspace(c); });
}

// Splits a .txt file's contents into documents at blank lines; trims outer newlines.
void split_txt(const std::string& text, std::vector<std::string>* docs) {
  std::string doc, line;
  std::istringstream in(text);
  auto flush = [&] {
    if (!doc.empty() && !is_blank(doc)) docs->push_back(doc);
    doc.clear();
  };
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (is_blank(line)) {
      flush();
      continue;
    }
    if (!doc.empty()) doc += '\n';
    doc += line;
  }
  flush();
}

void split_jsonl(const fs::path& p, const std::string& text, std::vector<std::string>* docs) {
  std::istringstream in(text);
  std::string line;
  int64_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (is_blank(line)) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      HYLAB_FAIL("{}:{}: not valid JSON ({}); expected one object with a \"text\" field per line",
                 p.string(), lineno, e.what());
    }
    if (!j.is_object() || !j.contains("text") || !j["text"].is_string()) {
      HYLAB_FAIL("{}:{}: expected an object with a string field \"text\"", p.string(), lineno);
    }
    std::string doc = j["text"].get<std::string>();
    if (!is_blank(doc)) docs->push_back(std::move(doc));
  }
}

// Calls fn(line) for every non-empty line of the training documents, long lines cut at
// spaces into pieces of at most kMaxLine bytes (sentencepiece drops longer sentences).
class LineFeeder {
 public:
  explicit LineFeeder(const std::vector<const std::string*>& docs) : docs_(docs) {}
  bool next(std::string* out) {
    constexpr size_t kMaxLine = 8000;
    while (doc_ < docs_.size()) {
      const std::string& d = *docs_[doc_];
      if (pos_ >= d.size()) {
        ++doc_;
        pos_ = 0;
        continue;
      }
      size_t end = d.find('\n', pos_);
      if (end == std::string::npos) end = d.size();
      if (end - pos_ > kMaxLine) {
        size_t cut = d.rfind(' ', pos_ + kMaxLine);
        end = (cut != std::string::npos && cut > pos_) ? cut : pos_ + kMaxLine;
        // Never cut inside a UTF-8 sequence.
        while (end > pos_ && (static_cast<unsigned char>(d[end]) & 0xC0) == 0x80) --end;
      }
      *out = d.substr(pos_, end - pos_);
      pos_ = (end < d.size() && (d[end] == '\n' || d[end] == ' ')) ? end + 1 : end;
      if (!out->empty()) return true;
    }
    return false;
  }

 private:
  const std::vector<const std::string*>& docs_;
  size_t doc_ = 0, pos_ = 0;
};

// Encodes docs (BOS + ids each) and writes shards named {split}_NNNNNN.bin; returns counts.
struct SplitStats {
  int64_t tokens = 0, bytes = 0, shards = 0, token_bytes_sum = 0;
};

SplitStats encode_split(const std::string& split, const std::vector<const std::string*>& docs,
                        const Tokenizer& tok, const std::vector<int32_t>& token_bytes,
                        const PrepareOptions& opt, const fs::path& dir,
                        const std::function<void(const std::string&)>& progress) {
  SplitStats st;
  const int threads = std::max(1, opt.num_threads);
  const size_t chunk = 4096;  // documents encoded per parallel round, then written in order
  std::vector<std::unique_ptr<TokenizerEncoder>> encoders;
  for (int t = 0; t < threads; ++t) encoders.push_back(std::make_unique<TokenizerEncoder>(tok.path()));
  std::vector<uint32_t> buf;
  auto flush_shard = [&](bool final) {
    while (static_cast<int64_t>(buf.size()) >= opt.shard_tokens || (final && !buf.empty())) {
      const size_t n = std::min<size_t>(buf.size(), opt.shard_tokens);
      std::vector<uint32_t> part(buf.begin(), buf.begin() + n);
      const std::string name = fmt::format("{}_{:06d}.bin", split, st.shards++);
      write_shard((dir / name).string(), part, tok.vocab_size());
      buf.erase(buf.begin(), buf.begin() + n);
    }
  };
  const auto t0 = Clock::now();
  auto last_report = t0;
  for (size_t begin = 0; begin < docs.size(); begin += chunk) {
    const size_t end = std::min(docs.size(), begin + chunk);
    // Each thread encodes a contiguous half (third, ...) of the chunk with its own helper.
    std::vector<std::vector<int>> ids(end - begin);
    std::vector<std::thread> pool;
    std::vector<std::string> errors(encoders.size());
    const size_t per = (end - begin + encoders.size() - 1) / encoders.size();
    for (size_t t = 0; t < encoders.size(); ++t) {
      const size_t lo = begin + t * per, hi = std::min(end, lo + per);
      if (lo >= hi) break;
      pool.emplace_back([&, t, lo, hi] {
        try {
          std::vector<const std::string*> part(docs.begin() + lo, docs.begin() + hi);
          auto got = encoders[t]->encode(part);
          for (size_t i = lo; i < hi; ++i) ids[i - begin] = std::move(got[i - lo]);
        } catch (const std::exception& e) {
          errors[t] = e.what();
        }
      });
    }
    for (auto& th : pool) th.join();
    for (const std::string& e : errors) {
      if (!e.empty()) HYLAB_FAIL("{}", e);
    }
    for (size_t i = begin; i < end; ++i) {
      buf.push_back(static_cast<uint32_t>(tok.bos_id()));
      for (int id : ids[i - begin]) {
        buf.push_back(static_cast<uint32_t>(id));
        st.token_bytes_sum += token_bytes[id];
      }
      st.tokens += 1 + static_cast<int64_t>(ids[i - begin].size());
      st.bytes += static_cast<int64_t>(docs[i]->size());
    }
    flush_shard(false);
    if (progress && (seconds_since(last_report) > 2.0 || end == docs.size())) {
      last_report = Clock::now();
      const double dt = std::max(1e-9, seconds_since(t0));
      progress(fmt::format("  {}: encoded {}/{} documents, {} tokens, {:.1f} MB/s", split, end,
                           docs.size(), st.tokens, st.bytes / dt / 1e6));
    }
  }
  flush_shard(true);
  return st;
}

}  // namespace

int64_t utf8_error_offset(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07;
    } else {
      return static_cast<int64_t>(i);
    }
    if (i + len > n) return static_cast<int64_t>(i);
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return static_cast<int64_t>(i);
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    // Overlong forms, surrogates and values above U+10FFFF are invalid.
    const bool overlong = (len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
                          (len == 4 && cp < 0x10000);
    if (overlong || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return static_cast<int64_t>(i);
    i += len;
  }
  return -1;
}

namespace {

PrepareResult prepare_data_impl(const PrepareOptions& opt,
                                const std::function<void(const std::string&)>& progress) {
  const auto t0 = Clock::now();
  auto say = [&](const std::string& s) {
    if (progress) progress(s);
  };
  if (!(opt.val_fraction > 0 && opt.val_fraction < 1)) {
    HYLAB_FAIL("val_fraction = {}: expected 0 < val_fraction < 1", opt.val_fraction);
  }
  if (opt.out_dir.empty()) HYLAB_FAIL("--out is required: the data folder to write, e.g. data/default");
  HYLAB_CHECK(opt.shard_tokens >= 1024, "shard_tokens = {}: expected >= 1024", opt.shard_tokens);

  // 1. Read and validate every input file.
  const std::vector<fs::path> files = collect_files(opt.inputs);
  std::vector<std::string> docs;
  int64_t total_bytes = 0;
  nlohmann::json sources = nlohmann::json::array();
  for (const fs::path& f : files) {
    const std::string text = read_file(f);
    if (is_blank(text)) HYLAB_FAIL("input file {} is empty (no text to train on)", f.string());
    const int64_t bad = utf8_error_offset(text);
    if (bad >= 0) {
      HYLAB_FAIL("input file {} is not valid UTF-8: byte {} (line {}) is 0x{:02x}; convert it, "
                 "e.g. with `iconv -f latin1 -t utf-8`", f.string(), bad, line_of(text, bad),
                 static_cast<unsigned char>(text[bad]));
    }
    const size_t before = docs.size();
    if (f.extension() == ".jsonl") {
      split_jsonl(f, text, &docs);
    } else {
      split_txt(text, &docs);
    }
    if (docs.size() == before) HYLAB_FAIL("input file {} holds no documents", f.string());
    total_bytes += static_cast<int64_t>(text.size());
    sources.push_back({{"path", f.string()}, {"bytes", text.size()}, {"documents", docs.size() - before}});
  }
  say(fmt::format("read {} files, {} documents, {:.1f} MB", files.size(), docs.size(),
                  total_bytes / 1e6));
  if (docs.size() < 2) {
    HYLAB_FAIL("the input holds {} document(s); need at least 2 (one for validation). .txt files "
               "separate documents with blank lines", docs.size());
  }

  // 2. Split: every k-th document (from the middle of each stride) goes to validation.
  const int64_t stride = std::max<int64_t>(2, std::llround(1.0 / opt.val_fraction));
  std::vector<const std::string*> train_docs, val_docs;
  for (size_t i = 0; i < docs.size(); ++i) {
    (static_cast<int64_t>(i) % stride == stride / 2 ? val_docs : train_docs).push_back(&docs[i]);
  }
  if (val_docs.empty()) {  // fewer documents than one stride
    val_docs.push_back(train_docs.back());
    train_docs.pop_back();
  }

  // 3. Tokenizer, trained on the training documents only.
  fs::path out(opt.out_dir);
  fs::path partial = out.string() + ".partial";
  std::error_code ec;
  fs::remove_all(partial, ec);
  fs::create_directories(partial, ec);
  if (ec) HYLAB_FAIL("cannot create {}: {}", partial.string(), ec.message());
  const auto t_tok = Clock::now();
  say(fmt::format("training BPE tokenizer: vocab_size {}, byte fallback ({} threads)...",
                  opt.vocab_size, opt.num_threads));
  TokenizerTrainOptions topt;
  topt.vocab_size = opt.vocab_size;
  topt.max_sentences = opt.tokenizer_max_sentences;
  topt.num_threads = opt.num_threads;
  LineFeeder feeder(train_docs);
  const std::string model_path = (partial / "tokenizer.model").string();
  train_tokenizer([&](std::string* s) { return feeder.next(s); }, topt, model_path);
  const Tokenizer tok = Tokenizer::load(model_path);
  const std::vector<int32_t> token_bytes = tok.token_bytes();
  say(fmt::format("tokenizer trained in {:.1f} s ({} pieces)", seconds_since(t_tok),
                  tok.vocab_size()));

  // 4. Encode both splits into shards.
  const SplitStats tr = encode_split("train", train_docs, tok, token_bytes, opt, partial, progress);
  const SplitStats va = encode_split("val", val_docs, tok, token_bytes, opt, partial, progress);
  // The tokenizer is byte-exact, so the bytes tokens stand for should add up to the text's;
  // a literal U+2581 in the text is the one known exception (counted as 1 byte, not 3).
  if (tr.token_bytes_sum != tr.bytes || va.token_bytes_sum != va.bytes) {
    say(fmt::format("warning: token byte lengths ({} train, {} val) differ from the text's bytes "
                    "({}, {}); bits per byte uses the token byte lengths", tr.token_bytes_sum,
                    va.token_bytes_sum, tr.bytes, va.bytes));
  }

  PrepareResult r;
  r.vocab_size = tok.vocab_size();
  r.train_tokens = tr.tokens;
  r.val_tokens = va.tokens;
  r.train_bytes = tr.bytes;
  r.val_bytes = va.bytes;
  r.train_documents = static_cast<int64_t>(train_docs.size());
  r.val_documents = static_cast<int64_t>(val_docs.size());
  r.train_shards = tr.shards;
  r.val_shards = va.shards;
  nlohmann::json meta = {
      {"format", "hylab-tokens"},     {"version", 1},
      {"vocab_size", r.vocab_size},   {"bos_id", tok.bos_id()},
      {"token_dtype", token_bytes_for_vocab(r.vocab_size) == 2 ? "uint16" : "uint32"},
      {"train_tokens", r.train_tokens}, {"val_tokens", r.val_tokens},
      {"train_bytes", r.train_bytes}, {"val_bytes", r.val_bytes},
      {"train_documents", r.train_documents}, {"val_documents", r.val_documents},
      {"val_fraction", opt.val_fraction}, {"sources", sources},
  };
  {
    std::ofstream f(partial / "meta.json");
    f << meta.dump(2) << "\n";
    if (!f) HYLAB_FAIL("cannot write {}", (partial / "meta.json").string());
  }

  // 5. Replace the output folder (only if it is a data folder we wrote before).
  if (fs::exists(out, ec)) {
    if (!fs::exists(out / "meta.json", ec) && !fs::is_empty(out, ec)) {
      HYLAB_FAIL("output folder {} exists and is not a hylab data folder (no meta.json); choose "
                 "another --out or remove it", out.string());
    }
    fs::remove_all(out, ec);
    if (ec) HYLAB_FAIL("cannot replace {}: {}", out.string(), ec.message());
  }
  if (out.has_parent_path()) fs::create_directories(out.parent_path(), ec);
  fs::rename(partial, out, ec);
  if (ec) HYLAB_FAIL("cannot rename {} to {}: {}", partial.string(), out.string(), ec.message());
  r.seconds = seconds_since(t0);
  return r;
}

}  // namespace

PrepareResult prepare_data(const PrepareOptions& opt,
                           const std::function<void(const std::string&)>& progress) {
  try {
    return prepare_data_impl(opt, progress);
  } catch (...) {
    std::error_code ec;  // leave no half-written OUT.partial behind
    if (!opt.out_dir.empty()) fs::remove_all(opt.out_dir + ".partial", ec);
    throw;
  }
}

DataMeta read_data_meta(const std::string& dir) {
  const fs::path p = fs::path(dir) / "meta.json";
  std::ifstream in(p);
  if (!in) {
    HYLAB_FAIL("data folder {} has no meta.json; create it with `hylab data prepare --input TEXT "
               "--out {}` (scripts/fetch_corpus.sh fetches the default corpus)", dir, dir);
  }
  nlohmann::json j;
  try {
    in >> j;
    DataMeta m;
    m.vocab_size = j.at("vocab_size").get<int>();
    m.bos_id = j.value("bos_id", 1);
    m.train_tokens = j.at("train_tokens").get<int64_t>();
    m.val_tokens = j.at("val_tokens").get<int64_t>();
    m.train_bytes = j.value("train_bytes", int64_t{0});
    m.val_bytes = j.value("val_bytes", int64_t{0});
    return m;
  } catch (const nlohmann::json::exception& e) {
    HYLAB_FAIL("{}: not a valid data meta file: {}", p.string(), e.what());
  }
}

}  // namespace hylab::trainer
