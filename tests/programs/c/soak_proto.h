// The chaos soak's wire protocol (tests/soak/soak.py), shared by the C soak peer; the Go
// (tests/programs/go/soakpeer) and Python (tests/programs/py/soak_peer.py) peers speak the same.
//
// A connection carries one exchange, both frames little-endian:
//
//   request  (client -> server), 32 bytes + req_len bytes of the request pattern:
//     "SSKQ" | pause_ms u32 | nonce u64 | req_len u64 | reply_len u64
//   reply    (server -> client), 56 bytes + reply_len bytes of the reply pattern:
//     "SSKR" | status u32 | server name char[16] | nonce u64 | req_got u64 | reply_len u64 |
//     domain u32 | pad u32
//
// then the client shuts down its write side and expects EOF. The server checks every request byte
// against the pattern (status 0: all req_len bytes arrived intact; 1: a byte differed; 2: bad
// header) and pauses pause_ms in the middle of its reply, so connections live for a while. The
// client checks the reply's nonce and server name (a mispaired stream names another server or
// nonce), its status and every reply byte. `domain` is what the server's accepted fd really is
// (the xattr "system.sockprotoname" of the socket, which the supervisor does not see and therefore
// cannot emulate): 1 = AF_UNIX (switched), 2 = TCP.
//
// Pattern: byte i of stream `seed` is fx_pattern_byte(seed, i % 4093) ^ ((i / 4093) & 0xff);
// a prime period so that a shifted or repeated 4 KiB block shows, cheap to produce in Python. The
// request uses seed = nonce, the reply seed = nonce ^ SOAK_REPLY_SALT.
#ifndef SLIPSTREAM_TESTS_PROGRAMS_C_SOAK_PROTO_H_
#define SLIPSTREAM_TESTS_PROGRAMS_C_SOAK_PROTO_H_

#include "fixture.h"  // first: it defines _GNU_SOURCE

#include <sys/xattr.h>

#define SOAK_PERIOD 4093
#define SOAK_REPLY_SALT 0x5a5a5a5a5a5a5a5aull
#define SOAK_REQ_HEADER 32
#define SOAK_REPLY_HEADER 56
#define SOAK_NAME_LEN 16

enum { kSoakOk = 0, kSoakCorrupt = 1, kSoakBadHeader = 2 };
enum { kDomainUnknown = 0, kDomainUnix = 1, kDomainTcp = 2 };

struct SoakStream {
  uint8_t block[SOAK_PERIOD];
};

static inline void soak_stream_init(struct SoakStream* s, uint64_t seed) {
  fx_pattern_fill(seed, 0, s->block, SOAK_PERIOD);
}

// Fills `buf` with bytes [offset, offset + len) of the stream.
static inline void soak_fill(const struct SoakStream* s, uint64_t offset, uint8_t* buf,
                             size_t len) {
  for (size_t k = 0; k < len; ++k) {
    uint64_t i = offset + k;
    buf[k] = s->block[i % SOAK_PERIOD] ^ (uint8_t)(i / SOAK_PERIOD);
  }
}

// Index of the first byte of `buf` that differs from the stream at `offset`, or -1.
static inline long soak_mismatch(const struct SoakStream* s, uint64_t offset, const uint8_t* buf,
                                 size_t len) {
  for (size_t k = 0; k < len; ++k) {
    uint64_t i = offset + k;
    if (buf[k] != (s->block[i % SOAK_PERIOD] ^ (uint8_t)(i / SOAK_PERIOD))) return (long)k;
  }
  return -1;
}

// What the socket behind `fd` really is, from the kernel (not a trapped call).
static inline int soak_domain(int fd) {
  char name[32];
  ssize_t n = fgetxattr(fd, "system.sockprotoname", name, sizeof(name) - 1);
  if (n <= 0) return kDomainUnknown;
  name[n] = '\0';
  if (strncmp(name, "UNIX", 4) == 0) return kDomainUnix;
  if (strncmp(name, "TCP", 3) == 0) return kDomainTcp;
  return kDomainUnknown;
}

static inline const char* soak_domain_name(int d) {
  return d == kDomainUnix ? "unix" : d == kDomainTcp ? "tcp" : "-";
}

static inline void soak_put32(uint8_t* p, uint32_t v) { memcpy(p, &v, 4); }
static inline void soak_put64(uint8_t* p, uint64_t v) { memcpy(p, &v, 8); }
static inline uint32_t soak_get32(const uint8_t* p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}
static inline uint64_t soak_get64(const uint8_t* p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

// Waits until `fd` is ready for `events` or `deadline` (fx_now() seconds) passes; returns 1 when
// ready, 0 on timeout, -1 with errno.
static inline int soak_wait(int fd, short events, double deadline) {
  for (;;) {
    double left = deadline - fx_now();
    if (left <= 0) return 0;
    struct pollfd p = {fd, events, 0};
    int n = poll(&p, 1, (int)(left * 1000) + 1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (n > 0) return 1;
  }
}

// Nonblocking write of all of `buf` before `deadline`: 0, or -1 with errno (ETIMEDOUT).
static inline int soak_send_all(int fd, const uint8_t* buf, size_t len, double deadline) {
  while (len > 0) {
    ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
    if (n > 0) {
      buf += n;
      len -= (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN) return -1;
    int r = soak_wait(fd, POLLOUT, deadline);
    if (r < 0) return -1;
    if (r == 0) {
      errno = ETIMEDOUT;
      return -1;
    }
  }
  return 0;
}

// Nonblocking read of up to `len` bytes before `deadline`: the count (0 at EOF), or -1 with errno
// (ETIMEDOUT when nothing arrived in time).
static inline ssize_t soak_recv_some(int fd, uint8_t* buf, size_t len, double deadline) {
  for (;;) {
    ssize_t n = recv(fd, buf, len, 0);
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return -1;
    int r = soak_wait(fd, POLLIN, deadline);
    if (r < 0) return -1;
    if (r == 0) {
      errno = ETIMEDOUT;
      return -1;
    }
  }
}

// Reads exactly `len` bytes before `deadline`, adding what arrived to *got: 0 when all came, 1 at
// an EOF before that, -1 with errno.
static inline int soak_recv_full(int fd, uint8_t* buf, size_t len, double deadline, size_t* got) {
  size_t have = 0;
  while (have < len) {
    ssize_t n = soak_recv_some(fd, buf + have, len - have, deadline);
    if (n < 0) return -1;
    if (n == 0) return 1;
    have += (size_t)n;
    *got += (size_t)n;
  }
  return 0;
}

#endif  // SLIPSTREAM_TESTS_PROGRAMS_C_SOAK_PROTO_H_
