// Deterministic generated text for trainer tests (no network, no corpus): pseudo-English
// sentences from a small vocabulary with punctuation, digits and a few non-ASCII words (so
// byte fallback and multi-byte characters are exercised).
#pragma once

#include <cstdint>
#include <string>

namespace hylab::trainer::testing {

// `docs` documents separated by blank lines, each a few sentences long.
inline std::string generated_text(int docs, uint64_t seed = 1) {
  static const char* kWords[] = {
      "the", "a", "model", "learns", "from", "text", "and", "data", "of", "every", "layer",
      "state", "space", "attention", "mamba", "transformer", "token", "batch", "loss", "falls",
      "when", "training", "runs", "long", "enough", "on", "small", "machines", "with", "two",
      "cores", "we", "measure", "bits", "per", "byte", "in", "validation", "sets", "it", "is",
      "not", "hard", "to", "see", "why", "café", "naïve", "größe", "日本", "über", "river",
      "stone", "garden", "quickly", "slowly", "bright", "dark", "window", "mountain", "city",
      "people", "said", "would", "could", "history", "music", "water", "light", "yesterday"};
  const int n_words = sizeof(kWords) / sizeof(kWords[0]);
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  auto next = [&s] {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  };
  std::string out;
  for (int d = 0; d < docs; ++d) {
    const int sentences = 2 + static_cast<int>(next() % 5);
    for (int k = 0; k < sentences; ++k) {
      const int len = 4 + static_cast<int>(next() % 10);
      for (int w = 0; w < len; ++w) {
        std::string word = kWords[next() % n_words];
        if (w == 0) word[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(word[0])));
        if (next() % 17 == 0) word = std::to_string(next() % 2000);
        out += word;
        if (w + 1 < len) out += (next() % 11 == 0) ? ", " : " ";
      }
      out += (next() % 7 == 0) ? "?" : ".";
      out += (k + 1 < sentences) ? (next() % 3 == 0 ? "\n" : " ") : "";
    }
    out += "\n\n";
  }
  return out;
}

}  // namespace hylab::trainer::testing
