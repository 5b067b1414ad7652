// "Did you mean ...?": the nearest valid name to a mistyped flag or config key.
#pragma once

#include <string>
#include <vector>

namespace hylab {

// The name in `names` closest to `word` (edit distance with adjacent transpositions;
// hyphens count as underscores, case is ignored), or "" when none is close enough:
// within max(1, length/4) edits (at most 3), or the only name that `word` (3+ characters) is
// a prefix of. Ties go to the earlier name.
std::string nearest_name(const std::string& word, const std::vector<std::string>& names);

// Optimal-string-alignment distance between a and b (exposed for tests).
int edit_distance(const std::string& a, const std::string& b);

}  // namespace hylab
