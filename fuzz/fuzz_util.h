// Shared by the fuzz targets: what counts as a finding.
//
// The parsers under test reject bad input by throwing (hylab::Error, or a library's parse
// exception that every caller catches as std::exception). A rejection is fine. A finding
// is anything else: a sanitizer report, a crash, a timeout, an allocation over libFuzzer's
// -malloc_limit_mb, or std::bad_alloc / std::length_error (an input that made us try to
// allocate without bound); those two abort here so that the replay driver, built without
// sanitizers, fails on them too.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <new>
#include <stdexcept>

namespace hylab::fuzz {

template <class F>
void guarded(F&& f) {
  try {
    f();
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "fuzz: std::bad_alloc (an input asked for unbounded memory)\n");
    std::abort();
  } catch (const std::length_error& e) {
    std::fprintf(stderr, "fuzz: std::length_error: %s\n", e.what());
    std::abort();
  } catch (const std::exception&) {
    // Rejected: the input was invalid and said so.
  }
}

}  // namespace hylab::fuzz
