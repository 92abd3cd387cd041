// Shared helpers for Slipstream's C benchmark programs: clocks, address parsing, socket set-up and
// exact-length I/O. Header-only so each program stays a single translation unit.
//
// Addresses are written "tcp:HOST:PORT" (IPv4 or IPv6 literal; "[::1]:PORT" also accepted) or
// "unix:PATH". The benchmark harness (bench/run) passes the same program a TCP address for the
// tcp/slipstream variants and a unix address for the native AF_UNIX variant, so the code path
// after connect/accept is identical in every variant.
#ifndef SLIPSTREAM_BENCH_COMMON_H_
#define SLIPSTREAM_BENCH_COMMON_H_

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static inline void die(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  if (errno) fprintf(stderr, ": %s", strerror(errno));
  fputc('\n', stderr);
  exit(1);
}

// Monotonic time in seconds; CLOCK_MONOTONIC is a vDSO call, so timing adds no syscall that the
// seccomp filter would see.
static inline double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct {
  struct sockaddr_storage ss;
  socklen_t len;
  int family;  // AF_INET, AF_INET6 or AF_UNIX
} bench_addr;

// Parses "tcp:HOST:PORT" or "unix:PATH"; exits with a message on anything else.
static inline bench_addr parse_addr(const char* spec) {
  bench_addr a;
  memset(&a, 0, sizeof a);
  if (strncmp(spec, "unix:", 5) == 0) {
    struct sockaddr_un* un = (struct sockaddr_un*)&a.ss;
    const char* path = spec + 5;
    if (strlen(path) >= sizeof un->sun_path) die("unix path too long: %s", path);
    un->sun_family = AF_UNIX;
    strcpy(un->sun_path, path);
    a.len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);
    a.family = AF_UNIX;
    return a;
  }
  if (strncmp(spec, "tcp:", 4) != 0) die("address must be tcp:HOST:PORT or unix:PATH, got %s", spec);
  char host[256];
  const char* rest = spec + 4;
  const char* colon = strrchr(rest, ':');
  if (!colon || (size_t)(colon - rest) >= sizeof host) die("bad tcp address %s", spec);
  memcpy(host, rest, (size_t)(colon - rest));
  host[colon - rest] = '\0';
  // Allow "[::1]" for IPv6.
  char* h = host;
  if (h[0] == '[') {
    h++;
    char* end = strchr(h, ']');
    if (end) *end = '\0';
  }
  int port = atoi(colon + 1);
  struct sockaddr_in* in4 = (struct sockaddr_in*)&a.ss;
  struct sockaddr_in6* in6 = (struct sockaddr_in6*)&a.ss;
  if (inet_pton(AF_INET, h, &in4->sin_addr) == 1) {
    in4->sin_family = AF_INET;
    in4->sin_port = htons((uint16_t)port);
    a.len = sizeof *in4;
    a.family = AF_INET;
  } else if (inet_pton(AF_INET6, h, &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons((uint16_t)port);
    a.len = sizeof *in6;
    a.family = AF_INET6;
  } else {
    errno = 0;
    die("bad host in %s (numeric addresses only)", spec);
  }
  return a;
}

// TCP_NODELAY as latency benchmarks (and NetPIPE, redis, memcached) set it. Ignored for AF_UNIX.
static inline void set_nodelay(int fd, const bench_addr* a) {
  if (a->family == AF_UNIX) return;
  int one = 1;
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) die("setsockopt(TCP_NODELAY)");
}

static inline int listen_on(const bench_addr* a, int backlog) {
  int fd = socket(a->family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  if (a->family == AF_UNIX) {
    unlink(((const struct sockaddr_un*)&a->ss)->sun_path);
  } else {
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  }
  if (bind(fd, (const struct sockaddr*)&a->ss, a->len) != 0) die("bind");
  if (listen(fd, backlog) != 0) die("listen");
  return fd;
}

// Returns a connected socket, or -1 with errno set (callers decide whether that is fatal).
static inline int connect_to(const bench_addr* a) {
  int fd = socket(a->family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  while (connect(fd, (const struct sockaddr*)&a->ss, a->len) != 0) {
    if (errno == EINTR) continue;
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

// Exact-length I/O. Returns 0 on success, -1 on error or early EOF.
static inline int write_all(int fd, const void* buf, size_t len) {
  const char* p = (const char*)buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static inline int read_all(int fd, void* buf, size_t len) {
  char* p = (char*)buf;
  while (len > 0) {
    ssize_t n = read(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (n == 0) return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

#endif  // SLIPSTREAM_BENCH_COMMON_H_
