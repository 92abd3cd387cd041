// switch_peer: a static TCP client and server for Slipstream's switch tests.
//
//   switch_peer server [--family ipv4|ipv6|v4mapped] [--bind HOST] [--port P] [--port-file F]
//                      [--listen-fd FD] [--backlog N] [--count N] [--threads]
//                      [--mode echo|sink|source|rr] [--bytes N] [--seed S]
//                      [--hold] [--hold-exit] [--log] [--inheritable]
//   switch_peer client [--host H] (--port P | --port-file F) [--retry SECONDS] [--count N]
//                      [--parallel P] [--nonblock-connect] [--mode echo|sink|source|rr]
//                      [--bytes N] [--chunk C] [--rounds R] [--seed S] [--duration SECONDS]
//                      [--raw-connect]
//                      [--wait-connect] [--wait-retry] [--hold] [--hold-mid] [--hold-exit] [--log]
//                      [--thread] [--pause-at N] [--timeout SECONDS]
//
// The same protocol is spoken by tests/programs/go/switchpeer and tests/programs/py/switch_peer.py,
// so any client pairs with any server. Connection c of a client uses the stream of seed S + c:
//  - echo: the client sends N bytes in chunks of C and compares every chunk the server sends back;
//    then shutdown(SHUT_WR) and the server's EOF;
//  - sink: the client sends N bytes, shutdown(SHUT_WR), then reads the reply "<count> <crc32>\n";
//  - source: the server speaks first: N bytes of the stream of its --seed, then close; the client
//    checks count and CRC-32 against the stream of its own --seed;
//  - rr: R request/response round trips of 16 bytes ("req %011d\n" -> "rsp %011d\n"), TCP_NODELAY
//    set, then half-close and EOF.
// The stream: block k (4096 bytes) of stream s is the alphabet of s rotated left by (1031 k mod
// 4096), each byte XORed with (k >> 12) & 0xff; alphabet byte j is the low byte of
// splitmix64(s * 4096 + j). Checksums are CRC-32 (IEEE, as zlib).
//
// Gates make the program wait for one line on stdin (read byte by byte, so processes sharing stdin
// take one line each); each prints a line first:
//   --wait-connect  "waiting pid=P conn=C" before each round of connects
//   --wait-retry    "refused pid=P" after each refused connect (with --retry), before the retry
//   --hold          "ready client|server pid=P fd=F local=ADDR peer=ADDR" per connection, then one
//                   gate before the transfers (a server holds each connection)
//   --hold-mid      "midway pid=P conn=C" halfway through each transfer (client)
//   --pause-at N    "paused pid=P conn=N" once N connections are finished (client)
//   --hold-exit     "done pid=P" before exiting
//   --inheritable   accept4 without SOCK_CLOEXEC (server)
//   --tcp-options   on each connection, before any gate: TCP_NODELAY, SO_KEEPALIVE and the three
//                   keepalive timers set, then TCP_NODELAY, TCP_KEEPIDLE, SO_DOMAIN and
//                   SO_PROTOCOL read back and checked (an error otherwise)
// --thread makes the client's connections from a second thread (the main thread only waits).
// --log prints one line per finished connection: "conn local=ADDR peer=ADDR seed=S bytes_out=N
// crc_out=X bytes_in=N crc_in=X" (client) or "conn local=ADDR peer=ADDR bytes_in=N crc_in=X
// bytes_out=N" (server). Summary lines, exit 0 when errors=0, else 1 (4 on --timeout):
//   client: mode=echo connections=N bytes_out=X bytes_in=Y errors=0
//   server: mode=echo connections=N bytes_in=X bytes_out=Y errors=0
#include "fixture.h"  // first: it defines _GNU_SOURCE

#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/syscall.h>

enum Mode { kEcho, kSink, kSource, kRoundTrip };

static struct {
  int is_server;
  const char* family;
  const char* host;
  int port;
  const char* port_file;
  int listen_fd;
  int backlog;
  long long count;
  int threads;
  int client_thread;
  enum Mode mode;
  long long bytes;
  size_t chunk;
  long long rounds;
  long long seed;
  double retry_s;
  int parallel;
  int nonblock_connect;
  int raw_connect;
  double duration_s;
  int wait_connect;
  int wait_retry;
  int hold;
  int hold_mid;
  int hold_exit;
  int inheritable;
  int tcp_options;
  long long pause_at;
  int log;
  int timeout_s;
} config = {.family = "ipv4",
            .listen_fd = -1,
            .backlog = 4096,
            .count = 1,
            .mode = kEcho,
            .bytes = 65536,
            .chunk = 65536,
            .rounds = 100,
            .parallel = 1,
            .timeout_s = 120};

static atomic_llong connections_ok, bytes_in_total, bytes_out_total, errors;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

// ---- Output, gates, addresses ---------------------------------------------------------------

__attribute__((format(printf, 1, 2))) static void Say(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  pthread_mutex_lock(&out_lock);
  vprintf(fmt, ap);
  fflush(stdout);
  pthread_mutex_unlock(&out_lock);
  va_end(ap);
}

// Waits for one line on stdin (byte by byte: never reads past it). EOF counts as a line.
static void Gate(void) {
  char c;
  for (;;) {
    ssize_t n = read(0, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || c == '\n') return;
  }
}

// "127.0.0.1:80", "[::1]:80", "[::ffff:127.0.0.1]:80".
static const char* AddrText(const struct sockaddr_storage* ss, char* buf, size_t len) {
  char host[INET6_ADDRSTRLEN];
  fx_host_text(ss, host, sizeof(host));
  if (ss->ss_family == AF_INET6) {
    snprintf(buf, len, "[%s]:%d", host, fx_port_of(ss));
  } else {
    snprintf(buf, len, "%s:%d", host, fx_port_of(ss));
  }
  return buf;
}

static const char* SockText(int fd, int peer, char* buf, size_t len) {
  struct sockaddr_storage ss;
  socklen_t sl = sizeof(ss);
  int rc = peer ? getpeername(fd, (struct sockaddr*)&ss, &sl)
                : getsockname(fd, (struct sockaddr*)&ss, &sl);
  if (rc < 0) {
    snprintf(buf, len, "error-%s", fx_errno_name(errno));
    return buf;
  }
  return AddrText(&ss, buf, len);
}

static void Report(const char* who, const char* what, int err) {
  fprintf(stderr, "switch_peer: %s: %s%s%s\n", who, what, err ? ": " : "",
          err ? fx_errno_name(err) : "");
  atomic_fetch_add(&errors, 1);
}

// ---- The stream and its checksum ------------------------------------------------------------

static uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

struct Stream {
  uint64_t seed;
  uint8_t alphabet[4096];
};

static void StreamInit(struct Stream* s, uint64_t seed) {
  s->seed = seed;
  for (uint64_t j = 0; j < 4096; ++j) s->alphabet[j] = (uint8_t)SplitMix64(seed * 4096 + j);
}

// Fills `buf` with bytes [offset, offset + len) of the stream.
static void StreamFill(const struct Stream* s, uint64_t offset, uint8_t* buf, size_t len) {
  for (size_t k = 0; k < len;) {
    uint64_t pos = offset + k;
    uint64_t block = pos >> 12;
    size_t in_block = (size_t)(pos & 4095);
    size_t n = 4096 - in_block;
    if (n > len - k) n = len - k;
    size_t start = (size_t)((in_block + block * 1031) & 4095);
    uint8_t x = (uint8_t)((block >> 12) & 0xff);
    for (size_t i = 0; i < n; ++i) buf[k + i] = s->alphabet[(start + i) & 4095] ^ x;
    k += n;
  }
}

static uint32_t crc_table[256];

static void CrcInit(void) {
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    crc_table[i] = c;
  }
}

// Incremental CRC-32: start from 0, as zlib.crc32.
static uint32_t Crc32(uint32_t crc, const uint8_t* p, size_t n) {
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = crc_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

static uint32_t StreamCrc(uint64_t seed, long long len) {
  struct Stream s;
  StreamInit(&s, seed);
  uint8_t buf[65536];
  uint32_t crc = 0;
  for (long long off = 0; off < len;) {
    size_t n = len - off < (long long)sizeof(buf) ? (size_t)(len - off) : sizeof(buf);
    StreamFill(&s, (uint64_t)off, buf, n);
    crc = Crc32(crc, buf, n);
    off += (long long)n;
  }
  return crc;
}

// ---- Arguments -------------------------------------------------------------------------------

static void Usage(void) {
  fprintf(stderr,
          "usage: switch_peer server|client [options] (see tests/programs/c/switch_peer.c)\n");
  exit(2);
}

static enum Mode ParseMode(const char* v) {
  if (strcmp(v, "echo") == 0) return kEcho;
  if (strcmp(v, "sink") == 0) return kSink;
  if (strcmp(v, "source") == 0) return kSource;
  if (strcmp(v, "rr") == 0) return kRoundTrip;
  Usage();
  return kEcho;
}

static const char* ModeName(enum Mode m) {
  static const char* names[] = {"echo", "sink", "source", "rr"};
  return names[m];
}

static void ParseArgs(int argc, char** argv) {
  if (argc < 2) Usage();
  if (strcmp(argv[1], "server") == 0) {
    config.is_server = 1;
  } else if (strcmp(argv[1], "client") != 0) {
    Usage();
  }
  for (int i = 2; i < argc; ++i) {
    const char* opt = argv[i];
    int* flag = strcmp(opt, "--threads") == 0            ? &config.threads
                : strcmp(opt, "--nonblock-connect") == 0 ? &config.nonblock_connect
                : strcmp(opt, "--raw-connect") == 0      ? &config.raw_connect
                : strcmp(opt, "--wait-connect") == 0     ? &config.wait_connect
                : strcmp(opt, "--wait-retry") == 0       ? &config.wait_retry
                : strcmp(opt, "--hold") == 0             ? &config.hold
                : strcmp(opt, "--hold-mid") == 0         ? &config.hold_mid
                : strcmp(opt, "--hold-exit") == 0        ? &config.hold_exit
                : strcmp(opt, "--log") == 0              ? &config.log
                : strcmp(opt, "--thread") == 0           ? &config.client_thread
                : strcmp(opt, "--inheritable") == 0      ? &config.inheritable
                : strcmp(opt, "--tcp-options") == 0      ? &config.tcp_options
                                                         : NULL;
    if (flag != NULL) {
      *flag = 1;
      continue;
    }
    if (i + 1 >= argc) Usage();
    const char* val = argv[++i];
    if (strcmp(opt, "--family") == 0) {
      if (strcmp(val, "ipv4") && strcmp(val, "ipv6") && strcmp(val, "v4mapped")) Usage();
      config.family = val;
    } else if (strcmp(opt, "--bind") == 0 || strcmp(opt, "--host") == 0) {
      config.host = val;
    } else if (strcmp(opt, "--port") == 0) {
      config.port = (int)fx_parse_count(opt, val);
    } else if (strcmp(opt, "--port-file") == 0) {
      config.port_file = val;
    } else if (strcmp(opt, "--listen-fd") == 0) {
      config.listen_fd = (int)fx_parse_count(opt, val);
    } else if (strcmp(opt, "--backlog") == 0) {
      config.backlog = (int)fx_parse_count(opt, val);
    } else if (strcmp(opt, "--count") == 0) {
      config.count = fx_parse_count(opt, val);
    } else if (strcmp(opt, "--mode") == 0) {
      config.mode = ParseMode(val);
    } else if (strcmp(opt, "--bytes") == 0) {
      config.bytes = fx_parse_count(opt, val);
    } else if (strcmp(opt, "--chunk") == 0) {
      config.chunk = (size_t)fx_parse_count(opt, val);
      if (config.chunk == 0 || config.chunk > (1 << 20)) Usage();
    } else if (strcmp(opt, "--rounds") == 0) {
      config.rounds = fx_parse_count(opt, val);
    } else if (strcmp(opt, "--seed") == 0) {
      config.seed = fx_parse_count(opt, val);
    } else if (strcmp(opt, "--retry") == 0) {
      config.retry_s = (double)fx_parse_count(opt, val);
    } else if (strcmp(opt, "--parallel") == 0) {
      config.parallel = (int)fx_parse_count(opt, val);
    } else if (strcmp(opt, "--pause-at") == 0) {
      config.pause_at = fx_parse_count(opt, val);
    } else if (strcmp(opt, "--duration") == 0) {
      config.duration_s = (double)fx_parse_count(opt, val);
    } else if (strcmp(opt, "--timeout") == 0) {
      config.timeout_s = (int)fx_parse_count(opt, val);
    } else {
      Usage();
    }
  }
  if (config.parallel < 1) Usage();
  if (config.is_server && config.hold && config.threads) Usage();  // one stdin, one holder
}

// ---- Client ---------------------------------------------------------------------------------

static struct sockaddr_storage dest;
static socklen_t dest_len;

// Connects one socket (retrying refused connects until --retry runs out); returns it or -1.
// --tcp-options: what servers and clients set on each connection, read back as TCP answers.
static void TcpOptions(int fd, const char* side) {
  static const struct {
    int level, name, value;
  } sets[] = {{IPPROTO_TCP, TCP_NODELAY, 1},
              {SOL_SOCKET, SO_KEEPALIVE, 1},
              {IPPROTO_TCP, TCP_KEEPIDLE, 60},
              {IPPROTO_TCP, TCP_KEEPINTVL, 10},
              {IPPROTO_TCP, TCP_KEEPCNT, 5}};
  for (size_t i = 0; i < sizeof(sets) / sizeof(sets[0]); ++i) {
    if (setsockopt(fd, sets[i].level, sets[i].name, &sets[i].value, sizeof(int)) < 0) {
      Report(side, "setsockopt", errno);
    }
  }
  struct sockaddr_storage name;
  socklen_t name_len = sizeof(name);
  int family = getsockname(fd, (struct sockaddr*)&name, &name_len) == 0 ? name.ss_family : -1;
  const struct {
    int level, name, want;
  } gets[] = {{IPPROTO_TCP, TCP_NODELAY, 1},
              {IPPROTO_TCP, TCP_KEEPIDLE, 60},
              {SOL_SOCKET, SO_DOMAIN, family},
              {SOL_SOCKET, SO_PROTOCOL, IPPROTO_TCP}};
  for (size_t i = 0; i < sizeof(gets) / sizeof(gets[0]); ++i) {
    int v = -1;
    socklen_t len = sizeof(v);
    if (getsockopt(fd, gets[i].level, gets[i].name, &v, &len) < 0) {
      Report(side, "getsockopt", errno);
    } else if (v != gets[i].want || len != sizeof(v)) {
      fprintf(stderr, "switch_peer: option %d read back %d, not %d\n", gets[i].name, v,
              gets[i].want);
      Report(side, "an option read back wrong", 0);
    }
  }
}

static int Connect(long long id) {
  double deadline = fx_now() + config.retry_s;
  for (;;) {
    int fd = socket(dest.ss_family,
                    SOCK_STREAM | SOCK_CLOEXEC | (config.nonblock_connect ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0) return Report("socket", "socket", errno), -1;
    int rc;
    do {
      // --raw-connect: the system call itself, past any LD_PRELOAD interposer (hybrid mode).
      rc = config.raw_connect ? (int)syscall(SYS_connect, fd, (struct sockaddr*)&dest, dest_len)
                              : connect(fd, (struct sockaddr*)&dest, dest_len);
    } while (rc < 0 && errno == EINTR && !config.nonblock_connect);
    if (rc < 0 && config.nonblock_connect && errno == EINPROGRESS) {
      struct pollfd p = {fd, POLLOUT, 0};
      int n;
      do {
        n = poll(&p, 1, 30000);
      } while (n < 0 && errno == EINTR);
      int err = n == 1 ? 0 : ETIMEDOUT;
      socklen_t len = sizeof(err);
      if (n == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
      rc = err == 0 ? 0 : -1;
      errno = err;
    }
    if (rc == 0) {
      if (config.nonblock_connect && fx_set_nonblocking(fd, 0) < 0) {
        Report("connect", "clear O_NONBLOCK", errno);
        close(fd);
        return -1;
      }
      return fd;
    }
    int err = errno;
    close(fd);
    if (err == ECONNREFUSED && fx_now() < deadline) {
      if (config.wait_retry) {
        Say("refused pid=%d\n", (int)getpid());
        Gate();
      } else {
        struct timespec pause = {0, 10 * 1000 * 1000};
        nanosleep(&pause, NULL);
      }
      continue;
    }
    char who[32];
    snprintf(who, sizeof(who), "conn %lld", id);
    Report(who, "connect", err);
    return -1;
  }
}

struct Tally {
  long long out, in;
  uint32_t crc_out, crc_in;
};

static void Midway(long long id) {
  if (!config.hold_mid) return;
  Say("midway pid=%d conn=%lld\n", (int)getpid(), id);
  Gate();
}

static int ClientEcho(int fd, long long id, const struct Stream* s, struct Tally* t) {
  uint8_t* out = malloc(config.chunk);
  uint8_t* in = malloc(config.chunk);
  int rc = 0;
  int mid_done = 0;
  for (long long off = 0; off < config.bytes && rc == 0;) {
    if (!mid_done && off >= config.bytes / 2 && off > 0) {
      Midway(id);
      mid_done = 1;
    }
    size_t n =
        (size_t)(config.bytes - off) < config.chunk ? (size_t)(config.bytes - off) : config.chunk;
    StreamFill(s, (uint64_t)off, out, n);
    if (fx_write_all(fd, out, n) < 0) {
      rc = errno;
      Report("echo", "write", rc);
      break;
    }
    t->out += (long long)n;
    t->crc_out = Crc32(t->crc_out, out, n);
    ssize_t got = fx_read_full(fd, in, n);
    if (got < 0) {
      rc = errno;
      Report("echo", "read", rc);
      break;
    }
    t->in += got;
    t->crc_in = Crc32(t->crc_in, in, (size_t)got);
    if ((size_t)got != n || memcmp(in, out, n) != 0) {
      rc = -1;
      Report("echo", "echoed bytes differ", 0);
    }
    off += (long long)n;
  }
  if (rc == 0) {
    if (shutdown(fd, SHUT_WR) < 0) {
      rc = errno;
      Report("echo", "shutdown", rc);
    } else {
      char extra;
      ssize_t n = fx_read_full(fd, &extra, 1);
      if (n != 0) {
        rc = -1;
        Report("echo", n < 0 ? "read after half-close" : "bytes after half-close",
               n < 0 ? errno : 0);
      }
    }
  }
  free(out);
  free(in);
  return rc;
}

static int ClientSink(int fd, long long id, const struct Stream* s, struct Tally* t) {
  uint8_t* out = malloc(config.chunk);
  int mid_done = 0;
  for (long long off = 0; off < config.bytes;) {
    if (!mid_done && off >= config.bytes / 2 && off > 0) {
      Midway(id);
      mid_done = 1;
    }
    size_t n =
        (size_t)(config.bytes - off) < config.chunk ? (size_t)(config.bytes - off) : config.chunk;
    StreamFill(s, (uint64_t)off, out, n);
    if (fx_write_all(fd, out, n) < 0) {
      free(out);
      return Report("sink", "write", errno), -1;
    }
    t->out += (long long)n;
    t->crc_out = Crc32(t->crc_out, out, n);
    off += (long long)n;
  }
  free(out);
  if (shutdown(fd, SHUT_WR) < 0) return Report("sink", "shutdown", errno), -1;
  char reply[128];
  ssize_t got = fx_read_full(fd, reply, sizeof(reply) - 1);
  if (got < 0) return Report("sink", "read reply", errno), -1;
  reply[got] = '\0';
  t->in += got;
  t->crc_in = Crc32(t->crc_in, (const uint8_t*)reply, (size_t)got);
  char expected[128];
  snprintf(expected, sizeof(expected), "%lld %08x\n", t->out, t->crc_out);
  if (strcmp(reply, expected) != 0) {
    fprintf(stderr, "switch_peer: sink: reply '%s', expected '%s'\n", reply, expected);
    return Report("sink", "reply differs", 0), -1;
  }
  return 0;
}

static int ClientSource(int fd, long long id, struct Tally* t) {
  uint8_t buf[65536];
  int mid_done = 0;
  for (;;) {
    if (!mid_done && t->in >= config.bytes / 2 && t->in > 0) {
      Midway(id);
      mid_done = 1;
    }
    size_t want = sizeof(buf);
    if (!mid_done && config.bytes / 2 - t->in > 0 && (long long)want > config.bytes / 2 - t->in)
      want = (size_t)(config.bytes / 2 - t->in);
    ssize_t n = read(fd, buf, want);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Report("source", "read", errno), -1;
    if (n == 0) break;
    t->in += n;
    t->crc_in = Crc32(t->crc_in, buf, (size_t)n);
  }
  if (t->in != config.bytes || t->crc_in != StreamCrc((uint64_t)config.seed, config.bytes)) {
    fprintf(stderr, "switch_peer: source: got %lld bytes, crc %08x\n", t->in, t->crc_in);
    return Report("source", "bytes differ from the stream", 0), -1;
  }
  return 0;
}

static int ClientRoundTrips(int fd, long long id, struct Tally* t) {
  int one = 1;
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
    return Report("rr", "TCP_NODELAY", errno), -1;
  for (long long i = 0; i < config.rounds; ++i) {
    if (i == config.rounds / 2 && i > 0) Midway(id);
    char req[17], want[17], got[16];
    snprintf(req, sizeof(req), "req %011lld\n", i % 100000000000LL);
    snprintf(want, sizeof(want), "rsp %011lld\n", i % 100000000000LL);
    if (fx_write_all(fd, req, 16) < 0) return Report("rr", "write", errno), -1;
    ssize_t n = fx_read_full(fd, got, 16);
    if (n < 0) return Report("rr", "read", errno), -1;
    t->out += 16;
    t->crc_out = Crc32(t->crc_out, (const uint8_t*)req, 16);
    t->in += n;
    t->crc_in = Crc32(t->crc_in, (const uint8_t*)got, (size_t)n);
    if (n != 16 || memcmp(got, want, 16) != 0) return Report("rr", "response differs", 0), -1;
  }
  if (shutdown(fd, SHUT_WR) < 0) return Report("rr", "shutdown", errno), -1;
  char extra;
  if (fx_read_full(fd, &extra, 1) != 0) return Report("rr", "no EOF after half-close", 0), -1;
  return 0;
}

static void RunClient(void) {
  int port = config.port_file ? fx_read_port_file(config.port_file, 30.0) : config.port;
  if (port <= 0) Usage();
  const char* host = config.host ? config.host : "127.0.0.1";
  dest_len = fx_make_addr(host, port, &dest);
  if (dest_len == 0) {
    errno = EINVAL;
    fx_die("bad host %s", host);
  }
  int* fds = malloc(sizeof(int) * (size_t)config.parallel);
  double stop_at = config.duration_s > 0 ? fx_now() + config.duration_s : 0;
  long long next = 0;
  while (config.count == 0 || next < config.count) {
    if (stop_at > 0 && fx_now() >= stop_at) break;
    if (config.pause_at > 0 && next == config.pause_at) {
      Say("paused pid=%d conn=%lld\n", (int)getpid(), next);
      Gate();
      if (stop_at > 0) stop_at = fx_now() + config.duration_s;  // --duration counts from here
    }
    if (config.wait_connect) {
      Say("waiting pid=%d conn=%lld\n", (int)getpid(), next);
      Gate();
    }
    long long first = next;
    int round = config.parallel;
    if (config.count != 0 && config.count - next < round) round = (int)(config.count - next);
    for (int k = 0; k < round; ++k) {
      fds[k] = Connect(next++);
      if (fds[k] >= 0 && config.tcp_options) TcpOptions(fds[k], "client");
    }
    if (config.hold) {
      for (int k = 0; k < round; ++k) {
        if (fds[k] < 0) continue;
        char local[80], peer[80];
        Say("ready client pid=%d fd=%d local=%s peer=%s\n", (int)getpid(), fds[k],
            SockText(fds[k], 0, local, sizeof(local)), SockText(fds[k], 1, peer, sizeof(peer)));
      }
      Gate();
    }
    for (int k = 0; k < round; ++k) {
      int fd = fds[k];
      if (fd < 0) continue;
      long long id = first + k;
      uint64_t seed = (uint64_t)(config.seed + id);
      char local[80] = "-", peer[80] = "-";
      if (config.log) {  // names cost two trapped calls: only when they are printed
        SockText(fd, 0, local, sizeof(local));
        SockText(fd, 1, peer, sizeof(peer));
      }
      struct Tally t = {0, 0, 0, 0};
      int rc;
      if (config.mode == kEcho || config.mode == kSink) {
        struct Stream* s = malloc(sizeof(*s));
        StreamInit(s, seed);
        rc = config.mode == kEcho ? ClientEcho(fd, id, s, &t) : ClientSink(fd, id, s, &t);
        free(s);
      } else if (config.mode == kSource) {
        rc = ClientSource(fd, id, &t);
      } else {
        rc = ClientRoundTrips(fd, id, &t);
      }
      close(fd);
      atomic_fetch_add(&bytes_out_total, t.out);
      atomic_fetch_add(&bytes_in_total, t.in);
      if (rc == 0) atomic_fetch_add(&connections_ok, 1);
      if (config.log) {
        Say("conn local=%s peer=%s seed=%llu bytes_out=%lld crc_out=%08x bytes_in=%lld "
            "crc_in=%08x\n",
            local, peer, (unsigned long long)seed, t.out, t.crc_out, t.in, t.crc_in);
      }
    }
  }
  free(fds);
}

static void* ClientThread(void* arg) {
  (void)arg;
  RunClient();
  return NULL;
}

// ---- Server ---------------------------------------------------------------------------------

static int listen_port;

static int Listen(void) {
  if (config.listen_fd >= 0) {
    struct sockaddr_storage bound;
    socklen_t len = sizeof(bound);
    if (getsockname(config.listen_fd, (struct sockaddr*)&bound, &len) < 0)
      fx_die("getsockname(--listen-fd)");
    listen_port = fx_port_of(&bound);
    return config.listen_fd;
  }
  int v6 = strcmp(config.family, "ipv4") != 0;
  const char* host = config.host;
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
    if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only)) < 0)
      fx_die("IPV6_V6ONLY");
  }
  if (bind(fd, (struct sockaddr*)&addr, len) < 0) fx_die("bind %s:%d", host, config.port);
  if (listen(fd, config.backlog) < 0) fx_die("listen");
  struct sockaddr_storage bound;
  socklen_t bound_len = sizeof(bound);
  if (getsockname(fd, (struct sockaddr*)&bound, &bound_len) < 0) fx_die("getsockname");
  listen_port = fx_port_of(&bound);
  return fd;
}

struct Accepted {
  int fd;
  struct sockaddr_storage peer;
  socklen_t peer_len;
};

static int ServeConnection(int fd, struct Tally* t) {
  uint8_t buf[65536];
  if (config.mode == kSource) {
    struct Stream* s = malloc(sizeof(*s));
    StreamInit(s, (uint64_t)config.seed);
    int rc = 0;
    for (long long off = 0; off < config.bytes && rc == 0;) {
      size_t n =
          config.bytes - off < (long long)sizeof(buf) ? (size_t)(config.bytes - off) : sizeof(buf);
      StreamFill(s, (uint64_t)off, buf, n);
      if (fx_write_all(fd, buf, n) < 0) {
        rc = -1;
        Report("server source", "write", errno);
      }
      t->out += (long long)n;
      off += (long long)n;
    }
    free(s);
    return rc;
  }
  if (config.mode == kRoundTrip) {
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
      return Report("server rr", "TCP_NODELAY", errno), -1;
    for (;;) {
      char req[16];
      ssize_t n = fx_read_full(fd, req, 16);
      if (n < 0) return Report("server rr", "read", errno), -1;
      if (n == 0) return 0;
      t->in += n;
      t->crc_in = Crc32(t->crc_in, (const uint8_t*)req, (size_t)n);
      if (n != 16 || memcmp(req, "req ", 4) != 0 || req[15] != '\n')
        return Report("server rr", "bad request", 0), -1;
      memcpy(req, "rsp ", 4);
      if (fx_write_all(fd, req, 16) < 0) return Report("server rr", "write", errno), -1;
      t->out += 16;
    }
  }
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Report("server", "read", errno), -1;
    if (n == 0) break;
    t->in += n;
    t->crc_in = Crc32(t->crc_in, buf, (size_t)n);
    if (config.mode == kEcho) {
      if (fx_write_all(fd, buf, (size_t)n) < 0) return Report("server echo", "write", errno), -1;
      t->out += n;
    }
  }
  if (config.mode == kSink) {
    char reply[64];
    int len = snprintf(reply, sizeof(reply), "%lld %08x\n", t->in, t->crc_in);
    if (fx_write_all(fd, reply, (size_t)len) < 0) return Report("server sink", "write", errno), -1;
    t->out += len;
  }
  return 0;
}

static void HandleConnection(struct Accepted* a) {
  // One getsockname and one getpeername per connection: they are checked and printed.
  char local[80], peer[80], accepted_peer[80];
  SockText(a->fd, 1, peer, sizeof(peer));
  AddrText(&a->peer, accepted_peer, sizeof(accepted_peer));
  if (strcmp(peer, accepted_peer) != 0) {
    fprintf(stderr, "switch_peer: getpeername %s, accept said %s\n", peer, accepted_peer);
    Report("server", "getpeername differs from accept's address", 0);
  }
  struct sockaddr_storage name;
  socklen_t name_len = sizeof(name);
  if (getsockname(a->fd, (struct sockaddr*)&name, &name_len) < 0 ||
      fx_port_of(&name) != listen_port) {
    snprintf(local, sizeof(local), "error");
    Report("server", "getsockname does not name the listening port", 0);
  } else {
    AddrText(&name, local, sizeof(local));
  }
  if (config.tcp_options) TcpOptions(a->fd, "server");
  if (config.hold) {
    Say("ready server pid=%d fd=%d local=%s peer=%s\n", (int)getpid(), a->fd, local, peer);
    Gate();
  }
  struct Tally t = {0, 0, 0, 0};
  int rc = ServeConnection(a->fd, &t);
  close(a->fd);
  atomic_fetch_add(&bytes_in_total, t.in);
  atomic_fetch_add(&bytes_out_total, t.out);
  if (rc == 0) atomic_fetch_add(&connections_ok, 1);
  if (config.log) {
    Say("conn local=%s peer=%s bytes_in=%lld crc_in=%08x bytes_out=%lld\n", local, peer, t.in,
        t.crc_in, t.out);
  }
}

static void* ConnectionThread(void* arg) {
  HandleConnection((struct Accepted*)arg);
  free(arg);
  return NULL;
}

static void RunServer(void) {
  int listener = Listen();
  if (config.port_file != NULL) fx_write_port_file(config.port_file, listen_port);
  pthread_t* threads = NULL;
  size_t thread_count = 0, thread_cap = 0;
  for (long long served = 0; config.count == 0 || served < config.count; ++served) {
    struct Accepted* a = malloc(sizeof(*a));
    a->peer_len = sizeof(a->peer);
    do {
      a->fd = accept4(listener, (struct sockaddr*)&a->peer, &a->peer_len,
                      config.inheritable ? 0 : SOCK_CLOEXEC);
    } while (a->fd < 0 && (errno == EINTR || errno == ECONNABORTED));
    if (a->fd < 0) fx_die("accept4");
    if (!config.threads) {
      ConnectionThread(a);
      continue;
    }
    if (thread_count == thread_cap) {
      thread_cap = thread_cap ? thread_cap * 2 : 64;
      threads = realloc(threads, thread_cap * sizeof(*threads));
    }
    int rc = pthread_create(&threads[thread_count++], NULL, ConnectionThread, a);
    if (rc != 0) {
      errno = rc;
      fx_die("pthread_create");
    }
  }
  for (size_t k = 0; k < thread_count; ++k) pthread_join(threads[k], NULL);
  free(threads);
  close(listener);
}

static void OnTimeout(int sig) {
  (void)sig;
  static const char msg[] = "switch_peer: timeout\n";
  (void)!write(2, msg, sizeof(msg) - 1);
  _exit(4);
}

int main(int argc, char** argv) {
  fx_program = "switch_peer";
  signal(SIGPIPE, SIG_IGN);
  ParseArgs(argc, argv);
  CrcInit();
  if (config.timeout_s > 0) {
    signal(SIGALRM, OnTimeout);
    alarm((unsigned)config.timeout_s);
  }
  if (config.is_server) {
    RunServer();
  } else if (config.client_thread) {
    pthread_t thread;
    int rc = pthread_create(&thread, NULL, ClientThread, NULL);
    if (rc != 0) {
      errno = rc;
      fx_die("pthread_create");
    }
    pthread_join(thread, NULL);
  } else {
    RunClient();
  }
  long long errs = atomic_load(&errors);
  if (config.is_server) {
    Say("server: mode=%s connections=%lld bytes_in=%lld bytes_out=%lld errors=%lld\n",
        ModeName(config.mode), (long long)atomic_load(&connections_ok),
        (long long)atomic_load(&bytes_in_total), (long long)atomic_load(&bytes_out_total), errs);
  } else {
    Say("client: mode=%s connections=%lld bytes_out=%lld bytes_in=%lld errors=%lld\n",
        ModeName(config.mode), (long long)atomic_load(&connections_ok),
        (long long)atomic_load(&bytes_out_total), (long long)atomic_load(&bytes_in_total), errs);
  }
  if (config.hold_exit) {
    Say("done pid=%d\n", (int)getpid());
    Gate();
  }
  return errs == 0 ? 0 : 1;
}
