// Shared helpers of Slipstream's static C test programs (tests/programs/c).
//
// Header-only on purpose: every fixture is one .c file built with `gcc -static`
// (tests/CMakeLists.txt) and includes this header. Everything here is plain libc so the fixtures
// behave the same with and without slipstream-trace; only their socket calls are supervised.
#ifndef SLIPSTREAM_TESTS_PROGRAMS_C_FIXTURE_H_
#define SLIPSTREAM_TESTS_PROGRAMS_C_FIXTURE_H_

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

// ---- Failing loudly ----------------------------------------------------------------------------

// Prints "<program>: <message>: <errno name>" to stderr and exits with status 1.
__attribute__((format(printf, 1, 2), noreturn)) static void fx_die(const char* fmt, ...);

static const char* fx_program = "fixture";

// The symbolic name of an errno value, as the tests compare names rather than numbers.
static const char* fx_errno_name(int err) {
  switch (err) {
#define FX_ERRNO(e) \
  case e:           \
    return #e;
    FX_ERRNO(EPERM)
    FX_ERRNO(ENOENT) FX_ERRNO(ESRCH) FX_ERRNO(EINTR) FX_ERRNO(EIO) FX_ERRNO(ENXIO) FX_ERRNO(
        E2BIG) FX_ERRNO(ENOEXEC) FX_ERRNO(EBADF) FX_ERRNO(ECHILD) FX_ERRNO(EAGAIN) FX_ERRNO(ENOMEM)
        FX_ERRNO(EACCES) FX_ERRNO(EFAULT) FX_ERRNO(EBUSY) FX_ERRNO(EEXIST) FX_ERRNO(ENODEV)
            FX_ERRNO(ENOTDIR) FX_ERRNO(EISDIR) FX_ERRNO(EINVAL) FX_ERRNO(ENFILE) FX_ERRNO(EMFILE)
                FX_ERRNO(ENOTTY) FX_ERRNO(ENOSPC) FX_ERRNO(EPIPE) FX_ERRNO(ERANGE) FX_ERRNO(ENOSYS)
                    FX_ERRNO(ENOTSOCK) FX_ERRNO(EDESTADDRREQ) FX_ERRNO(EMSGSIZE)
                        FX_ERRNO(EPROTOTYPE) FX_ERRNO(ENOPROTOOPT) FX_ERRNO(EPROTONOSUPPORT)
                            FX_ERRNO(ESOCKTNOSUPPORT) FX_ERRNO(EOPNOTSUPP) FX_ERRNO(EPFNOSUPPORT)
                                FX_ERRNO(EAFNOSUPPORT) FX_ERRNO(EADDRINUSE) FX_ERRNO(EADDRNOTAVAIL)
                                    FX_ERRNO(ENETDOWN) FX_ERRNO(ENETUNREACH) FX_ERRNO(ENETRESET)
                                        FX_ERRNO(ECONNABORTED) FX_ERRNO(ECONNRESET)
                                            FX_ERRNO(ENOBUFS) FX_ERRNO(EISCONN) FX_ERRNO(ENOTCONN)
                                                FX_ERRNO(ESHUTDOWN) FX_ERRNO(ETIMEDOUT)
                                                    FX_ERRNO(ECONNREFUSED) FX_ERRNO(EHOSTDOWN)
                                                        FX_ERRNO(EHOSTUNREACH) FX_ERRNO(EALREADY)
                                                            FX_ERRNO(EINPROGRESS)
#undef FX_ERRNO
                                                                default : {
      static __thread char buf[24];
      snprintf(buf, sizeof(buf), "errno%d", err);
      return buf;
    }
  }
}

static void fx_die(const char* fmt, ...) {
  int err = errno;
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  fprintf(stderr, "%s: %s: %s\n", fx_program, msg, fx_errno_name(err));
  fflush(stdout);
  exit(1);
}

// ---- The deterministic byte pattern and its checksum --------------------------------------------

// Byte `i` of the stream identified by `seed`. Different seeds give different streams, so bytes
// crossing between connections would be caught by the checksum.
static inline uint8_t fx_pattern_byte(uint64_t seed, uint64_t i) {
  uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ (seed + 1) * 0xC2B2AE3D27D4EB4Full;
  x ^= x >> 29;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 32;
  return (uint8_t)x;
}

// Fills `buf` with bytes [offset, offset + len) of stream `seed`.
static inline void fx_pattern_fill(uint64_t seed, uint64_t offset, uint8_t* buf, size_t len) {
  for (size_t k = 0; k < len; ++k) buf[k] = fx_pattern_byte(seed, offset + k);
}

#define FX_FNV_OFFSET 0xcbf29ce484222325ull
#define FX_FNV_PRIME 0x100000001b3ull

// 64-bit FNV-1a, incremental: start with FX_FNV_OFFSET.
static inline uint64_t fx_fnv1a(uint64_t hash, const uint8_t* data, size_t len) {
  for (size_t k = 0; k < len; ++k) {
    hash ^= data[k];
    hash *= FX_FNV_PRIME;
  }
  return hash;
}

// FNV-1a of the first `len` bytes of stream `seed`.
static inline uint64_t fx_pattern_hash(uint64_t seed, uint64_t len) {
  uint8_t buf[4096];
  uint64_t hash = FX_FNV_OFFSET;
  for (uint64_t off = 0; off < len;) {
    size_t n = len - off < sizeof(buf) ? (size_t)(len - off) : sizeof(buf);
    fx_pattern_fill(seed, off, buf, n);
    hash = fx_fnv1a(hash, buf, n);
    off += n;
  }
  return hash;
}

// ---- I/O that survives short transfers and EINTR
// -------------------------------------------------

// Writes all of `buf`; returns 0, or -1 with errno set.
static inline int fx_write_all(int fd, const void* buf, size_t len) {
  const uint8_t* p = (const uint8_t*)buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

// Reads exactly `len` bytes; returns the count read before EOF, or -1 with errno set.
static inline ssize_t fx_read_full(int fd, void* buf, size_t len) {
  uint8_t* p = (uint8_t*)buf;
  size_t got = 0;
  while (got < len) {
    ssize_t n = read(fd, p + got, len - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (n == 0) break;
    got += (size_t)n;
  }
  return (ssize_t)got;
}

static inline int fx_set_nonblocking(int fd, int on) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0) return -1;
  flags = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
  return fcntl(fd, F_SETFL, flags);
}

// ---- Addresses
// -----------------------------------------------------------------------------------

// Parses "1.2.3.4", "::1" or "::ffff:1.2.3.4" plus a port into `out`; returns its length or 0.
static inline socklen_t fx_make_addr(const char* host, int port, struct sockaddr_storage* out) {
  memset(out, 0, sizeof(*out));
  struct sockaddr_in* sin = (struct sockaddr_in*)out;
  struct sockaddr_in6* sin6 = (struct sockaddr_in6*)out;
  if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)port);
    return sizeof(*sin);
  }
  if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons((uint16_t)port);
    return sizeof(*sin6);
  }
  return 0;
}

// "127.0.0.1", "::1", "::ffff:127.0.0.1" (the host part only: ports differ between runs).
static inline const char* fx_host_text(const struct sockaddr_storage* ss, char* buf, size_t len) {
  if (ss->ss_family == AF_INET) {
    return inet_ntop(AF_INET, &((const struct sockaddr_in*)ss)->sin_addr, buf, (socklen_t)len);
  }
  if (ss->ss_family == AF_INET6) {
    return inet_ntop(AF_INET6, &((const struct sockaddr_in6*)ss)->sin6_addr, buf, (socklen_t)len);
  }
  snprintf(buf, len, "family%d", ss->ss_family);
  return buf;
}

static inline int fx_port_of(const struct sockaddr_storage* ss) {
  if (ss->ss_family == AF_INET) return ntohs(((const struct sockaddr_in*)ss)->sin_port);
  if (ss->ss_family == AF_INET6) return ntohs(((const struct sockaddr_in6*)ss)->sin6_port);
  return -1;
}

// ---- Port files: how a server tells a test (or a client) where it listens -----------------------

// Writes "<port>\n" to `path` atomically (temporary file + rename), so readers never see a partial
// file.
static inline void fx_write_port_file(const char* path, int port) {
  char tmp[4096];
  snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
  FILE* f = fopen(tmp, "w");
  if (f == NULL) fx_die("fopen %s", tmp);
  fprintf(f, "%d\n", port);
  if (fclose(f) != 0) fx_die("fclose %s", tmp);
  if (rename(tmp, path) != 0) fx_die("rename %s", path);
}

static inline double fx_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

// Waits up to `timeout_s` for `path` to hold a port number; returns it, or dies.
static inline int fx_read_port_file(const char* path, double timeout_s) {
  double deadline = fx_now() + timeout_s;
  for (;;) {
    FILE* f = fopen(path, "r");
    if (f != NULL) {
      int port = 0;
      int ok = fscanf(f, "%d", &port);
      fclose(f);
      if (ok == 1 && port > 0) return port;
    }
    if (fx_now() > deadline) {
      errno = ETIMEDOUT;
      fx_die("no port in %s", path);
    }
    struct timespec pause = {0, 5 * 1000 * 1000};
    nanosleep(&pause, NULL);
  }
}

// Parses a non-negative decimal or dies.
static inline long long fx_parse_count(const char* what, const char* text) {
  char* end = NULL;
  errno = 0;
  long long v = strtoll(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v < 0) {
    errno = EINVAL;
    fx_die("bad %s '%s'", what, text);
  }
  return v;
}

#endif  // SLIPSTREAM_TESTS_PROGRAMS_C_FIXTURE_H_
