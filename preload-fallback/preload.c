/* libslipstream-preload.so: hybrid mode (docs/design.md, "Hybrid mode").
 *
 * slipstream-trace preloads this library into dynamically linked programs. It interposes libc's
 * socket set-up and query calls and serves in the program those the supervisor would only have
 * answered CONTINUE: it makes the system call itself with the run's cookie in an argument register
 * the call does not read, and the seccomp filter lets exactly such calls through without a
 * notification (tracer/filter.cc). Everything the supervisor must see — a connect to a port with
 * a supervised listener, any call on a socket that may be a switched AF_UNIX end, listen, accept —
 * goes to libc unchanged and is trapped as before. Correctness never depends on this library:
 * a program without it (static, Go, set-uid, a cleared environment, a raw syscall) gets the
 * supervisor path for every call.
 *
 * Rules for this file: no allocation, no locks, no stdio, only async-signal-safe calls after
 * initialisation; state is written once in the constructor, counters are atomic. The data path
 * is interposed only in peer_closed.c, at the cost of one branch for sockets that are not
 * switched. */
/* POSIX and BSD interfaces (syscall, O_CLOEXEC), but not _GNU_SOURCE: with it glibc declares the
 * sockaddr arguments as transparent unions, which these definitions must not be. */
#define _DEFAULT_SOURCE

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "names.h"
#include "options.h"
#include "peer_closed.h"
#include "preload_abi.h"
#include "self_memory.h"

#ifndef RTLD_NEXT
#define RTLD_NEXT ((void*)-1L)
#endif

#define EXPORT __attribute__((visibility("default")))

extern char** environ;

typedef int (*socket_fn)(int, int, int);
typedef int (*connect_fn)(int, const struct sockaddr*, socklen_t);
typedef int (*bind_fn)(int, const struct sockaddr*, socklen_t);
typedef int (*getname_fn)(int, struct sockaddr*, socklen_t*);
typedef int (*getsockopt_fn)(int, int, int, void*, socklen_t*);
typedef int (*setsockopt_fn)(int, int, int, const void*, socklen_t);
typedef int (*shutdown_fn)(int, int);
typedef int (*accept_fn)(int, struct sockaddr*, socklen_t*);
typedef int (*accept4_fn)(int, struct sockaddr*, socklen_t*, int);

/* Written only by the constructor, before any other thread of the program can exist. */
static struct {
  int enabled; /* a cookie was given */
  uint64_t cookie;
  int switching;                          /* a listener table path was given */
  char table_path[4096];                  /* to map the table once the daemon created it */
  struct slipstream_preload_stats* stats; /* NULL without --stats */
  socket_fn socket;
  connect_fn connect;
  bind_fn bind;
  getname_fn getsockname, getpeername;
  getsockopt_fn getsockopt;
  setsockopt_fn setsockopt;
  shutdown_fn shutdown;
  accept_fn accept;
  accept4_fn accept4;
} g;

/* Mapped lazily (the daemon may start after the program): NULL until then. */
static const struct slipstream_listener_table* g_table;

/* ---- Environment and mappings (constructor only, except MapTable) ---------------------------- */

static const char* Env(const char* name) {
  size_t n = strlen(name);
  for (char** e = environ; e != NULL && *e != NULL; ++e) {
    if (strncmp(*e, name, n) == 0 && (*e)[n] == '=') return *e + n + 1;
  }
  return NULL;
}

static int ParseCookie(const char* text, uint64_t* out) {
  uint64_t v = 0;
  int digits = 0;
  for (; *text; ++text, ++digits) {
    char c = *text;
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0 || digits >= 16) return 0;
    v = v << 4 | (uint64_t)d;
  }
  if (digits != 16 || v == 0) return 0;
  *out = v;
  return 1;
}

static void* MapFile(const char* path, int writable, size_t size) {
  int saved = errno; /* a program's successful call must not find our errno */
  int fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    errno = saved;
    return NULL;
  }
  struct stat st;
  void* p = MAP_FAILED;
  if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (size_t)st.st_size >= size) {
    p = mmap(NULL, size, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
  }
  close(fd);
  errno = saved;
  return p == MAP_FAILED ? NULL : p;
}

/* The table, mapping it on first need. Async-signal-safe (open, fstat, mmap, close); two threads
 * racing here both map it, and the loser unmaps its copy. */
static const struct slipstream_listener_table* Table(void) {
  const struct slipstream_listener_table* t = __atomic_load_n(&g_table, __ATOMIC_ACQUIRE);
  if (t != NULL || g.table_path[0] == 0) return t;
  struct slipstream_listener_table* mapped =
      MapFile(g.table_path, 0, sizeof(struct slipstream_listener_table));
  if (mapped == NULL) return NULL;
  const struct slipstream_listener_table* expected = NULL;
  if (!__atomic_compare_exchange_n(&g_table, &expected, mapped, 0, __ATOMIC_ACQ_REL,
                                   __ATOMIC_ACQUIRE)) {
    munmap(mapped, sizeof(*mapped));
    return expected;
  }
  return mapped;
}

static void* Next(const char* name) { return dlsym(RTLD_NEXT, name); }

__attribute__((constructor)) static void Init(void) {
  g.socket = (socket_fn)Next("socket");
  g.connect = (connect_fn)Next("connect");
  g.bind = (bind_fn)Next("bind");
  g.getsockname = (getname_fn)Next("getsockname");
  g.getpeername = (getname_fn)Next("getpeername");
  g.getsockopt = (getsockopt_fn)Next("getsockopt");
  g.setsockopt = (setsockopt_fn)Next("setsockopt");
  g.shutdown = (shutdown_fn)Next("shutdown");
  g.accept = (accept_fn)Next("accept");
  g.accept4 = (accept4_fn)Next("accept4");
  const char* cookie = Env(SLIPSTREAM_ENV_COOKIE);
  if (cookie == NULL || !ParseCookie(cookie, &g.cookie)) return;
  const char* table = Env(SLIPSTREAM_ENV_TABLE);
  if (table != NULL && table[0] == '/' && strlen(table) < sizeof(g.table_path)) {
    g.switching = 1;
    memcpy(g.table_path, table, strlen(table) + 1);
  }
  const char* stats = Env(SLIPSTREAM_ENV_STATS);
  if (stats != NULL && stats[0] == '/') {
    g.stats = MapFile(stats, 1, sizeof(struct slipstream_preload_stats));
    if (g.stats != NULL && g.stats->magic != SLIPSTREAM_STATS_MAGIC) g.stats = NULL;
  }
  (void)Table();
  g.enabled = 1;
}

/* ---- Counting and the two paths -------------------------------------------------------------- */

static void Count(int call, int in_process) {
  if (g.stats == NULL) return;
  uint64_t* c = in_process ? &g.stats->in_process[call] : &g.stats->to_supervisor[call];
  __atomic_fetch_add(c, 1, __ATOMIC_RELAXED);
}

/* --trace: one record per call served in-process. Async-signal-safe: an atomic claim of a slot,
 * clock_gettime (vDSO) and gettid; errno is left as the call set it. */
static void Record(int call, long result, int fd, long a0, long a1, long a2,
                   const struct sockaddr_in6* addr, socklen_t addr_len) {
  struct slipstream_preload_stats* st = g.stats;
  if (st == NULL || !__atomic_load_n(&st->trace, __ATOMIC_RELAXED)) return;
  int saved = errno;
  uint64_t n = __atomic_fetch_add(&st->trace_next, 1, __ATOMIC_RELAXED);
  if (n < SLIPSTREAM_TRACE_SLOTS) {
    struct slipstream_trace_record* r = &st->trace_ring[n];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    r->time_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    r->tid = (int32_t)syscall(SYS_gettid);
    r->call = call;
    r->fd = fd;
    r->err = result < 0 ? saved : 0;
    r->result = result;
    r->args[0] = a0;
    r->args[1] = a1;
    r->args[2] = a2;
    r->addr_len = 0;
    if (addr != NULL) {
      size_t len = addr_len < sizeof(r->addr) ? addr_len : sizeof(r->addr);
      memcpy(r->addr, addr, len);
      r->addr_len = (uint32_t)len;
    }
    __atomic_store_n(&r->seq, n + 1, __ATOMIC_RELEASE);
  }
  errno = saved;
}

static int Tracing(void) {
  return g.stats != NULL && __atomic_load_n(&g.stats->trace, __ATOMIC_RELAXED);
}

/* A system call whose argument registers are zeroed before this returns. The cookie must not
 * outlive the call in a register: the kernel leaves argument registers unchanged, so a later
 * system call that does not set that register (libc's 3-argument connect or accept leaves r10
 * alone) would carry the cookie too and escape the supervisor by accident. Returns -errno. */
#if defined(__x86_64__)
static long ScrubbedSyscall(long nr, long a0, long a1, long a2, long a3, long a4, long a5) {
  register long r10 __asm__("r10") = a3;
  register long r8 __asm__("r8") = a4;
  register long r9 __asm__("r9") = a5;
  long ret;
  __asm__ volatile(
      "syscall\n\t"
      "xorl %%edi, %%edi\n\t"
      "xorl %%esi, %%esi\n\t"
      "xorl %%edx, %%edx\n\t"
      "xorl %%r10d, %%r10d\n\t"
      "xorl %%r8d, %%r8d\n\t"
      "xorl %%r9d, %%r9d"
      : "=a"(ret), "+D"(a0), "+S"(a1), "+d"(a2), "+r"(r10), "+r"(r8), "+r"(r9)
      : "0"(nr)
      : "rcx", "r11", "memory");
  return ret;
}
#elif defined(__aarch64__)
static long ScrubbedSyscall(long nr, long a0, long a1, long a2, long a3, long a4, long a5) {
  register long x8 __asm__("x8") = nr;
  register long x0 __asm__("x0") = a0;
  register long x1 __asm__("x1") = a1;
  register long x2 __asm__("x2") = a2;
  register long x3 __asm__("x3") = a3;
  register long x4 __asm__("x4") = a4;
  register long x5 __asm__("x5") = a5;
  __asm__ volatile(
      "svc #0\n\t"
      "mov x1, xzr\n\t"
      "mov x2, xzr\n\t"
      "mov x3, xzr\n\t"
      "mov x4, xzr\n\t"
      "mov x5, xzr"
      : "+r"(x0), "+r"(x1), "+r"(x2), "+r"(x3), "+r"(x4), "+r"(x5)
      : "r"(x8)
      : "memory");
  return x0;
}
#else
#error "libslipstream-preload.so: ScrubbedSyscall is written for x86_64 and aarch64 only"
#endif

/* The call with the cookie in its spare register: the filter lets it through untrapped. Sets
 * errno like libc. */
static long Bypass(int call, long nr, long a0, long a1, long a2, long a3, long a4) {
  long args[6] = {a0, a1, a2, a3, a4, 0};
  args[slipstream_cookie_arg(call)] = (long)__atomic_load_n(&g.cookie, __ATOMIC_RELAXED);
  long r = ScrubbedSyscall(nr, args[0], args[1], args[2], args[3], args[4], args[5]);
  /* A volatile store: a plain one is dropped by the compiler, and the cookie would stay on the
   * stack, where glibc's syscall() reads a sixth argument the caller did not pass. */
  *(volatile long*)&args[slipstream_cookie_arg(call)] = 0;
  if (r < 0 && r > -4096) {
    errno = (int)-r;
    return -1;
  }
  return r;
}

/* Raw system call without the cookie, where libc's symbol could not be found. */
#define PLAIN(nr, ...) ((int)syscall(nr, __VA_ARGS__))

/* ---- Which sockets the supervisor must see --------------------------------------------------- */

/* A switched socket is an AF_UNIX socketpair end the supervisor installed: unnamed on both sides
 * and connected. Every other socket (TCP, UDP, netlink, a named or unconnected AF_UNIX socket, not
 * a socket at all) is answered by the kernel in the supervisor too, so its calls may run here.
 * Costs one untrapped getsockopt for an IP socket, up to three for an AF_UNIX one. */
static int MaySwitchedUnsaved(int fd) {
  int domain = 0;
  socklen_t len = sizeof(domain);
  if (Bypass(SLIPSTREAM_CALL_GETSOCKOPT, SYS_getsockopt, fd, SOL_SOCKET, SO_DOMAIN, (long)&domain,
             (long)&len) != 0) {
    /* EBADF, ENOTSOCK: the kernel's own answer, in-process as in the supervisor. Any other
     * error (a program's own seccomp filter refusing getsockopt) leaves it to the supervisor. */
    return errno == EBADF || errno == ENOTSOCK ? 0 : 1;
  }
  if (domain != AF_UNIX) return 0;
  struct sockaddr_un name;
  len = sizeof(name);
  if (Bypass(SLIPSTREAM_CALL_GETSOCKNAME, SYS_getsockname, fd, (long)&name, (long)&len, 0, 0) !=
      0) {
    return 1; /* cannot tell */
  }
  if (len > offsetof(struct sockaddr_un, sun_path)) return 0; /* named */
  len = sizeof(name);
  if (Bypass(SLIPSTREAM_CALL_GETPEERNAME, SYS_getpeername, fd, (long)&name, (long)&len, 0, 0) !=
      0) {
    return errno == ENOTCONN ? 0 : 1;
  }
  return len > offsetof(struct sockaddr_un, sun_path) ? 0 : 1;
}

/* The checks must not leave their errno behind when the program's call then succeeds. */
static int MaySwitched(int fd) {
  int saved = errno;
  int r = MaySwitchedUnsaved(fd);
  errno = saved;
  return r;
}

int slipstream_may_switched(int fd) { return MaySwitched(fd); }

int slipstream_take_socket_error(int fd) {
  int saved = errno, err = 0;
  socklen_t len = sizeof(err);
  if (Bypass(SLIPSTREAM_CALL_GETSOCKOPT, SYS_getsockopt, fd, SOL_SOCKET, SO_ERROR, (long)&err,
             (long)&len) != 0) {
    err = 0;
  }
  errno = saved;
  return err;
}
int slipstream_preload_switching(void) { return g.enabled && g.switching; }

/* Copies the caller's address without touching memory the caller may not own: where the kernel
 * would fail with EFAULT, the program must not get SIGSEGV from us. */
static int CopyAddress(const struct sockaddr* addr, socklen_t len, struct sockaddr_in6* out) {
  if (addr == NULL || len < sizeof(sa_family_t)) return 0;
  size_t n = len < sizeof(*out) ? len : sizeof(*out);
  memset(out, 0, sizeof(*out));
  int saved = errno;
  int ok = slipstream_read_self(out, addr, n);
  errno = saved;
  return ok;
}

/* Whether a connect to `dest` may run here: the port has no supervised listener (the daemon's
 * table) and the socket is not a switched one. Any doubt leaves it to the supervisor. */
static int ConnectInProcess(int fd, const struct sockaddr* addr, socklen_t len, int* tcp,
                            struct sockaddr_in6* copy) {
  struct sockaddr_in6 dest;
  *tcp = 0;
  if (!CopyAddress(addr, len, &dest)) return 0;
  *copy = dest;
  if (dest.sin6_family == AF_INET || dest.sin6_family == AF_INET6) {
    if (len < sizeof(struct sockaddr_in)) return 0;
    if (g.switching) {
      const struct slipstream_listener_table* t = Table();
      if (t == NULL || __atomic_load_n(&t->magic, __ATOMIC_ACQUIRE) != SLIPSTREAM_TABLE_MAGIC) {
        return 0; /* no daemon yet: the supervisor decides */
      }
      /* sin_port and sin6_port share their offset. */
      if (slipstream_port_supervised(t, ntohs(dest.sin6_port))) return 0;
    }
    *tcp = 1;
  }
  return !MaySwitched(fd);
}

/* ---- The interposed calls -------------------------------------------------------------------- */

EXPORT int socket(int domain, int type, int protocol) {
  if (!g.enabled)
    return g.socket ? g.socket(domain, type, protocol) : PLAIN(SYS_socket, domain, type, protocol);
  /* The supervisor only ever answers socket() CONTINUE (it is trapped for --trace/--stats). */
  Count(SLIPSTREAM_CALL_SOCKET, 1);
  long r = Bypass(SLIPSTREAM_CALL_SOCKET, SYS_socket, domain, type, protocol, 0, 0);
  Record(SLIPSTREAM_CALL_SOCKET, r, -1, domain, type, protocol, NULL, 0);
  return (int)r;
}

/* A connect left to the supervisor, which may switch it and then answer with the AF_UNIX end at
 * a new fd (preload_abi.h): the end replaces the socket at `fd`, with its close-on-exec flag. If
 * another thread closed `fd` and reused its number meanwhile (the program's own race), the end is
 * dropped rather than put over an unrelated file: the peer sees the connection closed.
 * Difference from libc's connect: not a cancellation point (a pthread_cancel acts at the thread's
 * next one). */
static int ConnectThroughSupervisor(int fd, const struct sockaddr* addr, socklen_t len) {
  struct stat before;
  int known = fstat(fd, &before) == 0;
  struct slipstream_connect_answer answer = {.kind = SLIPSTREAM_CLAIM_TCP};
  long r =
      ScrubbedSyscall(SYS_connect, fd, (long)addr, len, 0, (long)&answer, SLIPSTREAM_CONNECT_MARK);
  if (r < 0) {
    errno = (int)-r;
    return -1;
  }
  struct stat sent, now;
  if (answer.kind != SLIPSTREAM_CLAIM_NEW_FD || fstat((int)r, &sent) != 0 ||
      sent.st_ino != answer.ino || !S_ISSOCK(sent.st_mode)) {
    return (int)r; /* connect's own answer (from the shepherd if the supervisor died) */
  }
  long cloexec = ScrubbedSyscall(SYS_fcntl, fd, F_GETFD, 0, 0, 0, 0);
  if (!known || fstat(fd, &now) != 0 || now.st_ino != before.st_ino ||
      now.st_dev != before.st_dev) {
    (void)ScrubbedSyscall(SYS_close, r, 0, 0, 0, 0, 0);
    errno = ECONNRESET;
    return -1;
  }
  long d;
  do {
    d = ScrubbedSyscall(SYS_dup3, r, fd, cloexec > 0 && (cloexec & FD_CLOEXEC) ? O_CLOEXEC : 0, 0,
                        0, 0);
  } while (d == -EBUSY || d == -EINTR);
  (void)ScrubbedSyscall(SYS_close, r, 0, 0, 0, 0, 0);
  /* The supervisor read both addresses from the retained TCP socket: getsockname and getpeername
   * of the connection are answered here from now on, without the SLIPSTREAM_OPT_NAMES query.
   * Filed under the end's inode, not fstat(fd)'s: another thread may close and reuse the fd. */
  if (d == fd && answer.names.local_len != 0 && answer.names.peer_len != 0) {
    slipstream_names_store(fd, answer.ino, &answer.names);
  }
  if (answer.err != 0) {
    errno = answer.err;
    return -1;
  }
  return 0;
}

EXPORT int connect(int fd, const struct sockaddr* addr, socklen_t len) {
  int tcp = 0;
  struct sockaddr_in6 dest;
  if (g.enabled && ConnectInProcess(fd, addr, len, &tcp, &dest)) {
    Count(SLIPSTREAM_CALL_CONNECT, 1);
    if (tcp && g.stats != NULL) __atomic_fetch_add(&g.stats->tcp_connects, 1, __ATOMIC_RELAXED);
    long r = Bypass(SLIPSTREAM_CALL_CONNECT, SYS_connect, fd, (long)addr, len, 0, 0);
    Record(SLIPSTREAM_CALL_CONNECT, r, fd, 0, 0, 0, &dest, len);
    return (int)r;
  }
  if (g.enabled) Count(SLIPSTREAM_CALL_CONNECT, 0);
  int r = g.enabled && g.switching ? ConnectThroughSupervisor(fd, addr, len)
          : g.connect              ? g.connect(fd, addr, len)
                                   : PLAIN(SYS_connect, fd, addr, len);
  if (r == 0 || errno == EINPROGRESS) {
    int saved = errno;
    slipstream_note_connection(fd); /* switched by the supervisor? */
    errno = saved;
  }
  return r;
}

/* The fd-only calls: in-process unless the socket may be a switched one. `t0`, `t1` are what
 * --trace shows besides the fd (level and name, how), `taddr` an address to show. */
static long FdCallInProcess(int call, long nr, int fd, long a1, long a2, long a3, long a4, long t0,
                            long t1, const struct sockaddr* taddr, socklen_t taddr_len) {
  long r = Bypass(call, nr, fd, a1, a2, a3, a4);
  if (Tracing()) {
    struct sockaddr_in6 copy;
    int have = taddr != NULL && CopyAddress(taddr, taddr_len, &copy);
    Record(call, r, fd, t0, t1, 0, have ? &copy : NULL, have ? taddr_len : 0);
  }
  return r;
}

#define FD_CALL(call, nr, real, fd, a1, a2, a3, a4, t0, t1, taddr, taddr_len, ...)                \
  do {                                                                                            \
    if (g.enabled) {                                                                              \
      int here = !MaySwitched(fd);                                                                \
      Count(call, here);                                                                          \
      if (here) {                                                                                 \
        return (int)FdCallInProcess(call, nr, fd, (long)(a1), (long)(a2), (long)(a3), (long)(a4), \
                                    (long)(t0), (long)(t1), taddr, taddr_len);                    \
      }                                                                                           \
    }                                                                                             \
    return real ? real(fd, __VA_ARGS__) : PLAIN(nr, fd, __VA_ARGS__);                             \
  } while (0)

/* A bind to a fixed TCP/IP port goes to the supervisor: it first releases the retained TCP
 * sockets of switched connections on that port that the program has closed, so that a port an
 * abortive close freed is free again, as over TCP. Port 0 and other families run here. */
static int BindsFixedPort(const struct sockaddr* addr, socklen_t len) {
  struct sockaddr_in6 copy;
  if (!CopyAddress(addr, len, &copy)) return 1; /* the kernel's EFAULT/EINVAL, via libc */
  if (copy.sin6_family != AF_INET && copy.sin6_family != AF_INET6) return 0;
  return len >= sizeof(struct sockaddr_in) && copy.sin6_port != 0; /* same offset in both */
}

EXPORT int bind(int fd, const struct sockaddr* addr, socklen_t len) {
  if (g.enabled && g.switching && BindsFixedPort(addr, len)) {
    Count(SLIPSTREAM_CALL_BIND, 0);
    return g.bind ? g.bind(fd, addr, len) : PLAIN(SYS_bind, fd, addr, len);
  }
  FD_CALL(SLIPSTREAM_CALL_BIND, SYS_bind, g.bind, fd, addr, len, 0, 0, 0, 0, addr, len, addr, len);
}

/* Asks the supervisor for both addresses of the switched socket `fd` (one trapped getsockopt,
 * preload_abi.h) and keeps them (names.c). */
static int FetchNames(int fd) {
  struct slipstream_names names;
  socklen_t len = sizeof(names);
  long r;
  do {
    r = ScrubbedSyscall(SYS_getsockopt, fd, SLIPSTREAM_SOL, SLIPSTREAM_OPT_NAMES, (long)&names,
                        (long)&len, 0);
  } while (r == -EINTR);
  if (r != 0 || len != sizeof(names)) return 0;
  slipstream_names_store(fd, 0, &names);
  return 1;
}

/* getsockname (peer 0) and getpeername (peer 1): from the kept addresses of a switched socket,
 * in-process for every other socket, and through the supervisor otherwise; the first call on a
 * socket the supervisor switched fetches both addresses at once. */
static int GetName(int call, int fd, struct sockaddr* addr, socklen_t* len) {
  int peer = call == SLIPSTREAM_CALL_GETPEERNAME;
  getname_fn real = peer ? g.getpeername : g.getsockname;
  long nr = peer ? SYS_getpeername : SYS_getsockname;
  if (g.enabled) {
    int kept = slipstream_names_answer(fd, peer, addr, len);
    if (kept > 0) {
      Count(call, 1);
      Record(call, 0, fd, 0, 0, 0, NULL, 0);
      return 0;
    }
    if (kept < 0) { /* a switched socket, but the supervisor must answer this one */
      Count(call, 0);
      return real ? real(fd, addr, len) : PLAIN(nr, fd, addr, len);
    }
    if (!MaySwitched(fd)) {
      Count(call, 1);
      return (int)FdCallInProcess(call, nr, fd, (long)addr, (long)len, 0, 0, 0, 0, NULL, 0);
    }
    Count(call, 0);
    /* Addresses that cannot be kept (an fd beyond the table) would be fetched at every call, and
     * the call passed on anyway: two notifications instead of one. */
    if (!slipstream_names_keeps(fd)) return real ? real(fd, addr, len) : PLAIN(nr, fd, addr, len);
    int saved = errno;
    int fetched = g.switching && FetchNames(fd);
    errno = saved;
    if (fetched && slipstream_names_answer(fd, peer, addr, len) > 0) return 0;
  }
  return real ? real(fd, addr, len) : PLAIN(nr, fd, addr, len);
}

EXPORT int getsockname(int fd, struct sockaddr* addr, socklen_t* len) {
  return GetName(SLIPSTREAM_CALL_GETSOCKNAME, fd, addr, len);
}

EXPORT int getpeername(int fd, struct sockaddr* addr, socklen_t* len) {
  return GetName(SLIPSTREAM_CALL_GETPEERNAME, fd, addr, len);
}

/* A socket-level option the supervisor would let the kernel run on any socket, switched or not
 * (preload_abi.h): no need to ask whether the socket is switched. */
static int KernelAnswers(int level, int name, int set) {
  return level == SOL_SOCKET && !slipstream_identity_option(name) && !(set && name == SO_LINGER);
}

/* An option call options.c served from what the library keeps of a switched socket. */
static int ServedOption(int call, int fd, int level, int name, long result) {
  Count(call, 1);
  if (result < 0) errno = (int)-result;
  Record(call, result < 0 ? -1 : 0, fd, level, name, 0, NULL, 0);
  return result < 0 ? -1 : 0;
}

static int GetSockOpt(int fd, int level, int name, void* value, socklen_t* len) {
  long served;
  if (g.enabled && slipstream_options_get(fd, level, name, value, len, &served)) {
    return ServedOption(SLIPSTREAM_CALL_GETSOCKOPT, fd, level, name, served);
  }
  if (g.enabled && KernelAnswers(level, name, 0)) {
    Count(SLIPSTREAM_CALL_GETSOCKOPT, 1);
    return (int)FdCallInProcess(SLIPSTREAM_CALL_GETSOCKOPT, SYS_getsockopt, fd, level, name,
                                (long)value, (long)len, level, name, NULL, 0);
  }
  FD_CALL(SLIPSTREAM_CALL_GETSOCKOPT, SYS_getsockopt, g.getsockopt, fd, level, name, value, len,
          level, name, NULL, 0, level, name, value, len);
}

EXPORT int getsockopt(int fd, int level, int name, void* value, socklen_t* len) {
  int r = GetSockOpt(fd, level, name, value, len);
  if (r == 0 && level == SOL_SOCKET && name == SO_ERROR) {
    int saved = errno;
    slipstream_note_socket_error(fd, value, len);
    errno = saved;
  }
  return r;
}

EXPORT int setsockopt(int fd, int level, int name, const void* value, socklen_t len) {
  long served;
  if (g.enabled && slipstream_options_set(fd, level, name, value, len, &served)) {
    return ServedOption(SLIPSTREAM_CALL_SETSOCKOPT, fd, level, name, served);
  }
  if (g.enabled && KernelAnswers(level, name, 1)) {
    Count(SLIPSTREAM_CALL_SETSOCKOPT, 1);
    return (int)FdCallInProcess(SLIPSTREAM_CALL_SETSOCKOPT, SYS_setsockopt, fd, level, name,
                                (long)value, (long)len, level, name, NULL, 0);
  }
  FD_CALL(SLIPSTREAM_CALL_SETSOCKOPT, SYS_setsockopt, g.setsockopt, fd, level, name, value, len,
          level, name, NULL, 0, level, name, value, len);
}

static int Shutdown(int fd, int how) {
  FD_CALL(SLIPSTREAM_CALL_SHUTDOWN, SYS_shutdown, g.shutdown, fd, how, 0, 0, 0, how, 0, NULL, 0,
          how);
}

EXPORT int shutdown(int fd, int how) {
  int r = Shutdown(fd, how);
  if (r == 0 && how != SHUT_RD) slipstream_note_write_shut(fd);
  return r;
}

/* ---- accept ---------------------------------------------------------------------------------- */

/* Whether an accept on `listener` may run here; `port` gets the listener's TCP/IP port (0 for
 * other families). It runs here unless the supervisor must see it (docs/design.md, "Accept in the
 * program"): the port is not in the table (the supervisor registers a listener it did not know
 * at its first accept), no table is readable yet, or the supervisor holds a connection taken from
 * a listener of this port for an accept the program left (`parked`), which the next accept must
 * get. Sockets of other families, and errors the kernel reports itself (EBADF, ENOTSOCK), run
 * here: the supervisor would let them through. */
static int AcceptInProcess(int listener, uint16_t* port) {
  *port = 0;
  if (!g.switching) return 1; /* --no-switch: the supervisor only lets accepts through */
  struct sockaddr_in6 name;
  socklen_t len = sizeof(name);
  int saved = errno;
  long r =
      Bypass(SLIPSTREAM_CALL_GETSOCKNAME, SYS_getsockname, listener, (long)&name, (long)&len, 0, 0);
  int err = errno;
  errno = saved;
  if (r != 0) return err == EBADF || err == ENOTSOCK;
  if (name.sin6_family != AF_INET && name.sin6_family != AF_INET6) return 1;
  const struct slipstream_listener_table* t = Table();
  if (t == NULL || __atomic_load_n(&t->magic, __ATOMIC_ACQUIRE) != SLIPSTREAM_TABLE_MAGIC) return 0;
  uint16_t p = ntohs(name.sin6_port); /* sin_port and sin6_port share their offset */
  if (!slipstream_port_supervised(t, p) || __atomic_load_n(&t->parked[p], __ATOMIC_SEQ_CST) != 0) {
    return 0;
  }
  *port = p;
  return 1;
}

/* The connection `fd` was accepted here while a client's supervisor was switching a connect to
 * this port: offer it to our supervisor (a trapped getsockopt, preload_abi.h). If the client is
 * the one switching, the call returns a new fd naming the AF_UNIX end, which replaces `fd` here.
 * Without a supervisor (fail-open) the kernel answers an error (EOPNOTSUPP) and the socket stays
 * TCP. A signal that interrupts the claim before the answer leaves nothing installed: the claim
 * is made again. Keeps errno. */
static int LateClaim(int fd) {
  int32_t claim = SLIPSTREAM_CLAIM_TCP;
  socklen_t len = sizeof(claim);
  long r;
  do {
    r = ScrubbedSyscall(SYS_getsockopt, fd, SLIPSTREAM_SOL, SLIPSTREAM_OPT_CLAIM, (long)&claim,
                        (long)&len, 0);
  } while (r == -EINTR);
  if (g.stats != NULL) __atomic_fetch_add(&g.stats->claims, 1, __ATOMIC_RELAXED);
  int switched = r >= 0 && claim != SLIPSTREAM_CLAIM_TCP;
  if (r >= 0 && claim == SLIPSTREAM_CLAIM_NEW_FD) {
    /* `fd` is not the program's yet (its accept has not returned), so nothing else uses it. dup3
     * fails only with EBUSY (a racing open() in another thread holds the slot): try again. */
    long cloexec = ScrubbedSyscall(SYS_fcntl, fd, F_GETFD, 0, 0, 0, 0);
    int flags = cloexec > 0 && (cloexec & FD_CLOEXEC) ? O_CLOEXEC : 0;
    long d;
    do {
      d = ScrubbedSyscall(SYS_dup3, r, fd, flags, 0, 0, 0);
    } while (d == -EBUSY || d == -EINTR);
    (void)ScrubbedSyscall(SYS_close, r, 0, 0, 0, 0, 0);
  }
  if (switched) {
    if (g.stats != NULL) __atomic_fetch_add(&g.stats->claims_switched, 1, __ATOMIC_RELAXED);
    slipstream_note_connection(fd);
    return 1;
  }
  slipstream_note_tcp(fd);
  return 0;
}

/* Both addresses of the TCP socket `fd`, read in-process (the supervisor would read the same ones
 * from the socket it retains). */
static int TcpNames(int fd, struct slipstream_names* names) {
  socklen_t local = sizeof(names->local), peer = sizeof(names->peer);
  if (Bypass(SLIPSTREAM_CALL_GETSOCKNAME, SYS_getsockname, fd, (long)names->local, (long)&local, 0,
             0) != 0 ||
      Bypass(SLIPSTREAM_CALL_GETPEERNAME, SYS_getpeername, fd, (long)names->peer, (long)&peer, 0,
             0) != 0) {
    return 0;
  }
  names->local_len = local;
  names->peer_len = peer;
  return local <= sizeof(names->local) && peer <= sizeof(names->peer);
}

static int Accept(int call, int listener, struct sockaddr* addr, socklen_t* len, int flags) {
  uint16_t port = 0;
  if (!g.enabled || !AcceptInProcess(listener, &port)) {
    if (g.enabled) Count(call, 0);
    int r;
    if (call == SLIPSTREAM_CALL_ACCEPT) {
      r = g.accept ? g.accept(listener, addr, len) : PLAIN(SYS_accept, listener, addr, len);
    } else {
      r = g.accept4 ? g.accept4(listener, addr, len, flags)
                    : PLAIN(SYS_accept4, listener, addr, len, flags);
    }
    if (r >= 0) {
      int saved = errno;
      slipstream_note_connection(r); /* switched by the supervisor? */
      errno = saved;
    }
    return r;
  }
  Count(call, 1);
  /* accept() is accept4() with no flags; only accept4 has a bypass (preload_abi.h). */
  long r = Bypass(SLIPSTREAM_CALL_ACCEPT4, SYS_accept4, listener, (long)addr, (long)len, flags, 0);
  Record(call, r, listener, flags, 0, 0, NULL, 0);
  if (r < 0) return (int)r;
  int saved = errno;
  const struct slipstream_listener_table* t = g_table;
  /* Sequentially consistent, as the client's supervisor raised it: a raise made before the
   * connect of the connection we took is visible here (preload_abi.h). */
  if (port != 0 && t != NULL && __atomic_load_n(&t->switching[port], __ATOMIC_SEQ_CST) != 0) {
    /* The addresses are read now, while the fd is still the TCP socket: a switched socket's
     * getsockname/getpeername are then answered here (names.c). */
    struct slipstream_names names;
    int named = TcpNames((int)r, &names);
    if (LateClaim((int)r) && named) slipstream_names_store((int)r, 0, &names);
  } else {
    if (port != 0 && g.stats != NULL)
      __atomic_fetch_add(&g.stats->tcp_accepts, 1, __ATOMIC_RELAXED);
    slipstream_note_tcp((int)r);
  }
  errno = saved;
  return (int)r;
}

EXPORT int accept(int fd, struct sockaddr* addr, socklen_t* len) {
  return Accept(SLIPSTREAM_CALL_ACCEPT, fd, addr, len, 0);
}

EXPORT int accept4(int fd, struct sockaddr* addr, socklen_t* len, int flags) {
  return Accept(SLIPSTREAM_CALL_ACCEPT4, fd, addr, len, flags);
}
