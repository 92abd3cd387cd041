/* What libslipstream-preload.so shares with slipstream-trace and slipstreamd (docs/design.md,
 * "Hybrid mode"): the environment variables that configure it, which argument register of each
 * call carries the run's cookie, and the layout of the two shared-memory files it maps.
 *
 * Plain C, included by the library (C) and by the supervisor and daemon (C++). Fields shared
 * between processes are only accessed with __atomic builtins. */
#ifndef SLIPSTREAM_PRELOAD_FALLBACK_PRELOAD_ABI_H_
#define SLIPSTREAM_PRELOAD_FALLBACK_PRELOAD_ABI_H_

#include <stdint.h>
#include <sys/socket.h>

/* The run's cookie, 16 hex digits. Without it the library passes every call on unchanged. */
#define SLIPSTREAM_ENV_COOKIE "SLIPSTREAM_COOKIE"
/* Path of the daemon's table of supervised listener ports. Unset: nothing is switched
 * (--no-switch), so every connect may run in-process. */
#define SLIPSTREAM_ENV_TABLE "SLIPSTREAM_LISTENER_TABLE"
/* Path of the run's counters (only with --stats). */
#define SLIPSTREAM_ENV_STATS "SLIPSTREAM_PRELOAD_STATS"

#define SLIPSTREAM_PRELOAD_LIBRARY "libslipstream-preload.so"

/* The calls in the order of slipstream::tracer::Call (checked by a static_assert there). */
enum slipstream_call {
  SLIPSTREAM_CALL_SOCKET,
  SLIPSTREAM_CALL_CONNECT,
  SLIPSTREAM_CALL_ACCEPT,
  SLIPSTREAM_CALL_ACCEPT4,
  SLIPSTREAM_CALL_BIND,
  SLIPSTREAM_CALL_LISTEN,
  SLIPSTREAM_CALL_GETSOCKNAME,
  SLIPSTREAM_CALL_GETPEERNAME,
  SLIPSTREAM_CALL_GETSOCKOPT,
  SLIPSTREAM_CALL_SETSOCKOPT,
  SLIPSTREAM_CALL_SHUTDOWN,
  /* Data-path calls: trapped only in their rare forms; the library serves none of them. */
  SLIPSTREAM_CALL_SENDTO,
  SLIPSTREAM_CALL_RECVFROM,
  SLIPSTREAM_CALL_SENDMSG,
  SLIPSTREAM_CALL_RECVMSG,
  SLIPSTREAM_CALL_SENDMMSG,
  SLIPSTREAM_CALL_RECVMMSG,
  SLIPSTREAM_CALL_COUNT
};

/* The argument register that carries the cookie: the first one the system call does not read
 * (socket, connect, bind, getsockname, getpeername take 3 arguments, accept4 4, getsockopt and
 * setsockopt 5, shutdown 2). The kernel ignores it. -1: no bypass: listen always registers its
 * listener through the supervisor, and the library serves accept() as accept4(flags 0), so
 * accept itself needs none (no leftover cookie can take it past the supervisor). */
static inline int slipstream_cookie_arg(int call) {
  switch (call) {
    case SLIPSTREAM_CALL_SOCKET:
    case SLIPSTREAM_CALL_CONNECT:
    case SLIPSTREAM_CALL_BIND:
    case SLIPSTREAM_CALL_GETSOCKNAME:
    case SLIPSTREAM_CALL_GETPEERNAME:
      return 3;
    case SLIPSTREAM_CALL_ACCEPT4:
      return 4;
    case SLIPSTREAM_CALL_GETSOCKOPT:
    case SLIPSTREAM_CALL_SETSOCKOPT:
      return 5;
    case SLIPSTREAM_CALL_SHUTDOWN:
      return 2;
    default:
      return -1;
  }
}

/* The socket-level options the supervisor answers itself on a switched socket, because the
 * AF_UNIX end would give a different answer than TCP (its identity: family, protocol, peer
 * credentials and name, cookie, device, mark, CPU, security context). Every other SOL_SOCKET
 * option it lets the kernel run on the AF_UNIX end (timeouts, buffers, SO_ERROR, SO_KEEPALIVE...),
 * so the library runs those in-process on any socket; setsockopt(SO_LINGER) excepted, which the
 * supervisor mirrors on the retained TCP socket. One list for both (docs/differences.md). */
static inline int slipstream_identity_option(int name) {
  switch (name) {
    case SO_DOMAIN:
    case SO_PROTOCOL:
    case SO_PEERCRED:
    case SO_PEERNAME:
    case SO_COOKIE:
    case SO_BINDTODEVICE:
    case SO_MARK:
    case SO_INCOMING_CPU:
    case SO_PEERSEC:
    case SO_PEERGROUPS:
      return 1;
    default:
      return 0;
  }
}

/* The daemon's table (one per runtime directory, never unlinked, so a mapping stays current across
 * daemon restarts): bit p of `ports` is set while at least one registered (supervised) listener
 * has TCP port p. A bit is set before the registering listen() returns.
 *
 * The two gates of the in-process accept (docs/design.md, "Accept in the program") follow; the
 * supervisors write them, and a new daemon leaves them alone (a count belongs to the supervisor
 * that raised it, which may outlive a daemon); a daemon leaving after 30 s without supervisors
 * clears them:
 * - switching[p]: connects to port p that a client's supervisor is switching and whose server end
 *   has not yet been installed or given up. Raised before the connect runs, lowered when the
 *   daemon reports the end installed (kRelease) or relayed, or the switch is abandoned. The
 *   daemon (per pending pair) and a server's supervisor (per end pushed to it) raise it too, so
 *   that it stays raised when the client's supervisor exits before the server accepts. An accept
 *   that finds it non-zero after taking a connection from the kernel offers it to its supervisor
 *   (SLIPSTREAM_OPT_CLAIM). A supervisor's raises are also written to its ledger, shared with
 *   the daemon (matcher::GateLedger), which lowers what a killed supervisor left raised when
 *   its session ends; a count still raised (no daemon then, or killed between the two writes)
 *   costs accepts on that port a notification each, never a wrong answer, until the daemon's
 *   idle exit.
 * - parked[p]: connections a server's supervisor took from a listener on port p for an accept the
 *   program then left (a signal, EMFILE), owed to the next accept on that listener. While
 *   non-zero, accepts on port p go to the supervisor. */
#define SLIPSTREAM_TABLE_MAGIC 0x324c425454535353ULL
#define SLIPSTREAM_TABLE_WORDS (65536 / 64)
struct slipstream_listener_table {
  uint64_t magic;      /* written last when the daemon (re)initialises the file */
  uint64_t generation; /* bumped on every change */
  uint64_t ports[SLIPSTREAM_TABLE_WORDS];
  uint32_t switching[65536];
  uint32_t parked[65536];
};

/* The late claim: getsockopt(fd, SLIPSTREAM_SOL, SLIPSTREAM_OPT_CLAIM, &int, &len), made without
 * the cookie on a TCP socket the library has just accepted in-process, so that the supervisor
 * sees it. The int says what happened:
 *  - SLIPSTREAM_CLAIM_NEW_FD: a supervised client is the peer; the call returned a new fd (ADDFD
 *    with SEND, Linux 5.14: install and answer in one wake-up), close-on-exec, naming the AF_UNIX
 *    end, which the library moves over `fd` with dup3;
 *  - SLIPSTREAM_CLAIM_TCP (0): not paired, the socket stays TCP;
 *  - SLIPSTREAM_CLAIM_SWITCHED: `fd` was switched already (nothing new).
 * The level is no protocol's, so without a supervisor (fail-open) the kernel answers an error
 * (EOPNOTSUPP on Linux 6.18, TCP and AF_UNIX alike) and the socket stays TCP. */
#define SLIPSTREAM_SOL 0x534c4950 /* "SLIP" */
#define SLIPSTREAM_OPT_CLAIM 1
#define SLIPSTREAM_CLAIM_TCP 0
#define SLIPSTREAM_CLAIM_SWITCHED 1
#define SLIPSTREAM_CLAIM_NEW_FD 2

/* getsockopt(fd, SLIPSTREAM_SOL, SLIPSTREAM_OPT_NAMES, &struct slipstream_names, &len), made
 * without the cookie on a socket the supervisor switched: it answers both addresses of the
 * retained TCP socket at once (what getsockname and getpeername would answer), so that the
 * library answers the later ones itself. An error from the kernel (EOPNOTSUPP) on any other
 * socket; the error of either address otherwise (ENOTCONN after a reset). */
#define SLIPSTREAM_OPT_NAMES 2
struct slipstream_names {
  uint32_t local_len, peer_len;
  uint8_t local[28], peer[28]; /* a sockaddr_in or sockaddr_in6 */
};

/* A connect the library leaves to the supervisor carries, past connect's three arguments,
 * SLIPSTREAM_CONNECT_MARK in the sixth and the address of a struct slipstream_connect_answer in
 * the fifth (the kernel reads neither; the filter does not let them bypass it). If the supervisor
 * switches the connection and the target waits killably for the answer (WAIT_KILLABLE_RECV, Linux
 * 5.19: only a fatal signal can take the answer away), it answers with ADDFD SEND (Linux 5.14):
 * the call returns a new close-on-exec fd naming the AF_UNIX end, `kind` says
 * SLIPSTREAM_CLAIM_NEW_FD, `err` the connect's own result (0, or EINPROGRESS for a non-blocking
 * socket), `ino` the end's inode and `names` both addresses of the retained TCP socket (both
 * lengths 0 if either could not be read); the library moves the fd over the socket's with dup3
 * and keeps the addresses (names.c), so that the connection's getsockname and getpeername cost
 * no notification, not even the SLIPSTREAM_OPT_NAMES query.
 * Otherwise `kind` stays SLIPSTREAM_CLAIM_TCP and the call returns connect's answer. The answer
 * is written before the SEND, so a supervisor killed in between leaves it written while the
 * shepherd answers the call itself (0 for a connect already made): the library takes the
 * returned number for the end only if it names the inode `ino`. One wake-up of the target
 * instead of two (ADDFD SETFD, then the answer). */
#define SLIPSTREAM_CONNECT_MARK 0x534c495043304e32LL /* "SLIPC0N2" */
struct slipstream_connect_answer {
  int32_t kind;
  int32_t err;
  uint64_t ino;
  struct slipstream_names names;
};
/* The mark names the answer's layout: a new layout takes a new mark, so that the supervisor never
 * writes past the answer of a library from another build (another copy first in LD_PRELOAD); such
 * a connect is switched as one without the mark. */
#ifdef __cplusplus
static_assert(sizeof(struct slipstream_connect_answer) == 80, "SLIPSTREAM_CONNECT_MARK's layout");
#else
_Static_assert(sizeof(struct slipstream_connect_answer) == 80, "SLIPSTREAM_CONNECT_MARK's layout");
#endif

static inline int slipstream_port_supervised(const struct slipstream_listener_table* t,
                                             uint16_t port) {
  uint64_t word = __atomic_load_n(&t->ports[port / 64], __ATOMIC_ACQUIRE);
  return (int)((word >> (port % 64)) & 1);
}

/* One call served in-process, for --trace: written by the library, printed by slipstream-trace at
 * exit. */
struct slipstream_trace_record {
  uint64_t seq;    /* 1 + the record's number once complete; 0 while it is written */
  int64_t time_ns; /* CLOCK_REALTIME */
  int32_t tid;
  int32_t call;
  int32_t fd;  /* -1 for socket() */
  int32_t err; /* errno, 0 on success */
  int64_t result;
  int64_t args[3];   /* socket: domain, type, protocol; sockopts: level, name; shutdown: how */
  uint32_t addr_len; /* connect, bind: the address (0 if not readable) */
  uint8_t addr[28];
};
#define SLIPSTREAM_TRACE_SLOTS 4096

/* The run's counters, created by slipstream-trace for --stats and --trace, read at exit. */
#define SLIPSTREAM_STATS_MAGIC 0x3254535453535353ULL
struct slipstream_preload_stats {
  uint64_t magic;
  uint64_t in_process[SLIPSTREAM_CALL_COUNT]; /* served in the program with the cookie (no
                                                 notification) */
  uint64_t
      to_supervisor[SLIPSTREAM_CALL_COUNT]; /* interposed, but left to the supervisor (trapped) */
  uint64_t tcp_connects;    /* connects to an IP address made in-process: left on TCP */
  uint64_t tcp_accepts;     /* accepts of TCP/IP connections made in-process, no claim */
  uint64_t claims;          /* accepts made in-process, then offered to the supervisor */
  uint64_t claims_switched; /* of those, the ones the supervisor switched */
  uint32_t trace;           /* --trace: record each call served in-process */
  uint32_t reserved;
  uint64_t trace_next; /* records claimed so far; the ring keeps the first SLIPSTREAM_TRACE_SLOTS */
  struct slipstream_trace_record trace_ring[SLIPSTREAM_TRACE_SLOTS];
};

#endif /* SLIPSTREAM_PRELOAD_FALLBACK_PRELOAD_ABI_H_ */
