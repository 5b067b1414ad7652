// Our own web assets (dashboard/web/*), embedded into the binary at build time by
// dashboard/embed_web.cmake, so `hylab` serves them wherever it is installed. The chart
// library is not among them: it is fetched at setup into the build directory
// (scripts/fetch_web.sh).
#pragma once

#include <string>

namespace hylab::dashboard {

struct WebAsset {
  const char* name;          // file name under dashboard/web/, e.g. "app.js"
  const char* content_type;  // e.g. "text/javascript; charset=utf-8"
  const char* body;          // NUL-terminated text
};

// nullptr if there is no such asset.
const WebAsset* find_web_asset(const std::string& name);

}  // namespace hylab::dashboard
