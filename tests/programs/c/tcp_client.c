// tcp_client: a static TCP client for Slipstream's tests; verifies every byte it gets back.
//
//   tcp_client --host H (--port P | --port-file F) [--mode echo|sink|source] [--bytes N]
//              [--chunk C] [--half-close] [--seed S] [--threads K] [--conns M] [--parallel P]
//              [--nonblock-connect] [--progress] [--pause-ms MS] [--timeout S]
//              [--sigurg-handler]
//
// Each of K threads makes M rounds; a round opens P connections at once (all connects first, then
// the transfers), so K*M*P connections in all. Connection c of a thread sends the pattern with seed
// S + 1000003*thread + c:
//  - echo: N bytes in chunks of C, each chunk read back and compared; --half-close ends with
//    shutdown(SHUT_WR) and expects EOF;
//  - sink: N bytes in chunks of C, shutdown(SHUT_WR), then the reply "<count> <fnv1a64>" must
//  match;
//  - source: reads to EOF; the N bytes must be the pattern of seed S (the server's --seed).
// Every connection also checks that getpeername() names the destination and getsockname() has the
// destination's family. Prints
//   client: mode=sink connections=T bytes=X errors=0
// and exits 0, or 1 when anything mismatched (details on stderr), 4 on --timeout.
// --sigurg-handler installs a counting SIGURG handler with SA_RESTART (as Go's runtime does), so a
// storm of SIGURG interrupts the client's blocking calls; the count goes to stderr.
#include "fixture.h"  // first: it defines _GNU_SOURCE

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>

enum Mode { kEcho, kSink, kSource };

static struct {
  const char* host;
  int port;
  const char* port_file;
  enum Mode mode;
  long long bytes;
  size_t chunk;
  int half_close;
  long long seed;
  int threads;
  long long conns;
  int parallel;
  int nonblock_connect;
  int progress;
  int pause_ms;
  int timeout_s;
  int sigurg_handler;
} config = {"127.0.0.1", 0, NULL, kSink, 100000, 16384, 0, 0, 1, 1, 1, 0, 0, 0, 60, 0};

static struct sockaddr_storage dest;
static socklen_t dest_len;
static atomic_llong connections_ok, bytes_total, errors;
static atomic_int progress_lines;
static atomic_llong sigurg_count;

static void OnSigurg(int sig) {
  (void)sig;
  atomic_fetch_add(&sigurg_count, 1);
}

static void Usage(void) {
  fprintf(stderr,
          "usage: tcp_client --host H (--port P | --port-file F) [--mode echo|sink|source]\n"
          "  [--bytes N] [--chunk C] [--half-close] [--seed S] [--threads K] [--conns M]\n"
          "  [--parallel P] [--nonblock-connect] [--progress] [--pause-ms MS] [--timeout S]\n"
          "  [--sigurg-handler]\n");
  exit(2);
}

static void ParseArgs(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const char* opt = argv[i];
    if (strcmp(opt, "--half-close") == 0) {
      config.half_close = 1;
      continue;
    }
    if (strcmp(opt, "--nonblock-connect") == 0) {
      config.nonblock_connect = 1;
      continue;
    }
    if (strcmp(opt, "--progress") == 0) {
      config.progress = 1;
      continue;
    }
    if (strcmp(opt, "--sigurg-handler") == 0) {
      config.sigurg_handler = 1;
      continue;
    }
    if (i + 1 >= argc) Usage();
    const char* val = argv[++i];
    if (strcmp(opt, "--host") == 0) {
      config.host = val;
    } else if (strcmp(opt, "--port") == 0) {
      config.port = (int)fx_parse_count(opt, val);
    } else if (strcmp(opt, "--port-file") == 0) {
      config.port_file = val;
    } else if (strcmp(opt, "--mode") == 0) {
      if (strcmp(val, "echo") == 0)
        config.mode = kEcho;
      else if (strcmp(val, "sink") == 0)
        config.mode = kSink;
      else if (strcmp(val, "source") == 0)
        config.mode = kSource;
      else
        Usage();
    } else if (strcmp(opt, "--bytes") == 0) {
      config.bytes = fx_parse_count(opt, val);
    } else if (strcmp(opt, "--chunk") == 0) {
      config.chunk = (size_t)fx_parse_count(opt, val);
      if (config.chunk == 0 || config.chunk > (1 << 20)) Usage();
    } else if (strcmp(opt, "--seed") == 0) {
      config.seed = fx_parse_count(opt, val);
    } else if (strcmp(opt, "--threads") == 0) {
      config.threads = (int)fx_parse_count(opt, val);
    } else if (strcmp(opt, "--conns") == 0) {
      config.conns = fx_parse_count(opt, val);
    } else if (strcmp(opt, "--parallel") == 0) {
      config.parallel = (int)fx_parse_count(opt, val);
    } else if (strcmp(opt, "--pause-ms") == 0) {
      config.pause_ms = (int)fx_parse_count(opt, val);
    } else if (strcmp(opt, "--timeout") == 0) {
      config.timeout_s = (int)fx_parse_count(opt, val);
    } else {
      Usage();
    }
  }
  if (config.threads < 1 || config.parallel < 1) Usage();
}

static const char* ModeName(enum Mode m) {
  return m == kEcho ? "echo" : m == kSink ? "sink" : "source";
}

static void Report(long long id, const char* what, int err) {
  fprintf(stderr, "tcp_client: conn %lld: %s%s%s\n", id, what, err ? ": " : "",
          err ? fx_errno_name(err) : "");
  atomic_fetch_add(&errors, 1);
}

// Starts a connect; returns the socket, or -1 after reporting.
static int StartConnect(long long id) {
  int fd = socket(dest.ss_family,
                  SOCK_STREAM | SOCK_CLOEXEC | (config.nonblock_connect ? SOCK_NONBLOCK : 0), 0);
  if (fd < 0) return Report(id, "socket", errno), -1;
  int rc;
  do {
    rc = connect(fd, (struct sockaddr*)&dest, dest_len);
  } while (rc < 0 && errno == EINTR && !config.nonblock_connect);
  if (rc < 0 && !(config.nonblock_connect && errno == EINPROGRESS)) {
    Report(id, "connect", errno);
    close(fd);
    return -1;
  }
  return fd;
}

// Waits for a non-blocking connect to finish and makes the socket blocking; returns 0 or -1.
static int FinishConnect(long long id, int fd) {
  if (!config.nonblock_connect) return 0;
  struct pollfd p = {fd, POLLOUT, 0};
  int rc;
  do {
    rc = poll(&p, 1, config.timeout_s * 1000);
  } while (rc < 0 && errno == EINTR);
  if (rc != 1) return Report(id, "connect did not finish", rc < 0 ? errno : ETIMEDOUT), -1;
  int err = 0;
  socklen_t len = sizeof(err);
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
    return Report(id, "SO_ERROR", errno), -1;
  if (err != 0) return Report(id, "connect (SO_ERROR)", err), -1;
  if (fx_set_nonblocking(fd, 0) < 0) return Report(id, "clear O_NONBLOCK", errno), -1;
  return 0;
}

static int CheckNames(long long id, int fd) {
  struct sockaddr_storage got;
  socklen_t len = sizeof(got);
  if (getpeername(fd, (struct sockaddr*)&got, &len) < 0)
    return Report(id, "getpeername", errno), -1;
  if (len != dest_len || memcmp(&got, &dest, len) != 0) {
    return Report(id, "getpeername does not name the destination", 0), -1;
  }
  len = sizeof(got);
  if (getsockname(fd, (struct sockaddr*)&got, &len) < 0)
    return Report(id, "getsockname", errno), -1;
  if (got.ss_family != dest.ss_family || fx_port_of(&got) <= 0) {
    return Report(id, "getsockname: wrong family or port", 0), -1;
  }
  return 0;
}

static int Echo(long long id, int fd, uint64_t seed) {
  uint8_t* out = malloc(config.chunk);
  uint8_t* in = malloc(config.chunk);
  int rc = 0;
  for (long long off = 0; off < config.bytes && rc == 0;) {
    size_t n =
        (size_t)(config.bytes - off) < config.chunk ? (size_t)(config.bytes - off) : config.chunk;
    fx_pattern_fill(seed, (uint64_t)off, out, n);
    if (fx_write_all(fd, out, n) < 0) {
      rc = -1;
      Report(id, "write", errno);
    } else {
      ssize_t got = fx_read_full(fd, in, n);
      if (got < 0) {
        rc = -1;
        Report(id, "read", errno);
      } else if ((size_t)got != n || memcmp(in, out, n) != 0) {
        rc = -1;
        Report(id, "echoed bytes differ", 0);
      }
    }
    off += (long long)n;
  }
  if (rc == 0 && config.half_close) {
    if (shutdown(fd, SHUT_WR) < 0) {
      rc = -1;
      Report(id, "shutdown", errno);
    } else if (fx_read_full(fd, in, 1) != 0) {
      rc = -1;
      Report(id, "expected EOF after half-close", 0);
    }
  }
  free(out);
  free(in);
  return rc;
}

static int Sink(long long id, int fd, uint64_t seed) {
  uint8_t* out = malloc(config.chunk);
  for (long long off = 0; off < config.bytes;) {
    size_t n =
        (size_t)(config.bytes - off) < config.chunk ? (size_t)(config.bytes - off) : config.chunk;
    fx_pattern_fill(seed, (uint64_t)off, out, n);
    if (fx_write_all(fd, out, n) < 0) {
      free(out);
      return Report(id, "write", errno), -1;
    }
    off += (long long)n;
  }
  free(out);
  if (shutdown(fd, SHUT_WR) < 0) return Report(id, "shutdown", errno), -1;
  char reply[128];
  ssize_t got = fx_read_full(fd, reply, sizeof(reply) - 1);
  if (got < 0) return Report(id, "read reply", errno), -1;
  reply[got] = '\0';
  char expected[128];
  snprintf(expected, sizeof(expected), "%lld %016llx\n", config.bytes,
           (unsigned long long)fx_pattern_hash(seed, (uint64_t)config.bytes));
  if (strcmp(reply, expected) != 0) {
    fprintf(stderr, "tcp_client: conn %lld: expected reply '%.*s', got '%s'\n", id,
            (int)strlen(expected) - 1, expected, reply);
    return Report(id, "sink reply differs", 0), -1;
  }
  return 0;
}

static int Source(long long id, int fd) {
  uint8_t buf[65536];
  uint64_t hash = FX_FNV_OFFSET;
  long long total = 0;
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Report(id, "read", errno), -1;
    if (n == 0) break;
    hash = fx_fnv1a(hash, buf, (size_t)n);
    total += n;
  }
  if (total != config.bytes || hash != fx_pattern_hash((uint64_t)config.seed, (uint64_t)total)) {
    fprintf(stderr, "tcp_client: conn %lld: got %lld bytes, hash %016llx\n", id, total,
            (unsigned long long)hash);
    return Report(id, "source bytes differ", 0), -1;
  }
  return 0;
}

static void* ThreadMain(void* arg) {
  long long thread = (long long)(intptr_t)arg;
  int* fds = malloc(sizeof(int) * (size_t)config.parallel);
  long long next = 0;
  for (long long round = 0; round < config.conns; ++round) {
    long long first = next;
    for (int k = 0; k < config.parallel; ++k) fds[k] = StartConnect(thread * 1000003 + next++);
    for (int k = 0; k < config.parallel; ++k) {
      long long c = first + k;
      long long id = thread * 1000003 + c;
      int fd = fds[k];
      if (fd < 0) continue;
      int rc = FinishConnect(id, fd);
      if (rc == 0) rc = CheckNames(id, fd);
      if (rc == 0) {
        uint64_t seed = (uint64_t)(config.seed + id);
        rc = config.mode == kEcho   ? Echo(id, fd, seed)
             : config.mode == kSink ? Sink(id, fd, seed)
                                    : Source(id, fd);
      }
      close(fd);
      if (rc == 0) {
        atomic_fetch_add(&connections_ok, 1);
        atomic_fetch_add(&bytes_total, config.bytes);
        if (config.progress) {
          // Lines are for a watching test; the count keeps them unique.
          printf("client: progress %d\n", atomic_fetch_add(&progress_lines, 1) + 1);
          fflush(stdout);
        }
      }
    }
    if (config.pause_ms > 0) {
      struct timespec pause = {config.pause_ms / 1000, (config.pause_ms % 1000) * 1000000L};
      nanosleep(&pause, NULL);
    }
  }
  free(fds);
  return NULL;
}

static void OnTimeout(int sig) {
  (void)sig;
  static const char msg[] = "tcp_client: timeout\n";
  (void)!write(2, msg, sizeof(msg) - 1);
  _exit(4);
}

int main(int argc, char** argv) {
  fx_program = "tcp_client";
  signal(SIGPIPE, SIG_IGN);
  ParseArgs(argc, argv);
  signal(SIGALRM, OnTimeout);
  alarm((unsigned)config.timeout_s);
  if (config.sigurg_handler) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = OnSigurg;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGURG, &sa, NULL);
  }
  int port = config.port_file ? fx_read_port_file(config.port_file, 10.0) : config.port;
  if (port <= 0) Usage();
  dest_len = fx_make_addr(config.host, port, &dest);
  if (dest_len == 0) {
    errno = EINVAL;
    fx_die("bad host %s", config.host);
  }
  pthread_t* threads = malloc(sizeof(pthread_t) * (size_t)config.threads);
  if (config.threads == 1) {
    ThreadMain((void*)(intptr_t)0);  // on the main thread: trace lines carry the process id
    config.threads = 0;
  }
  for (int t = 0; t < config.threads; ++t) {
    int rc = pthread_create(&threads[t], NULL, ThreadMain, (void*)(intptr_t)t);
    if (rc != 0) {
      errno = rc;
      fx_die("pthread_create");
    }
  }
  for (int t = 0; t < config.threads; ++t) pthread_join(threads[t], NULL);
  long long errs = atomic_load(&errors);
  if (config.sigurg_handler) {
    fprintf(stderr, "tcp_client: SIGURG received %lld\n", (long long)atomic_load(&sigurg_count));
  }
  printf("client: mode=%s connections=%lld bytes=%lld errors=%lld\n", ModeName(config.mode),
         (long long)atomic_load(&connections_ok), (long long)atomic_load(&bytes_total), errs);
  return errs == 0 ? 0 : 1;
}
