/* Socket options of switched sockets, answered in the program.
 *
 * The supervisor answers an IPPROTO_TCP option of a switched socket from the connection's
 * retained TCP socket, one notification each (about 36 us on the 2-core VM); programs set some of
 * them on every connection (TCP_NODELAY: nginx, redis, wrk, node, CPython's asyncio; the keepalive
 * timers: redis on each accepted client). On the AF_UNIX end those options change nothing, so what
 * TCP shows of them is only the value read back: the library checks the value as the kernel does,
 * keeps it with the socket's addresses (names.c, same inode check) and answers getsockopt of it
 * from there. SO_DOMAIN and SO_PROTOCOL (the retained TCP socket's family, IPPROTO_TCP) need only
 * the addresses.
 *
 * Decided, docs/differences.md: a value set here is the program's (this process and the children
 * it forks later); it is not written to the retained TCP socket, so another process sharing the
 * connection without this copy of the table (an exec'd child, a raw system call) still reads the
 * value from before, and a connection the supervisor later has to relay or hands back to TCP
 * (connect(AF_UNSPEC)) runs with the TCP socket's own options.
 *
 * Async-signal-safe, no allocation; the caller's memory is touched only with
 * process_vm_readv/writev, so bad pointers give EFAULT, never a SIGSEGV. */
#define _DEFAULT_SOURCE

#include "options.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>

#include "names.h"
#include "self_memory.h"

/* include/net/tcp.h */
enum { kMaxKeepIdle = 32767, kMaxKeepIntvl = 32767, kMaxKeepCnt = 127 };

/* The index under which option (level, name) is kept, or -1 (the supervisor answers it). */
static int KeptOption(int level, int name) {
  if (level != IPPROTO_TCP) return -1;
  switch (name) {
    case TCP_NODELAY:
      return SLIPSTREAM_KEPT_NODELAY;
    case TCP_CORK:
      return SLIPSTREAM_KEPT_CORK;
    case TCP_KEEPIDLE:
      return SLIPSTREAM_KEPT_KEEPIDLE;
    case TCP_KEEPINTVL:
      return SLIPSTREAM_KEPT_KEEPINTVL;
    case TCP_KEEPCNT:
      return SLIPSTREAM_KEPT_KEEPCNT;
    case TCP_USER_TIMEOUT:
      return SLIPSTREAM_KEPT_USER_TIMEOUT;
    default:
      return -1;
  }
}

/* The kernel's own checks of setsockopt(IPPROTO_TCP, kept option `index`) with int value `v`
 * (do_tcp_setsockopt(), Linux 6.x): 0 with the value getsockopt then reads back in *stored, or
 * the errno (EINVAL). */
static int CheckValue(int index, int v, int* stored) {
  switch (index) {
    case SLIPSTREAM_KEPT_NODELAY:
    case SLIPSTREAM_KEPT_CORK:
      *stored = v != 0; /* read back as a flag */
      return 0;
    case SLIPSTREAM_KEPT_KEEPIDLE:
      if (v < 1 || v > kMaxKeepIdle) return EINVAL;
      break;
    case SLIPSTREAM_KEPT_KEEPINTVL:
      if (v < 1 || v > kMaxKeepIntvl) return EINVAL;
      break;
    case SLIPSTREAM_KEPT_KEEPCNT:
      if (v < 1 || v > kMaxKeepCnt) return EINVAL;
      break;
    case SLIPSTREAM_KEPT_USER_TIMEOUT:
      if (v < 0) return EINVAL;
      break;
    default:
      return EINVAL;
  }
  *stored = v;
  return 0;
}

int slipstream_options_set(int fd, int level, int name, const void* value, socklen_t len,
                           long* result) {
  int index = KeptOption(level, name);
  if (index < 0 || slipstream_names_family(fd) == 0) return 0;
  int saved = errno;
  /* __sys_setsockopt() refuses a negative length, do_tcp_setsockopt() one shorter than an int,
   * then copies the int, then checks its range. */
  int v = 0, stored = 0;
  int err = (int)len < 0 || len < sizeof(int)             ? EINVAL
            : !slipstream_read_self(&v, value, sizeof(v)) ? EFAULT
                                                          : CheckValue(index, v, &stored);
  if (err == 0) slipstream_names_set_option(fd, index, stored);
  errno = saved;
  *result = -err;
  return 1;
}

/* Writes an int option's answer as getsockopt does: `len` bytes of the value at most, and the
 * length. Level IPPROTO_TCP (do_tcp_getsockopt) writes the length first; SOL_SOCKET
 * (sk_getsockopt) the value first. Returns 0 or the errno. */
static int AnswerInt(int v, void* value, socklen_t* len, int length_first) {
  int have;
  if (!slipstream_read_self(&have, len, sizeof(have))) return EFAULT;
  if (have < 0) return EINVAL;
  socklen_t n = have < (int)sizeof(v) ? (socklen_t)have : sizeof(v);
  if (length_first && !slipstream_write_self(len, &n, sizeof(n))) return EFAULT;
  if (!slipstream_write_self(value, &v, n)) return EFAULT;
  if (!length_first && !slipstream_write_self(len, &n, sizeof(n))) return EFAULT;
  return 0;
}

int slipstream_options_get(int fd, int level, int name, void* value, socklen_t* len, long* result) {
  int v = 0, err;
  int saved = errno;
  if (level == SOL_SOCKET && (name == SO_DOMAIN || name == SO_PROTOCOL)) {
    int family = slipstream_names_family(fd);
    if (family == 0) return 0;
    err = AnswerInt(name == SO_DOMAIN ? family : IPPROTO_TCP, value, len, 0);
  } else {
    int index = KeptOption(level, name);
    if (index < 0 || slipstream_names_option(fd, index, &v) != 1) return 0;
    err = AnswerInt(v, value, len, 1);
  }
  errno = saved;
  *result = -err;
  return 1;
}
