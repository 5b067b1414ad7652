// libprotobuf's own log lines, rate-limited.
//
// libprotobuf prints some errors itself, on stderr, once per occurrence: a build without
// NDEBUG (CMAKE_BUILD_TYPE=Debug) checks every string field it parses or serialises and
// prints "String field 'hylab.proto.Hello.host' contains invalid UTF-8 data when parsing a
// protocol buffer" for each one, so a peer sending garbage could grow a daemon's log without
// bound (issue 15). wire::decode replaces invalid UTF-8 itself (common/utf8.h); these lines
// are noise, but a flood of them hides what matters.
//
// limit_protobuf_logs() installs a handler (google::protobuf::SetLogHandler) that sends
// them to spdlog through a LogLimit: at most 10 lines per source line of libprotobuf per
// 10 s, then one line that counts the rest. FATAL lines are always logged (libprotobuf
// aborts after them). Idempotent and thread-safe; the hylab binary and the coordinator
// install it at start.
#pragma once

#include <cstdint>

namespace hylab {

void limit_protobuf_logs();

// Lines of libprotobuf not logged since the handler was installed (for tests).
int64_t protobuf_log_lines_suppressed();

}  // namespace hylab
