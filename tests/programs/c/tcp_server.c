// tcp_server: a static TCP server for Slipstream's tests.
//
//   tcp_server [--mode echo|sink|source] [--source-bytes N] [--seed S]
//              [--concurrency single|fork|thread] [--accept accept|accept4]
//              [--loop blocking|epoll] [--family ipv4|ipv6|v4mapped] [--bind HOST] [--port P]
//              [--port-file PATH] [--count N] [--backlog N]
//
// Modes: echo sends back what it reads until EOF; sink reads to EOF, then replies
// "<byte count> <FNV-1a 64 hex>\n"; source speaks first, sends N bytes of the pattern of `--seed`
// and closes. Every connection is checked: getpeername() must equal the address accept() returned
// and getsockname() must name the listening port. After --count connections (0: forever) it prints
//   server: mode=sink connections=N bytes_in=X bytes_out=Y peer_host=127.0.0.1 errors=0
// and exits 0, or 3 when any connection had an error (details on stderr).
#include "fixture.h"  // first: it defines _GNU_SOURCE

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/wait.h>

enum Mode { kEcho, kSink, kSource };
enum Concurrency { kSingle, kFork, kThread };

struct Config {
  enum Mode mode;
  long long source_bytes;
  long long seed;
  enum Concurrency concurrency;
  int use_accept4;
  int use_epoll;
  const char* family;
  const char* bind_host;
  int port;
  const char* port_file;
  long long count;
  int backlog;
};

// Totals, in shared memory so forked children can add to them.
struct Totals {
  atomic_llong connections;
  atomic_llong bytes_in;
  atomic_llong bytes_out;
  atomic_llong errors;
  atomic_int peer_host_set;
  atomic_int peer_host_differs;
  char peer_host[INET6_ADDRSTRLEN];
};

static struct Config config = {kEcho, 0, 0, kSingle, 1, 0, "ipv4", NULL, 0, NULL, 0, 4096};
static struct Totals* totals;
static int listen_port;
static int listen_family;

static void Usage(void) {
  fprintf(stderr,
          "usage: tcp_server [--mode echo|sink|source] [--source-bytes N] [--seed S]\n"
          "  [--concurrency single|fork|thread] [--accept accept|accept4] [--loop blocking|epoll]\n"
          "  [--family ipv4|ipv6|v4mapped] [--bind HOST] [--port P] [--port-file PATH]\n"
          "  [--count N] [--backlog N]\n");
  exit(2);
}

static void ParseArgs(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const char* opt = argv[i];
    if (i + 1 >= argc) Usage();
    const char* val = argv[++i];
    if (strcmp(opt, "--mode") == 0) {
      if (strcmp(val, "echo") == 0)
        config.mode = kEcho;
      else if (strcmp(val, "sink") == 0)
        config.mode = kSink;
      else if (strcmp(val, "source") == 0)
        config.mode = kSource;
      else
        Usage();
    } else if (strcmp(opt, "--source-bytes") == 0) {
      config.source_bytes = fx_parse_count(opt, val);
    } else if (strcmp(opt, "--seed") == 0) {
      config.seed = fx_parse_count(opt, val);
    } else if (strcmp(opt, "--concurrency") == 0) {
      if (strcmp(val, "single") == 0)
        config.concurrency = kSingle;
      else if (strcmp(val, "fork") == 0)
        config.concurrency = kFork;
      else if (strcmp(val, "thread") == 0)
        config.concurrency = kThread;
      else
        Usage();
    } else if (strcmp(opt, "--accept") == 0) {
      if (strcmp(val, "accept") == 0)
        config.use_accept4 = 0;
      else if (strcmp(val, "accept4") == 0)
        config.use_accept4 = 1;
      else
        Usage();
    } else if (strcmp(opt, "--loop") == 0) {
      if (strcmp(val, "blocking") == 0)
        config.use_epoll = 0;
      else if (strcmp(val, "epoll") == 0)
        config.use_epoll = 1;
      else
        Usage();
    } else if (strcmp(opt, "--family") == 0) {
      if (strcmp(val, "ipv4") && strcmp(val, "ipv6") && strcmp(val, "v4mapped")) Usage();
      config.family = val;
    } else if (strcmp(opt, "--bind") == 0) {
      config.bind_host = val;
    } else if (strcmp(opt, "--port") == 0) {
      config.port = (int)fx_parse_count(opt, val);
    } else if (strcmp(opt, "--port-file") == 0) {
      config.port_file = val;
    } else if (strcmp(opt, "--count") == 0) {
      config.count = fx_parse_count(opt, val);
    } else if (strcmp(opt, "--backlog") == 0) {
      config.backlog = (int)fx_parse_count(opt, val);
    } else {
      Usage();
    }
  }
}

static const char* ModeName(enum Mode m) {
  return m == kEcho ? "echo" : m == kSink ? "sink" : "source";
}

static void CountError(const char* what, int err) {
  fprintf(stderr, "tcp_server: %s: %s\n", what, fx_errno_name(err));
  atomic_fetch_add(&totals->errors, 1);
}

// Creates, binds and listens. The v4-mapped family is an IPv6 socket with IPV6_V6ONLY off bound to
// "::", so IPv4 clients arrive as ::ffff:a.b.c.d.
static int Listen(void) {
  const char* host = config.bind_host;
  int v6 = strcmp(config.family, "ipv4") != 0;
  if (host == NULL)
    host = strcmp(config.family, "ipv4") == 0   ? "127.0.0.1"
           : strcmp(config.family, "ipv6") == 0 ? "::1"
                                                : "::";
  struct sockaddr_storage addr;
  socklen_t len = fx_make_addr(host, config.port, &addr);
  if (len == 0) {
    errno = EINVAL;
    fx_die("bad bind address %s", host);
  }
  int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fx_die("socket");
  int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0) fx_die("SO_REUSEADDR");
  if (v6) {
    int v6only = strcmp(config.family, "ipv6") == 0;
    if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only)) < 0) {
      fx_die("IPV6_V6ONLY");
    }
  }
  if (bind(fd, (struct sockaddr*)&addr, len) < 0) fx_die("bind %s:%d", host, config.port);
  if (listen(fd, config.backlog) < 0) fx_die("listen");
  struct sockaddr_storage bound;
  socklen_t bound_len = sizeof(bound);
  if (getsockname(fd, (struct sockaddr*)&bound, &bound_len) < 0) fx_die("getsockname");
  listen_port = fx_port_of(&bound);
  listen_family = bound.ss_family;
  if (config.use_epoll && fx_set_nonblocking(fd, 1) < 0) fx_die("O_NONBLOCK");
  return fd;
}

// getpeername must repeat what accept returned; getsockname must name the listening port.
static void CheckNames(int conn, const struct sockaddr_storage* peer, socklen_t peer_len) {
  struct sockaddr_storage got;
  socklen_t got_len = sizeof(got);
  if (getpeername(conn, (struct sockaddr*)&got, &got_len) < 0) {
    CountError("getpeername", errno);
  } else if (got_len != peer_len || memcmp(&got, peer, peer_len) != 0) {
    CountError("getpeername differs from accept's address", 0);
  }
  got_len = sizeof(got);
  if (getsockname(conn, (struct sockaddr*)&got, &got_len) < 0) {
    CountError("getsockname", errno);
  } else if (fx_port_of(&got) != listen_port || got.ss_family != listen_family) {
    CountError("getsockname does not name the listening port", 0);
  }
  char host[INET6_ADDRSTRLEN];
  fx_host_text(peer, host, sizeof(host));
  int expected = 0;
  if (atomic_compare_exchange_strong(&totals->peer_host_set, &expected, 2)) {
    snprintf(totals->peer_host, sizeof(totals->peer_host), "%s", host);
    atomic_store(&totals->peer_host_set, 1);
  } else {
    while (atomic_load(&totals->peer_host_set) != 1) {
    }
    if (strcmp(totals->peer_host, host) != 0) atomic_store(&totals->peer_host_differs, 1);
  }
}

// ---- Blocking per-connection service (single, fork, thread) -------------------------------------

static void ServeBlocking(int conn) {
  uint8_t buf[65536];
  long long in = 0, out = 0;
  if (config.mode == kSource) {
    for (long long off = 0; off < config.source_bytes;) {
      size_t n =
          (size_t)(config.source_bytes - off < (long long)sizeof(buf) ? config.source_bytes - off
                                                                      : (long long)sizeof(buf));
      fx_pattern_fill((uint64_t)config.seed, (uint64_t)off, buf, n);
      if (fx_write_all(conn, buf, n) < 0) return CountError("write (source)", errno);
      off += (long long)n;
      out += (long long)n;
    }
  } else {
    uint64_t hash = FX_FNV_OFFSET;
    for (;;) {
      ssize_t n = read(conn, buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return CountError("read", errno);
      if (n == 0) break;
      in += n;
      if (config.mode == kEcho) {
        if (fx_write_all(conn, buf, (size_t)n) < 0) return CountError("write (echo)", errno);
        out += n;
      } else {
        hash = fx_fnv1a(hash, buf, (size_t)n);
      }
    }
    if (config.mode == kSink) {
      char reply[64];
      int len = snprintf(reply, sizeof(reply), "%lld %016llx\n", in, (unsigned long long)hash);
      if (fx_write_all(conn, reply, (size_t)len) < 0) return CountError("write (reply)", errno);
      out += len;
    }
  }
  atomic_fetch_add(&totals->bytes_in, in);
  atomic_fetch_add(&totals->bytes_out, out);
  atomic_fetch_add(&totals->connections, 1);
}

struct Accepted {
  int fd;
  struct sockaddr_storage peer;
  socklen_t peer_len;
};

static void HandleConnection(struct Accepted* a) {
  CheckNames(a->fd, &a->peer, a->peer_len);
  ServeBlocking(a->fd);
  close(a->fd);
}

static void* ThreadMain(void* arg) {
  HandleConnection((struct Accepted*)arg);
  free(arg);
  return NULL;
}

static pthread_t* threads;
static size_t thread_count, thread_cap;
static int children_running;

static void ReapChildren(int block) {
  for (;;) {
    int status;
    pid_t pid = waitpid(-1, &status, block ? 0 : WNOHANG);
    if (pid < 0 && errno == EINTR) continue;
    if (pid <= 0) return;
    --children_running;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) CountError("connection child failed", 0);
    if (block && children_running == 0) return;
  }
}

// Hands a blocking connection to its worker (this thread, a child process, or a new thread).
static void Dispatch(struct Accepted a) {
  if (fx_set_nonblocking(a.fd, 0) < 0) fx_die("clear O_NONBLOCK");
  if (config.concurrency == kSingle) {
    HandleConnection(&a);
  } else if (config.concurrency == kFork) {
    pid_t pid = fork();
    if (pid < 0) fx_die("fork");
    if (pid == 0) {
      HandleConnection(&a);
      _exit(0);
    }
    ++children_running;
    close(a.fd);
    ReapChildren(0);
  } else {
    struct Accepted* copy = malloc(sizeof(*copy));
    *copy = a;
    if (thread_count == thread_cap) {
      thread_cap = thread_cap ? thread_cap * 2 : 64;
      threads = realloc(threads, thread_cap * sizeof(*threads));
    }
    int rc = pthread_create(&threads[thread_count++], NULL, ThreadMain, copy);
    if (rc != 0) {
      errno = rc;
      fx_die("pthread_create");
    }
  }
}

// accept or accept4 as configured; returns the fd or -1 with errno.
static int AcceptOne(int listener, struct Accepted* a, int nonblocking) {
  a->peer_len = sizeof(a->peer);
  int fd;
  do {
    if (config.use_accept4) {
      fd = accept4(listener, (struct sockaddr*)&a->peer, &a->peer_len,
                   SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0));
    } else {
      fd = accept(listener, (struct sockaddr*)&a->peer, &a->peer_len);
      if (fd >= 0 && nonblocking && fx_set_nonblocking(fd, 1) < 0) fx_die("O_NONBLOCK");
    }
  } while (fd < 0 && errno == EINTR);
  a->fd = fd;
  return fd;
}

static void RunBlocking(int listener) {
  for (long long served = 0; config.count == 0 || served < config.count; ++served) {
    struct Accepted a;
    if (AcceptOne(listener, &a, 0) < 0) fx_die("accept");
    Dispatch(a);
  }
}

// ---- The non-blocking epoll loop
// -------------------------------------------------------------------

// One connection served from the event loop (concurrency single).
enum Phase { kPhaseRead, kPhaseReply, kPhaseSource };

struct Conn {
  int fd;
  enum Phase phase;
  long long in, out;
  uint64_t hash;
  uint8_t pending[65536];  // bytes still to write
  size_t pending_off, pending_len;
  long long source_off;  // source mode: pattern bytes produced so far
};

static void CloseConn(int epfd, struct Conn* c, int ok) {
  epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  if (ok) {
    atomic_fetch_add(&totals->bytes_in, c->in);
    atomic_fetch_add(&totals->bytes_out, c->out);
    atomic_fetch_add(&totals->connections, 1);
  }
  free(c);
}

// Advances one connection until the kernel says EAGAIN. Returns 0 while it lives, 1 when it is
// finished, -1 on error. Edge-triggered: every return of 0 follows an EAGAIN.
static int Step(struct Conn* c) {
  for (;;) {
    while (c->pending_off < c->pending_len) {
      ssize_t n = write(c->fd, c->pending + c->pending_off, c->pending_len - c->pending_off);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) return 0;
      if (n < 0) return CountError("write (epoll)", errno), -1;
      c->pending_off += (size_t)n;
      c->out += n;
    }
    c->pending_off = c->pending_len = 0;
    if (c->phase == kPhaseReply) return 1;
    if (c->phase == kPhaseSource) {
      if (c->source_off >= config.source_bytes) return 1;
      long long left = config.source_bytes - c->source_off;
      size_t n = left < (long long)sizeof(c->pending) ? (size_t)left : sizeof(c->pending);
      fx_pattern_fill((uint64_t)config.seed, (uint64_t)c->source_off, c->pending, n);
      c->source_off += (long long)n;
      c->pending_len = n;
      continue;
    }
    ssize_t n = read(c->fd, c->pending, sizeof(c->pending));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return 0;
    if (n < 0) return CountError("read (epoll)", errno), -1;
    if (n == 0) {
      if (config.mode == kEcho) return 1;
      c->pending_len = (size_t)snprintf((char*)c->pending, sizeof(c->pending), "%lld %016llx\n",
                                        c->in, (unsigned long long)c->hash);
      c->phase = kPhaseReply;
      continue;
    }
    c->in += n;
    if (config.mode == kEcho) {
      c->pending_len = (size_t)n;
    } else {
      c->hash = fx_fnv1a(c->hash, c->pending, (size_t)n);
    }
  }
}

static void RunEpoll(int listener) {
  int epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) fx_die("epoll_create1");
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, listener, &ev) < 0) fx_die("epoll_ctl(listener)");
  long long accepted = 0;
  long long live = 0;
  int listening = 1;
  // Forked and threaded workers are reaped and joined by main() after the loop.
  while (listening || live > 0) {
    struct epoll_event events[64];
    int n = epoll_wait(epfd, events, 64, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fx_die("epoll_wait");
    for (int k = 0; k < n; ++k) {
      struct Conn* c = events[k].data.ptr;
      if (c != NULL) {
        int st = Step(c);
        if (st != 0) {
          CloseConn(epfd, c, st > 0);
          --live;
        }
        continue;
      }
      // The listener: take everything queued.
      while (listening) {
        struct Accepted a;
        int single = config.concurrency == kSingle;
        if (AcceptOne(listener, &a, single) < 0) {
          if (errno == EAGAIN) break;
          fx_die("accept (epoll)");
        }
        ++accepted;
        if (config.count != 0 && accepted >= config.count) {
          listening = 0;
          epoll_ctl(epfd, EPOLL_CTL_DEL, listener, NULL);
        }
        if (!single) {
          Dispatch(a);
          continue;
        }
        CheckNames(a.fd, &a.peer, a.peer_len);
        struct Conn* conn = calloc(1, sizeof(*conn));
        conn->fd = a.fd;
        conn->phase = config.mode == kSource ? kPhaseSource : kPhaseRead;
        conn->hash = FX_FNV_OFFSET;
        struct epoll_event cev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                                  .data.ptr = conn};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, a.fd, &cev) < 0) fx_die("epoll_ctl(conn)");
        ++live;
        int st = Step(conn);
        if (st != 0) {
          CloseConn(epfd, conn, st > 0);
          --live;
        }
      }
    }
  }
  close(epfd);
}

int main(int argc, char** argv) {
  fx_program = "tcp_server";
  signal(SIGPIPE, SIG_IGN);
  ParseArgs(argc, argv);
  totals = mmap(NULL, sizeof(*totals), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (totals == MAP_FAILED) fx_die("mmap");
  int listener = Listen();
  if (config.port_file != NULL) fx_write_port_file(config.port_file, listen_port);

  if (config.use_epoll) {
    RunEpoll(listener);
  } else {
    RunBlocking(listener);
  }
  close(listener);
  for (size_t k = 0; k < thread_count; ++k) pthread_join(threads[k], NULL);
  if (children_running > 0) ReapChildren(1);

  long long errors = atomic_load(&totals->errors);
  printf("server: mode=%s connections=%lld bytes_in=%lld bytes_out=%lld peer_host=%s errors=%lld\n",
         ModeName(config.mode), (long long)atomic_load(&totals->connections),
         (long long)atomic_load(&totals->bytes_in), (long long)atomic_load(&totals->bytes_out),
         atomic_load(&totals->peer_host_differs) ? "(several)"
         : atomic_load(&totals->peer_host_set)   ? totals->peer_host
                                                 : "-",
         errors);
  return errors == 0 ? 0 : 3;
}
