// scale_peer: many concurrent connects to one server (tests/integration/test_scale.py).
//
//   scale_peer server --port-file PATH --count N [--timeout S]
//   scale_peer client --port-file PATH --threads T --id I [--gate PATH] [--timeout S]
//
// The server accepts N connections and keeps every one open until all N are there, so all N
// exist at once; from each it reads the client's 8-byte nonce, then answers every connection
// with its nonce and what the accepted fd really is (4 bytes: 1 AF_UNIX, 2 TCP, from the socket's
// xattr "system.sockprotoname", which the supervisor does not emulate), and prints
//   server: connections=N unix=U tcp=T
// The client starts T threads that wait at a barrier (and, with --gate, for that file to exist,
// so that several client processes connect together), then each connects once, measuring the
// connect() call, sends nonce I * 65536 + thread, and checks the echo. One line per connection:
//   conn nonce=N setup_us=U own=unix|tcp server=unix|tcp res=ok|mispair|error errno=NAME
// Every wait is bounded by --timeout (default 50 s): exit status 3 on timeout.
#include "soak_proto.h"  // first: fixture.h defines _GNU_SOURCE

#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>

static double timeout_s = 50;

static void RaiseNofile(rlim_t want) {
  struct rlimit r;
  if (getrlimit(RLIMIT_NOFILE, &r) != 0) fx_die("getrlimit");
  if (r.rlim_cur >= want) return;
  r.rlim_cur = want < r.rlim_max ? want : r.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &r) != 0) fx_die("setrlimit");
}

static int Server(const char* port_file, long long count) {
  RaiseNofile((rlim_t)count + 64);
  int l = socket(AF_INET, SOCK_STREAM, 0);
  if (l < 0) fx_die("socket");
  struct sockaddr_storage ss;
  socklen_t len = fx_make_addr("127.0.0.1", 0, &ss);
  if (bind(l, (struct sockaddr*)&ss, len) != 0) fx_die("bind");
  // A backlog above the client count: no SYN is dropped while the accept loop catches up.
  if (listen(l, 4096) != 0) fx_die("listen");
  len = sizeof(ss);
  if (getsockname(l, (struct sockaddr*)&ss, &len) != 0) fx_die("getsockname");
  fx_write_port_file(port_file, fx_port_of(&ss));
  int* fds = calloc((size_t)count, sizeof(int));
  uint64_t* nonces = calloc((size_t)count, sizeof(uint64_t));
  int* domains = calloc((size_t)count, sizeof(int));
  double deadline = fx_now() + timeout_s;
  for (long long i = 0; i < count; ++i) {
    if (soak_wait(l, POLLIN, deadline) != 1) {
      printf("server: timeout accepted=%lld\n", i);
      return 3;
    }
    fds[i] = accept4(l, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fds[i] < 0) fx_die("accept4 #%lld", i);
    domains[i] = soak_domain(fds[i]);
    uint8_t buf[8];
    size_t got = 0;
    if (soak_recv_full(fds[i], buf, 8, deadline, &got) != 0) fx_die("read nonce #%lld", i);
    nonces[i] = soak_get64(buf);
  }
  long long unix_count = 0, tcp_count = 0;
  for (long long i = 0; i < count; ++i) {
    uint8_t reply[12];
    soak_put64(reply, nonces[i]);
    soak_put32(reply + 8, (uint32_t)domains[i]);
    if (soak_send_all(fds[i], reply, sizeof(reply), deadline) != 0) fx_die("reply #%lld", i);
    unix_count += domains[i] == kDomainUnix;
    tcp_count += domains[i] == kDomainTcp;
  }
  for (long long i = 0; i < count; ++i) close(fds[i]);
  printf("server: connections=%lld unix=%lld tcp=%lld\n", count, unix_count, tcp_count);
  return 0;
}

struct Shared {
  pthread_barrier_t barrier;
  struct sockaddr_storage addr;
  socklen_t len;
  const char* gate;
  long long id;
};
static struct Shared shared;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static void* Connect(void* arg) {
  long long t = (long long)(intptr_t)arg;
  uint64_t nonce = (uint64_t)shared.id * 65536u + (uint64_t)t;
  pthread_barrier_wait(&shared.barrier);
  int own = kDomainUnknown, server = kDomainUnknown, err = 0;
  const char* res = "error";
  double t0 = fx_now();
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int r = fd < 0 ? -1 : connect(fd, (struct sockaddr*)&shared.addr, shared.len);
  double setup = fx_now() - t0;
  if (r != 0) {
    err = errno;
  } else {
    own = soak_domain(fd);
    fx_set_nonblocking(fd, 1);
    double deadline = fx_now() + timeout_s;
    uint8_t buf[12];
    size_t got = 0;
    soak_put64(buf, nonce);
    if (soak_send_all(fd, buf, 8, deadline) != 0 ||
        soak_recv_full(fd, buf, sizeof(buf), deadline, &got) != 0) {
      err = got < sizeof(buf) && errno == 0 ? EPIPE : errno;
    } else {
      server = (int)soak_get32(buf + 8);
      res = soak_get64(buf) == nonce ? "ok" : "mispair";
    }
  }
  if (fd >= 0) close(fd);
  pthread_mutex_lock(&out_lock);
  printf("conn nonce=%llu setup_us=%.1f own=%s server=%s res=%s errno=%s\n",
         (unsigned long long)nonce, setup * 1e6, soak_domain_name(own), soak_domain_name(server),
         res, err ? fx_errno_name(err) : "-");
  pthread_mutex_unlock(&out_lock);
  return NULL;
}

// The barrier's last arrival waits for the gate file, so all threads of all processes start
// together.
static int Client(const char* port_file, long long threads) {
  RaiseNofile((rlim_t)threads + 64);
  int port = fx_read_port_file(port_file, timeout_s);
  shared.len = fx_make_addr("127.0.0.1", port, &shared.addr);
  pthread_barrier_init(&shared.barrier, NULL, (unsigned)threads + 1);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 128 * 1024);
  pthread_t* ts = calloc((size_t)threads, sizeof(pthread_t));
  for (long long t = 0; t < threads; ++t) {
    if (pthread_create(&ts[t], &attr, Connect, (void*)(intptr_t)t) != 0) fx_die("pthread_create");
  }
  printf("ready id=%lld\n", shared.id);
  fflush(stdout);
  if (shared.gate != NULL) {
    double deadline = fx_now() + timeout_s;
    while (access(shared.gate, F_OK) != 0) {
      if (fx_now() > deadline) {
        printf("client: timeout waiting for the gate\n");
        return 3;
      }
      struct timespec pause = {0, 2 * 1000 * 1000};
      nanosleep(&pause, NULL);
    }
  }
  pthread_barrier_wait(&shared.barrier);
  for (long long t = 0; t < threads; ++t) pthread_join(ts[t], NULL);
  return 0;
}

int main(int argc, char** argv) {
  fx_program = "scale_peer";
  signal(SIGPIPE, SIG_IGN);
  if (argc < 2) fx_die("usage: scale_peer server|client OPTIONS");
  const char* port_file = NULL;
  long long count = 1000, threads = 100;
  for (int i = 2; i + 1 < argc; i += 2) {
    const char *opt = argv[i], *val = argv[i + 1];
    if (strcmp(opt, "--port-file") == 0)
      port_file = val;
    else if (strcmp(opt, "--count") == 0)
      count = fx_parse_count(opt, val);
    else if (strcmp(opt, "--threads") == 0)
      threads = fx_parse_count(opt, val);
    else if (strcmp(opt, "--id") == 0)
      shared.id = fx_parse_count(opt, val);
    else if (strcmp(opt, "--gate") == 0)
      shared.gate = val;
    else if (strcmp(opt, "--timeout") == 0)
      timeout_s = (double)fx_parse_count(opt, val);
    else {
      errno = EINVAL;
      fx_die("unknown option %s", opt);
    }
  }
  if (port_file == NULL) fx_die("--port-file is required");
  if (strcmp(argv[1], "server") == 0) return Server(port_file, count);
  if (strcmp(argv[1], "client") == 0) return Client(port_file, threads);
  errno = EINVAL;
  fx_die("unknown role %s", argv[1]);
}
