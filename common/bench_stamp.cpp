#include "common/bench_stamp.h"

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>

#include "common/check.h"

namespace hylab {

std::string bench_commit() {
  if (const char* c = std::getenv("HYLAB_COMMIT"); c != nullptr && c[0] != '\0') return c;
  std::string s;
  if (FILE* f = popen("git rev-parse --short=12 HEAD 2>/dev/null", "r")) {
    char buf[64];
    while (std::fgets(buf, sizeof buf, f)) s += buf;
    pclose(f);
  }
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s.empty() ? "unknown" : s;
}

std::string utc_timestamp() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

void emit_bench_json(const nlohmann::json& doc, const std::string& out_path) {
  const std::string text = doc.dump(2) + "\n";
  std::fputs(text.c_str(), stdout);
  if (!out_path.empty()) {
    std::ofstream f(out_path);
    if (!(f << text)) throw Error(fmt::format("--out = {}: cannot write", out_path));
  }
}

}  // namespace hylab
