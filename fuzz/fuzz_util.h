// Helpers shared by the libFuzzer targets (fuzz/README.md).
#ifndef SLIPSTREAM_FUZZ_FUZZ_UTIL_H_
#define SLIPSTREAM_FUZZ_FUZZ_UTIL_H_

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

namespace slipstream::fuzz {

// The lowest free fd number. Any fd an input leaks takes the lowest free number, so the next
// input finds a higher one: a cheap leak check that needs no /proc scan.
inline int LowestFreeFd() {
  int fd = fcntl(0, F_DUPFD, 0);
  close(fd);
  return fd;
}

// Aborts (a crash for libFuzzer) when `lowest` is no longer the lowest free fd.
inline void CheckNoFdLeak(int lowest, const char* what) {
  if (LowestFreeFd() != lowest) {
    fprintf(stderr, "fd leak in %s: lowest free fd %d, was %d\n", what, LowestFreeFd(), lowest);
    for (int fd = 0; fd < LowestFreeFd() + 8; ++fd) {
      char path[64], link[256];
      snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
      ssize_t n = readlink(path, link, sizeof(link) - 1);
      if (n > 0) fprintf(stderr, "  fd %d -> %.*s\n", fd, static_cast<int>(n), link);
    }
    abort();
  }
}

}  // namespace slipstream::fuzz

#endif  // SLIPSTREAM_FUZZ_FUZZ_UTIL_H_
