#include "common/suggest.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>

namespace hylab {
namespace {

std::string canonical(std::string s) {
  while (!s.empty() && s[0] == '-') s.erase(0, 1);
  for (char& c : s) {
    c = c == '-' ? '_' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return s;
}

}  // namespace

int edit_distance(const std::string& a, const std::string& b) {
  const size_t n = a.size(), m = b.size();
  // d[i][j]: distance between a[0:i] and b[0:j].
  std::vector<std::vector<int>> d(n + 1, std::vector<int>(m + 1));
  for (size_t i = 0; i <= n; ++i) d[i][0] = static_cast<int>(i);
  for (size_t j = 0; j <= m; ++j) d[0][j] = static_cast<int>(j);
  for (size_t i = 1; i <= n; ++i) {
    for (size_t j = 1; j <= m; ++j) {
      const int cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[n][m];
}

std::string nearest_name(const std::string& word, const std::vector<std::string>& names) {
  const std::string w = canonical(word);
  if (w.empty()) return "";
  const int limit = std::min(3, std::max(1, static_cast<int>(w.size()) / 4));
  std::string best;
  int best_d = limit + 1;
  std::vector<std::string> prefixed;
  for (const auto& name : names) {
    const std::string c = canonical(name);
    if (c == w) continue;  // an exact name is not a typo of itself
    // The distance is at least the length difference: skip the O(|w| x |c|) table when that
    // alone rules the name out (a 4 KiB "key" from a fuzzer or a bad file costs nothing).
    const int length_gap = std::abs(static_cast<int>(w.size()) - static_cast<int>(c.size()));
    const int d = length_gap >= best_d ? length_gap : edit_distance(w, c);
    if (d < best_d) {
      best_d = d;
      best = name;
    }
    if (w.size() >= 3 && c.compare(0, w.size(), w) == 0) prefixed.push_back(name);
  }
  if (!best.empty()) return best;
  return prefixed.size() == 1 ? prefixed.front() : "";
}

}  // namespace hylab
