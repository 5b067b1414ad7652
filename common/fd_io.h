// Whole-buffer read and write on a file descriptor (pipes to and from child processes,
// checkpoint files), retrying short transfers and EINTR. Header-only and dependency-free: the
// `hylab-spm` helper (which must not link anything of ours, see spm_helper_main.cpp) uses it too.
#pragma once

#include <unistd.h>

#include <cerrno>
#include <cstddef>

namespace hylab {

// False at end of file or on an error (errno says which) before n bytes were read.
inline bool read_all(int fd, void* data, size_t n) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

// False on an error (e.g. EPIPE: the reader went away) before n bytes were written.
inline bool write_all(int fd, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

}  // namespace hylab
