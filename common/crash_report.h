// A stack trace on stderr when the process dies of a fatal signal (SIGSEGV, SIGBUS, SIGFPE,
// SIGILL, SIGABRT), then the default action: the exit status still says which signal (the
// worker classifies a trainer's death by it), and the report says where.
//
//   int main(...) { hylab::install_crash_report("hylab"); ... }
#pragma once

namespace hylab {

// Idempotent. `program` must outlive the process (a string literal).
void install_crash_report(const char* program);

}  // namespace hylab
