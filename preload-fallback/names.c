/* getsockname() and getpeername() of switched sockets, answered in the program.
 *
 * The supervisor answers them from the connection's retained TCP socket, one notification each
 * (about 36 us on the 2-core VM); servers ask for them per connection (CPython's asyncio four
 * times, redis and nginx for their logs; libpq and asyncio clients after connecting). The library
 * keeps both addresses per fd: filled when it accepted the connection itself (the TCP socket is
 * still in its hands before the late claim), from the supervisor's answer to a connect it switched
 * (slipstream_connect_answer), or else by one query to the supervisor (SLIPSTREAM_OPT_NAMES) at
 * the first getsockname/getpeername of a socket the supervisor switched.
 *
 * Exactness: an entry holds the inode of the AF_UNIX end it belongs to, checked with fstat() at
 * each use, so a closed and reused fd number, a dup2() over it or an exec never finds a stale
 * entry (fork keeps the fds and the table alike). An answer is given here only while the AF_UNIX
 * end is fully open (poll() shows no hang-up and no read shut-down): over TCP getpeername() fails
 * with ENOTCONN once a reset arrived, which only the retained TCP socket can tell, so from the
 * peer's first shutdown on the supervisor answers again. Bad pointers go to the supervisor too
 * (EFAULT from the kernel, never a SIGSEGV here): the caller's memory is only touched with
 * process_vm_readv/writev.
 *
 * Async-signal-safe, no allocation. Entries are written under a sequence count: a thread reading
 * an entry another thread is rewriting sees the count change and leaves the call to the
 * supervisor. */
#define _DEFAULT_SOURCE

#include "names.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef POLLRDHUP
#define POLLRDHUP 0x2000 /* Linux 2.6.17; declared by <poll.h> only with _GNU_SOURCE */
#endif

enum { kNamedFds = 4096 };

struct Entry {
  uint64_t seq; /* odd while being written */
  uint64_t ino; /* of the AF_UNIX end; 0: empty */
  struct slipstream_names names;
};
static struct Entry g_entries[kNamedFds];

static uint64_t InodeOf(int fd) {
  struct stat st;
  if (syscall(SYS_fstat, fd, &st) != 0) return 0;
  return (uint64_t)st.st_ino;
}

int slipstream_names_keeps(int fd) { return fd >= 0 && fd < kNamedFds; }

void slipstream_names_store(int fd, uint64_t ino, const struct slipstream_names* names) {
  if (!slipstream_names_keeps(fd)) return;
  if (ino == 0) {
    int saved = errno;
    ino = InodeOf(fd);
    errno = saved;
  }
  struct Entry* e = &g_entries[fd];
  uint64_t seq = __atomic_load_n(&e->seq, __ATOMIC_RELAXED);
  __atomic_store_n(&e->seq, seq | 1, __ATOMIC_RELAXED);
  __atomic_thread_fence(__ATOMIC_RELEASE);
  __atomic_store_n(&e->ino, ino, __ATOMIC_RELAXED);
  memcpy(&e->names, names, sizeof(*names));
  __atomic_store_n(&e->seq, (seq | 1) + 1, __ATOMIC_RELEASE);
}

/* A consistent copy of the entry of `fd`, or 0. */
static int Load(int fd, uint64_t* ino, struct slipstream_names* out) {
  if (fd < 0 || fd >= kNamedFds) return 0;
  struct Entry* e = &g_entries[fd];
  uint64_t before = __atomic_load_n(&e->seq, __ATOMIC_ACQUIRE);
  if (before & 1) return 0;
  *ino = __atomic_load_n(&e->ino, __ATOMIC_RELAXED);
  if (*ino == 0) return 0;
  memcpy(out, &e->names, sizeof(*out));
  __atomic_thread_fence(__ATOMIC_ACQUIRE);
  return __atomic_load_n(&e->seq, __ATOMIC_RELAXED) == before;
}

/* The AF_UNIX end is open both ways: no peer close or shutdown, no shutdown of our own. */
static int FullyOpen(int fd) {
  struct pollfd p = {fd, POLLRDHUP, 0};
  if (syscall(SYS_poll, &p, 1, 0) < 0) return 0;
  return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) == 0;
}

static int ReadSelf(void* local, const void* remote, size_t n) {
  struct iovec l = {local, n}, r = {(void*)remote, n};
  return syscall(SYS_process_vm_readv, syscall(SYS_getpid), &l, 1, &r, 1, 0) == (long)n;
}

static int WriteSelf(void* remote, const void* local, size_t n) {
  if (n == 0) return 1;
  struct iovec l = {(void*)local, n}, r = {remote, n};
  return syscall(SYS_process_vm_writev, syscall(SYS_getpid), &l, 1, &r, 1, 0) == (long)n;
}

int slipstream_names_answer(int fd, int peer, struct sockaddr* addr, socklen_t* len) {
  uint64_t ino;
  struct slipstream_names names;
  if (!Load(fd, &ino, &names)) return 0;
  int saved = errno;
  if (InodeOf(fd) != ino) {
    errno = saved;
    return 0;
  }
  int ok = -1;
  socklen_t have;
  if (FullyOpen(fd) && ReadSelf(&have, len, sizeof(have)) && (int)have >= 0) {
    uint32_t actual = peer ? names.peer_len : names.local_len;
    const uint8_t* bytes = peer ? names.peer : names.local;
    socklen_t copy = have < actual ? have : actual; /* move_addr_to_user() truncates */
    socklen_t out = actual;
    if (actual <= sizeof(names.local) && WriteSelf(addr, bytes, copy) &&
        WriteSelf(len, &out, sizeof(out))) {
      ok = 1;
    }
  }
  errno = saved;
  return ok;
}
