// soak_peer: the C server and client of the chaos soak (tests/soak/soak.py); protocol in
// soak_proto.h.
//
//   soak_peer server --name NAME --port-file PATH [--port P] [--nofile N] [--sabotage N]
//   soak_peer client --target NAME=HOST:PORT [--target ...] --conns N [--threads T] [--seed S]
//                    [--max-bytes B] [--max-hold-ms H] [--hang-s S] [--nofile N]
//
// The server serves each connection on a thread of its own until killed; a connection that makes
// no progress for 60 s is reported as "stall nonce=HEX" on stdout (the soak counts it as hung).
// accept() failing with EMFILE/ENFILE (--nofile) is retried after 20 ms, as real servers do.
//
// The client runs --conns exchanges on --threads threads, each with a random target, sizes (log-
// uniform up to --max-bytes), idle hold before its request and server pause, and prints one line
// per exchange:
//   conn nonce=HEX target=NAME t0=S t1=S res=RES stage=STAGE errno=NAME cdom=D sdom=D sent=N
//        recvd=N want=N
// RES: ok; fail (an error TCP gives: reset, refused, EOF before the end "errno=EOF", ...); corrupt
// (a byte differed, the server saw a corrupt request, or data after the reply); mispair (the reply
// names another nonce or server); badcall (an errno TCP would not give here). t0/t1 are
// CLOCK_MONOTONIC seconds, the soak's clock, so it can tell whether a fault it injected explains
// a failure. A watchdog prints "hung nonce=HEX stage=STAGE" when one call takes longer than
// --hang-s (every wait is bounded by it: a call still blocked past it is held somewhere).
#include "soak_proto.h"  // first: fixture.h defines _GNU_SOURCE

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/resource.h>

#define MAX_TARGETS 16
#define MAX_THREADS 64
#define CHUNK 65536

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

__attribute__((format(printf, 1, 2))) static void Say(const char* fmt, ...) {
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if (n >= (int)sizeof(line)) n = sizeof(line) - 1;
  pthread_mutex_lock(&out_lock);
  (void)fx_write_all(1, line, (size_t)n);
  pthread_mutex_unlock(&out_lock);
}

static void SetNofile(long long n) {
  if (n <= 0) return;
  struct rlimit r = {(rlim_t)n, (rlim_t)n};
  if (setrlimit(RLIMIT_NOFILE, &r) != 0) fx_die("setrlimit(NOFILE, %lld)", n);
}

static void SleepMs(long ms) {
  struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&t, &t) != 0 && errno == EINTR) {
  }
}

// ---- Server ---------------------------------------------------------------------------------

static char server_name[SOAK_NAME_LEN + 1];
// --sabotage N: every Nth reply is wrong on purpose, in turn: one reply byte flipped, another
// nonce echoed, half the reply followed by a clean close, or a reply 15 s late. Only for soak.py
// --self-check, which proves that the soak's verdicts can fail.
static long long sabotage;
static atomic_llong replies;
static const double kServerStallS = 60.0;

struct ServedConn {
  int fd;
  int domain;
};

// Reads the request, checking every byte; returns its status and counts the bytes in *got.
static int ReadRequest(int fd, const uint8_t* header, uint64_t req_len, double deadline,
                       size_t* got, int* failed) {
  struct SoakStream s;
  soak_stream_init(&s, soak_get64(header + 8));
  uint8_t buf[CHUNK];
  int status = kSoakOk;
  while (*got < req_len) {
    size_t want = req_len - *got < sizeof(buf) ? (size_t)(req_len - *got) : sizeof(buf);
    ssize_t n = soak_recv_some(fd, buf, want, deadline);
    if (n <= 0) {
      *failed = n < 0 ? errno : -1;
      return status;
    }
    if (soak_mismatch(&s, *got, buf, (size_t)n) >= 0) status = kSoakCorrupt;
    *got += (size_t)n;
  }
  return status;
}

static int SendReply(int fd, const uint8_t* req, int status, uint64_t got, int domain,
                     double deadline) {
  uint64_t nonce = soak_get64(req + 8), reply_len = soak_get64(req + 24);
  long long k = atomic_fetch_add(&replies, 1) + 1;
  int wrong = sabotage > 0 && k % sabotage == 0 ? (int)(k / sabotage % 4) + 1 : 0;
  if (wrong == 1 && reply_len == 0) wrong = 2;
  if (wrong == 4) SleepMs(15000);  // past the client's --hang-s in the self-check
  uint32_t pause_ms = soak_get32(req + 4);
  uint8_t h[SOAK_REPLY_HEADER] = {0};
  memcpy(h, "SSKR", 4);
  soak_put32(h + 4, (uint32_t)status);
  memcpy(h + 8, server_name, strlen(server_name));
  soak_put64(h + 24, wrong == 2 ? nonce + 1 : nonce);
  soak_put64(h + 32, got);
  soak_put64(h + 40, reply_len);
  soak_put32(h + 48, (uint32_t)domain);
  if (soak_send_all(fd, h, sizeof(h), deadline) != 0) return -1;
  struct SoakStream s;
  soak_stream_init(&s, nonce ^ SOAK_REPLY_SALT);
  uint8_t buf[CHUNK];
  for (uint64_t off = 0; off < reply_len;) {
    if (pause_ms > 0 && off >= reply_len / 2) {
      SleepMs(pause_ms);
      pause_ms = 0;
    }
    size_t n = reply_len - off < sizeof(buf) ? (size_t)(reply_len - off) : sizeof(buf);
    if (wrong == 3 && off + n >= reply_len / 2) return 1;  // a clean close, bytes missing
    soak_fill(&s, off, buf, n);
    if (wrong == 1 && off == 0) buf[n / 2] ^= 0x20;
    if (soak_send_all(fd, buf, n, deadline) != 0) return -1;
    off += n;
  }
  return 0;
}

static void* Serve(void* arg) {
  struct ServedConn c = *(struct ServedConn*)arg;
  free(arg);
  fx_set_nonblocking(c.fd, 1);
  double deadline = fx_now() + kServerStallS;
  uint8_t req[SOAK_REQ_HEADER];
  size_t got = 0;
  uint64_t nonce = 0;
  int r = soak_recv_full(c.fd, req, sizeof(req), deadline, &got);
  if (r == 0 && memcmp(req, "SSKQ", 4) == 0) {
    nonce = soak_get64(req + 8);
    size_t body = 0;
    int failed = 0;
    int status = ReadRequest(c.fd, req, soak_get64(req + 16), deadline, &body, &failed);
    if (failed == 0) {
      int sent = SendReply(c.fd, req, status, body, c.domain, deadline);
      if (sent == 0) {
        // The client half-closes once it has everything; wait for that EOF, then close.
        uint8_t tail[256];
        ssize_t n;
        while ((n = soak_recv_some(c.fd, tail, sizeof(tail), deadline)) > 0) {
        }
        if (n < 0 && errno == ETIMEDOUT) failed = ETIMEDOUT;
      } else if (sent < 0 && errno == ETIMEDOUT) {
        failed = ETIMEDOUT;
      }
    } else if (failed == ETIMEDOUT) {
      failed = ETIMEDOUT;
    }
    if (failed == ETIMEDOUT)
      Say("stall nonce=%016llx server=%s\n", (unsigned long long)nonce, server_name);
  } else if (r < 0 && errno == ETIMEDOUT) {
    Say("stall nonce=- server=%s\n", server_name);
  }
  close(c.fd);
  return NULL;
}

static int Server(const char* port_file, int port) {
  if (server_name[0] == '\0' || port_file == NULL) fx_die("server needs --name and --port-file");
  signal(SIGPIPE, SIG_IGN);
  int l = socket(AF_INET, SOCK_STREAM, 0);
  if (l < 0) fx_die("socket");
  int one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  struct sockaddr_storage ss;
  socklen_t len = fx_make_addr("127.0.0.1", port, &ss);
  if (bind(l, (struct sockaddr*)&ss, len) != 0) fx_die("bind");
  if (listen(l, 4096) != 0) fx_die("listen");
  len = sizeof(ss);
  if (getsockname(l, (struct sockaddr*)&ss, &len) != 0) fx_die("getsockname");
  fx_write_port_file(port_file, fx_port_of(&ss));
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  for (;;) {
    int fd = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) SleepMs(20);
      if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE ||
          errno == ENOBUFS || errno == ENOMEM || errno == EPROTO)
        continue;
      fx_die("accept");
    }
    struct ServedConn* c = malloc(sizeof(*c));
    c->fd = fd;
    c->domain = soak_domain(fd);
    pthread_t t;
    while (pthread_create(&t, &attr, Serve, c) != 0) SleepMs(20);
  }
}

// ---- Client ---------------------------------------------------------------------------------

struct Target {
  char name[SOAK_NAME_LEN + 1];
  struct sockaddr_storage addr;
  socklen_t len;
};

static struct Target targets[MAX_TARGETS];
static int n_targets;
static long long conns = 1, n_threads = 1, seed = 1, max_bytes = 1 << 20, max_hold_ms = 500;
static double hang_s = 30;

// What a thread is doing, for the watchdog.
struct Activity {
  _Atomic double since;  // 0: between calls
  _Atomic uint64_t nonce;
  const char* _Atomic stage;
  atomic_int reported;
};
static struct Activity activity[MAX_THREADS];

static uint64_t Mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Log-uniform in [0, max]: many small exchanges, some large.
static uint64_t SizeOf(uint64_t r, long long max) {
  if (max <= 0) return 0;
  double bits = (double)(r % 10000) / 10000.0 * (63 - __builtin_clzll((uint64_t)max) + 1);
  uint64_t v = (uint64_t)((double)(1ull << (int)bits) * (1.0 + (double)((r >> 20) % 1000) / 1000));
  return v > (uint64_t)max ? (uint64_t)max : (r % 7 == 0 ? 0 : v);
}

struct Exchange {
  int thread;
  const struct Target* target;
  uint64_t nonce, req_len, reply_len;
  uint32_t hold_ms, pause_ms;
  double t0;
  const char* res;
  const char* stage;
  int err;  // errno, -1 for EOF, 0 for none
  int cdom, sdom;
  uint64_t sent, recvd, want;
};

static void Stage(struct Exchange* x, const char* stage) {
  struct Activity* a = &activity[x->thread];
  x->stage = stage;
  a->stage = stage;
  a->since = fx_now();
}

// An errno a TCP client can see from these calls when its peer, or the network, fails it.
static int TcpLikeErrno(int e) {
  return e == ECONNRESET || e == EPIPE || e == ECONNREFUSED || e == ETIMEDOUT ||
         e == ECONNABORTED || e == EMFILE || e == ENFILE || e == ENOBUFS || e == EADDRNOTAVAIL ||
         e == EHOSTUNREACH || e == ENETUNREACH || e == -1;
}

static void Failed(struct Exchange* x, int err) {
  x->err = err;
  x->res = TcpLikeErrno(err) ? "fail" : "badcall";
}

static void CheckReply(struct Exchange* x, int fd, double deadline) {
  uint8_t h[SOAK_REPLY_HEADER];
  size_t got = 0;
  Stage(x, "reply-header");
  int r = soak_recv_full(fd, h, sizeof(h), deadline, &got);
  x->recvd += got;
  if (r != 0) return Failed(x, r < 0 ? errno : -1);
  char name[SOAK_NAME_LEN + 1] = {0};
  memcpy(name, h + 8, SOAK_NAME_LEN);
  if (memcmp(h, "SSKR", 4) != 0) {
    x->res = "corrupt";
    return;
  }
  x->sdom = (int)soak_get32(h + 48);
  if (soak_get64(h + 24) != x->nonce || strcmp(name, x->target->name) != 0) {
    x->res = "mispair";
    return;
  }
  if (soak_get32(h + 4) != kSoakOk || soak_get64(h + 32) != x->req_len ||
      soak_get64(h + 40) != x->reply_len) {
    x->res = "corrupt";
    return;
  }
  struct SoakStream s;
  soak_stream_init(&s, x->nonce ^ SOAK_REPLY_SALT);
  uint8_t buf[CHUNK];
  Stage(x, "reply");
  for (uint64_t off = 0; off < x->reply_len;) {
    size_t want = x->reply_len - off < sizeof(buf) ? (size_t)(x->reply_len - off) : sizeof(buf);
    ssize_t n = soak_recv_some(fd, buf, want, deadline);
    if (n <= 0) return Failed(x, n < 0 ? errno : -1);
    if (soak_mismatch(&s, off, buf, (size_t)n) >= 0) {
      x->res = "corrupt";
      return;
    }
    off += (uint64_t)n;
    x->recvd += (uint64_t)n;
  }
  // Nothing may follow the reply: half-close, then EOF.
  Stage(x, "shutdown");
  if (shutdown(fd, SHUT_WR) != 0) return Failed(x, errno);
  Stage(x, "eof");
  ssize_t n = soak_recv_some(fd, buf, sizeof(buf), deadline);
  if (n > 0) {
    x->res = "corrupt";
    return;
  }
  if (n < 0) return Failed(x, errno);
  x->res = "ok";
}

static void Converse(struct Exchange* x, int fd) {
  double deadline = fx_now() + hang_s;
  if (x->hold_ms > 0) {
    Stage(x, "hold");
    SleepMs(x->hold_ms);
  }
  uint8_t buf[CHUNK];
  memcpy(buf, "SSKQ", 4);
  soak_put32(buf + 4, x->pause_ms);
  soak_put64(buf + 8, x->nonce);
  soak_put64(buf + 16, x->req_len);
  soak_put64(buf + 24, x->reply_len);
  Stage(x, "request");
  if (soak_send_all(fd, buf, SOAK_REQ_HEADER, deadline) != 0) return Failed(x, errno);
  x->sent += SOAK_REQ_HEADER;
  struct SoakStream s;
  soak_stream_init(&s, x->nonce);
  for (uint64_t off = 0; off < x->req_len;) {
    size_t n = x->req_len - off < sizeof(buf) ? (size_t)(x->req_len - off) : sizeof(buf);
    soak_fill(&s, off, buf, n);
    if (soak_send_all(fd, buf, n, deadline) != 0) return Failed(x, errno);
    off += n;
    x->sent += n;
  }
  CheckReply(x, fd, deadline);
}

static void Exchange(struct Exchange* x) {
  Stage(x, "socket");
  int fd = socket(x->target->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Failed(x, errno);
  Stage(x, "connect");
  int r;
  do {
    r = connect(fd, (const struct sockaddr*)&x->target->addr, x->target->len);
  } while (r != 0 && errno == EINTR);
  if (r != 0) {
    Failed(x, errno);
  } else {
    x->cdom = soak_domain(fd);
    fx_set_nonblocking(fd, 1);
    Converse(x, fd);
  }
  close(fd);
}

static void Report(const struct Exchange* x) {
  char err[24];
  if (x->err == -1)
    snprintf(err, sizeof(err), "EOF");
  else if (x->err == 0)
    snprintf(err, sizeof(err), "-");
  else
    snprintf(err, sizeof(err), "%s", fx_errno_name(x->err));
  Say("conn nonce=%016llx target=%s t0=%.6f t1=%.6f res=%s stage=%s errno=%s cdom=%s sdom=%s "
      "sent=%llu recvd=%llu want=%llu\n",
      (unsigned long long)x->nonce, x->target->name, x->t0, fx_now(), x->res, x->stage, err,
      soak_domain_name(x->cdom), soak_domain_name(x->sdom), (unsigned long long)x->sent,
      (unsigned long long)x->recvd, (unsigned long long)x->want);
}

static void* ClientThread(void* arg) {
  int t = (int)(intptr_t)arg;
  for (long long i = t; i < conns; i += n_threads) {
    uint64_t r = Mix((uint64_t)seed * 1000003u + (uint64_t)i);
    struct Exchange x = {0};
    x.thread = t;
    x.target = &targets[Mix(r) % (uint64_t)n_targets];
    x.nonce = Mix(r ^ 0x1234);
    x.req_len = SizeOf(Mix(r + 1), max_bytes);
    x.reply_len = SizeOf(Mix(r + 2), max_bytes);
    x.hold_ms = Mix(r + 3) % 3 == 0 ? (uint32_t)(Mix(r + 4) % (uint64_t)(max_hold_ms + 1)) : 0;
    x.pause_ms = Mix(r + 5) % 3 == 0 ? (uint32_t)(Mix(r + 6) % (uint64_t)(max_hold_ms + 1)) : 0;
    x.want = SOAK_REPLY_HEADER + x.reply_len;
    x.res = "?";
    activity[t].nonce = x.nonce;
    activity[t].reported = 0;
    x.t0 = fx_now();
    Exchange(&x);
    activity[t].since = 0;
    Report(&x);
  }
  return NULL;
}

static void* Watchdog(void* arg) {
  (void)arg;
  for (;;) {
    SleepMs(200);
    double now = fx_now();
    for (int t = 0; t < n_threads; ++t) {
      struct Activity* a = &activity[t];
      double since = a->since;
      // Every wait is bounded by hang_s; 5 s more is scheduling slack on a loaded machine.
      if (since > 0 && now - since > hang_s + 5 && !a->reported) {
        a->reported = 1;
        Say("hung nonce=%016llx stage=%s\n", (unsigned long long)a->nonce, a->stage);
      }
    }
  }
  return NULL;
}

static void AddTarget(const char* spec) {
  if (n_targets == MAX_TARGETS) fx_die("too many targets");
  struct Target* t = &targets[n_targets++];
  const char* eq = strchr(spec, '=');
  const char* colon = strrchr(spec, ':');
  if (eq == NULL || colon == NULL || eq - spec > SOAK_NAME_LEN) {
    errno = EINVAL;
    fx_die("bad target %s", spec);
  }
  memcpy(t->name, spec, (size_t)(eq - spec));
  char host[64] = {0};
  snprintf(host, sizeof(host), "%.*s", (int)(colon - eq - 1), eq + 1);
  t->len = fx_make_addr(host, atoi(colon + 1), &t->addr);
  if (t->len == 0) {
    errno = EINVAL;
    fx_die("bad target %s", spec);
  }
}

static int Client(void) {
  if (n_targets == 0) fx_die("client needs --target");
  if (n_threads < 1 || n_threads > MAX_THREADS) fx_die("bad --threads");
  signal(SIGPIPE, SIG_IGN);
  pthread_t dog;
  pthread_create(&dog, NULL, Watchdog, NULL);
  pthread_t threads[MAX_THREADS];
  for (long long t = 0; t < n_threads; ++t) {
    if (pthread_create(&threads[t], NULL, ClientThread, (void*)(intptr_t)t) != 0)
      fx_die("pthread_create");
  }
  for (long long t = 0; t < n_threads; ++t) pthread_join(threads[t], NULL);
  return 0;
}

int main(int argc, char** argv) {
  fx_program = "soak_peer";
  if (argc < 2) fx_die("usage: soak_peer server|client OPTIONS");
  const char* port_file = NULL;
  int port = 0;
  for (int i = 2; i + 1 < argc; i += 2) {
    const char *opt = argv[i], *val = argv[i + 1];
    if (strcmp(opt, "--name") == 0)
      snprintf(server_name, sizeof(server_name), "%s", val);
    else if (strcmp(opt, "--port-file") == 0)
      port_file = val;
    else if (strcmp(opt, "--port") == 0)
      port = (int)fx_parse_count(opt, val);
    else if (strcmp(opt, "--nofile") == 0)
      SetNofile(fx_parse_count(opt, val));
    else if (strcmp(opt, "--target") == 0)
      AddTarget(val);
    else if (strcmp(opt, "--conns") == 0)
      conns = fx_parse_count(opt, val);
    else if (strcmp(opt, "--threads") == 0)
      n_threads = fx_parse_count(opt, val);
    else if (strcmp(opt, "--seed") == 0)
      seed = fx_parse_count(opt, val);
    else if (strcmp(opt, "--max-bytes") == 0)
      max_bytes = fx_parse_count(opt, val);
    else if (strcmp(opt, "--max-hold-ms") == 0)
      max_hold_ms = fx_parse_count(opt, val);
    else if (strcmp(opt, "--sabotage") == 0)
      sabotage = fx_parse_count(opt, val);
    else if (strcmp(opt, "--hang-s") == 0)
      hang_s = (double)fx_parse_count(opt, val);
    else {
      errno = EINVAL;
      fx_die("unknown option %s", opt);
    }
  }
  if (strcmp(argv[1], "server") == 0) return Server(port_file, port);
  if (strcmp(argv[1], "client") == 0) return Client();
  errno = EINVAL;
  fx_die("unknown role %s", argv[1]);
}
