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
 * supervisor.
 *
 * Each entry also keeps the TCP options the program set on that end in this process (options.c),
 * one atomic word each beside the sequence count, cleared when the entry is given to another end.
 */
#define _DEFAULT_SOURCE

#include "names.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "self_memory.h"

#ifndef POLLRDHUP
#define POLLRDHUP 0x2000 /* Linux 2.6.17; declared by <poll.h> only with _GNU_SOURCE */
#endif

enum { kNamedFds = 4096 };

struct Entry {
  uint64_t seq; /* odd while being written */
  uint64_t ino; /* of the AF_UNIX end; 0: empty */
  struct slipstream_names names;
  /* TCP options set on this end in this process (options.c): kKnown and the value read back, or
   * 0 (not set here: the retained TCP socket has it). Atomic words beside the sequence count,
   * cleared when the entry is given to another end. */
  uint64_t options[SLIPSTREAM_KEPT_OPTIONS];
};
static const uint64_t kKnown = 1ull << 32;
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
  if (__atomic_load_n(&e->ino, __ATOMIC_RELAXED) != ino) {
    for (int i = 0; i < SLIPSTREAM_KEPT_OPTIONS; ++i) {
      __atomic_store_n(&e->options[i], 0, __ATOMIC_RELAXED);
    }
  }
  __atomic_store_n(&e->ino, ino, __ATOMIC_RELAXED);
  memcpy(&e->names, names, sizeof(*names));
  __atomic_store_n(&e->seq, (seq | 1) + 1, __ATOMIC_RELEASE);
}

void slipstream_names_forget(int fd) {
  if (!slipstream_names_keeps(fd)) return;
  struct Entry* e = &g_entries[fd];
  if (__atomic_load_n(&e->ino, __ATOMIC_RELAXED) == 0) return; /* the common case: one load */
  uint64_t seq = __atomic_load_n(&e->seq, __ATOMIC_RELAXED);
  __atomic_store_n(&e->seq, seq | 1, __ATOMIC_RELAXED);
  __atomic_thread_fence(__ATOMIC_RELEASE);
  __atomic_store_n(&e->ino, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&e->seq, (seq | 1) + 1, __ATOMIC_RELEASE);
}

/* A consistent copy of the entry of `fd` and its sequence count, or 0. */
static int Load(int fd, uint64_t* ino, struct slipstream_names* out, uint64_t* seq) {
  if (fd < 0 || fd >= kNamedFds) return 0;
  struct Entry* e = &g_entries[fd];
  uint64_t before = __atomic_load_n(&e->seq, __ATOMIC_ACQUIRE);
  if (before & 1) return 0;
  *ino = __atomic_load_n(&e->ino, __ATOMIC_RELAXED);
  if (*ino == 0) return 0;
  memcpy(out, &e->names, sizeof(*out));
  __atomic_thread_fence(__ATOMIC_ACQUIRE);
  *seq = before;
  return __atomic_load_n(&e->seq, __ATOMIC_RELAXED) == before;
}

/* Whether `fd` names the end its entry was stored for (not a closed and reused number). */
static int Current(int fd, struct slipstream_names* names, uint64_t* seq) {
  uint64_t ino;
  if (!Load(fd, &ino, names, seq)) return 0;
  int saved = errno;
  int same = InodeOf(fd) == ino;
  errno = saved;
  return same;
}

int slipstream_names_family(int fd) {
  struct slipstream_names names;
  uint64_t seq;
  if (!Current(fd, &names, &seq)) return 0;
  sa_family_t family;
  memcpy(&family, names.local, sizeof(family));
  return family;
}

int slipstream_names_option(int fd, int index, int* value) {
  struct slipstream_names names;
  uint64_t seq;
  if (index < 0 || index >= SLIPSTREAM_KEPT_OPTIONS || !Current(fd, &names, &seq)) return -1;
  struct Entry* e = &g_entries[fd];
  uint64_t word = __atomic_load_n(&e->options[index], __ATOMIC_ACQUIRE);
  /* Still the same entry: the word was not cleared for another end in between. */
  if (__atomic_load_n(&e->seq, __ATOMIC_ACQUIRE) != seq) return -1;
  if (!(word & kKnown)) return 0;
  *value = (int)(uint32_t)word;
  return 1;
}

void slipstream_names_set_option(int fd, int index, int value) {
  if (index < 0 || index >= SLIPSTREAM_KEPT_OPTIONS || !slipstream_names_keeps(fd)) return;
  /* The caller found `fd` current (slipstream_names_family) just before. Expected race: another
   * thread closes `fd` and a new switched socket gets its number and entry in between; the value
   * then lands on the new end, as the kernel's setsockopt would have applied it to whatever the
   * number named when it ran. */
  __atomic_store_n(&g_entries[fd].options[index], kKnown | (uint32_t)value, __ATOMIC_RELEASE);
}

/* The AF_UNIX end is open both ways: no peer close or shutdown, no shutdown of our own. */
static int FullyOpen(int fd) {
  struct pollfd p = {fd, POLLRDHUP, 0};
  if (syscall(SYS_poll, &p, 1, 0) < 0) return 0;
  return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) == 0;
}

int slipstream_names_answer(int fd, int peer, struct sockaddr* addr, socklen_t* len) {
  uint64_t seq;
  struct slipstream_names names;
  if (!Current(fd, &names, &seq)) return 0;
  int saved = errno;
  int ok = -1;
  socklen_t have;
  if (FullyOpen(fd) && slipstream_read_self(&have, len, sizeof(have)) && (int)have >= 0) {
    uint32_t actual = peer ? names.peer_len : names.local_len;
    const uint8_t* bytes = peer ? names.peer : names.local;
    socklen_t copy = have < actual ? have : actual; /* move_addr_to_user() truncates */
    socklen_t out = actual;
    if (actual <= sizeof(names.local) && slipstream_write_self(addr, bytes, copy) &&
        slipstream_write_self(len, &out, sizeof(out))) {
      ok = 1;
    }
  }
  errno = saved;
  return ok;
}
