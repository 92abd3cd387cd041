// ss-syscalls: lmbench-style system call costs, run natively and under slipstream-trace.
//
//   ss-syscalls run [--time SECONDS] [--tests a,b,...] [--listener tcp:HOST:PORT] [--dir DIR]
//   ss-syscalls listen tcp:HOST:PORT      (accept-and-close loop for the connect test)
//   ss-syscalls exit                      (the program fork_exec executes)
//
// Tests (cost per iteration):
//   null             getppid(): no socket call, so the only cost under slipstream-trace is the
//                    seccomp BPF filter that every system call of a supervised process runs
//   open_close       open + close of a small file
//   read_small       pread of 512 bytes from a 512-byte file
//   select100        select() over 100 TCP sockets (listening, none ready; lmbench's lat_select)
//   fork_exit        fork + child _exit + waitpid
//   fork_exec        fork + exec of this binary ("exit") + waitpid
//   connect_close    socket + connect + close to a loopback listener (needs --listener); socket
//                    and connect are trapped calls
//   getsockname_tcp  getsockname on a TCP socket: one trapped call (a notification round trip to
//                    the supervisor) per iteration; the difference to the native run is the cost
//                    of one trapped call
//   write_read       write + read of 1 byte over an AF_UNIX socketpair: calls the filter lets
//                    through unconditionally, which the kernel's seccomp action cache (5.11)
//                    answers without running the BPF program
//   send_recv        send + recv of 1 byte (sendto/recvfrom without address or rare flags) over
//                    the same socketpair: untrapped, but these syscalls have argument-dependent
//                    rules (MSG_TRUNC, MSG_PEEK|MSG_WAITALL, an address...), so the BPF program
//                    runs on each; the difference to write_read is its cost
//   sendmsg_recvmsg  the same with sendmsg + recvmsg
//   read_empty       read on an empty non-blocking socketpair end (EAGAIN): a cached syscall
//   recv_empty       recv on it (EAGAIN): the BPF program runs; no data moves, so the difference
//                    to read_empty is the filter's cost alone
//
// Output: one JSON line per test: {"test":"open_close","ops":N,"seconds":T,"ns_per_op":X}
#define _GNU_SOURCE  // accept4
#include <fcntl.h>
#include <stdbool.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "bench_common.h"

static char g_file[4096];
static bench_addr g_listener;
static bool g_have_listener = false;
static int g_select_fds[100];
static int g_select_max = -1;
static int g_tcp_fd = -1;
static int g_read_fd = -1;
static int g_pair[2] = {-1, -1};
static int g_empty[2] = {-1, -1};

// ---- one iteration of each test; a non-zero return aborts the test ----------------------------

static int t_null(void) {
  return getppid() > 0 ? 0 : -1;
}

static int t_open_close(void) {
  int fd = open(g_file, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  return close(fd);
}

static int t_read_small(void) {
  char buf[512];
  return pread(g_read_fd, buf, sizeof buf, 0) == (ssize_t)sizeof buf ? 0 : -1;
}

static int t_select100(void) {
  fd_set rd;
  FD_ZERO(&rd);
  for (int i = 0; i < 100; i++) FD_SET(g_select_fds[i], &rd);
  struct timeval tv = {0, 0};
  return select(g_select_max + 1, &rd, NULL, NULL, &tv) == 0 ? 0 : -1;
}

static int t_fork_exit(void) {
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) _exit(0);
  int status;
  if (waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static int t_fork_exec(void) {
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    char* const argv[] = {"ss-syscalls", "exit", NULL};
    execv("/proc/self/exe", argv);
    _exit(127);
  }
  int status;
  if (waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static int t_connect_close(void) {
  int fd = connect_to(&g_listener);
  if (fd < 0) return -1;
  return close(fd);
}

static int t_getsockname_tcp(void) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  return getsockname(g_tcp_fd, (struct sockaddr*)&ss, &len);
}

static int t_write_read(void) {
  char c = 'x';
  if (write(g_pair[0], &c, 1) != 1) return -1;
  return read(g_pair[1], &c, 1) == 1 ? 0 : -1;
}

static int t_send_recv(void) {
  char c = 'x';
  if (send(g_pair[0], &c, 1, 0) != 1) return -1;
  return recv(g_pair[1], &c, 1, 0) == 1 ? 0 : -1;
}

static int t_sendmsg_recvmsg(void) {
  char c = 'x';
  struct iovec iov = {&c, 1};
  struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
  if (sendmsg(g_pair[0], &m, 0) != 1) return -1;
  return recvmsg(g_pair[1], &m, 0) == 1 ? 0 : -1;
}

static int t_read_empty(void) {
  char c;
  return read(g_empty[0], &c, 1) < 0 && errno == EAGAIN ? 0 : -1;
}

static int t_recv_empty(void) {
  char c;
  return recv(g_empty[0], &c, 1, 0) < 0 && errno == EAGAIN ? 0 : -1;
}

typedef struct {
  const char* name;
  int (*fn)(void);
  bool needs_listener;
} test;

static const test kTests[] = {
    {"null", t_null, false},
    {"open_close", t_open_close, false},
    {"read_small", t_read_small, false},
    {"select100", t_select100, false},
    {"fork_exit", t_fork_exit, false},
    {"fork_exec", t_fork_exec, false},
    {"connect_close", t_connect_close, true},
    {"getsockname_tcp", t_getsockname_tcp, false},
    {"write_read", t_write_read, false},
    {"send_recv", t_send_recv, false},
    {"sendmsg_recvmsg", t_sendmsg_recvmsg, false},
    {"read_empty", t_read_empty, false},
    {"recv_empty", t_recv_empty, false},
};

// ---- set-up ---------------------------------------------------------------------------------

static void setup(const char* dir) {
  snprintf(g_file, sizeof g_file, "%s/ss-syscalls.%d", dir, (int)getpid());
  int fd = open(g_file, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) die("create %s", g_file);
  char data[512];
  memset(data, 'r', sizeof data);
  if (write_all(fd, data, sizeof data) != 0) die("write %s", g_file);
  g_read_fd = fd;

  // 100 listening TCP sockets on ephemeral loopback ports, never ready for reading.
  struct sockaddr_in any = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  for (int i = 0; i < 100; i++) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0 || bind(s, (struct sockaddr*)&any, sizeof any) != 0 || listen(s, 1) != 0) {
      die("select socket %d", i);
    }
    if (s >= FD_SETSIZE) die("fd %d too large for select", s);
    g_select_fds[i] = s;
    if (s > g_select_max) g_select_max = s;
  }
  g_tcp_fd = g_select_fds[0];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, g_pair) != 0) die("socketpair");
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, g_empty) != 0) {
    die("socketpair");
  }
}

// Runs `fn` in growing batches until `duration` seconds have passed; returns ns per call, or a
// negative value if an iteration failed.
static double time_test(int (*fn)(void), double duration, uint64_t* ops_out, double* secs_out) {
  // Warm-up: caches, page faults, the first fork's copy-on-write set-up.
  for (int i = 0; i < 10; i++) {
    if (fn() != 0) return -1;
  }
  uint64_t ops = 0, batch = 1;
  double start = now_s(), t = start;
  while (t - start < duration) {
    for (uint64_t i = 0; i < batch; i++) {
      if (fn() != 0) return -1;
    }
    ops += batch;
    t = now_s();
    // Batches grow so that clock reads are a negligible part of cheap tests.
    if ((t - start) < duration / 20) batch *= 2;
  }
  *ops_out = ops;
  *secs_out = t - start;
  return (t - start) / (double)ops * 1e9;
}

static _Noreturn void usage(void) {
  fprintf(stderr,
          "usage: ss-syscalls run [--time SECONDS] [--tests a,b,...] [--listener tcp:HOST:PORT]"
          " [--dir DIR]\n"
          "       ss-syscalls listen tcp:HOST:PORT\n"
          "tests:");
  for (size_t i = 0; i < sizeof kTests / sizeof kTests[0]; i++) fprintf(stderr, " %s", kTests[i].name);
  fputc('\n', stderr);
  exit(2);
}

static _Noreturn void run_listener(const char* spec) {
  bench_addr a = parse_addr(spec);
  int lfd = listen_on(&a, 4096);
  for (;;) {
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd >= 0) close(fd);
  }
}

static bool selected(const char* list, const char* name) {
  if (!list) return true;
  size_t n = strlen(name);
  for (const char* p = list; (p = strstr(p, name)) != NULL; p += n) {
    bool start_ok = p == list || p[-1] == ',';
    bool end_ok = p[n] == '\0' || p[n] == ',';
    if (start_ok && end_ok) return true;
  }
  return false;
}

int main(int argc, char** argv) {
  if (argc >= 2 && strcmp(argv[1], "exit") == 0) return 0;
  if (argc == 3 && strcmp(argv[1], "listen") == 0) run_listener(argv[2]);
  if (argc < 2 || strcmp(argv[1], "run") != 0) usage();

  double duration = 0.5;
  const char* tests = NULL;
  const char* dir = "/tmp";
  for (int i = 2; i < argc; i += 2) {
    if (i + 1 >= argc) usage();
    if (strcmp(argv[i], "--time") == 0) {
      duration = atof(argv[i + 1]);
    } else if (strcmp(argv[i], "--tests") == 0) {
      tests = argv[i + 1];
    } else if (strcmp(argv[i], "--listener") == 0) {
      g_listener = parse_addr(argv[i + 1]);
      g_have_listener = true;
    } else if (strcmp(argv[i], "--dir") == 0) {
      dir = argv[i + 1];
    } else {
      usage();
    }
  }
  if (duration <= 0) usage();
  setup(dir);

  int failures = 0;
  for (size_t i = 0; i < sizeof kTests / sizeof kTests[0]; i++) {
    const test* t = &kTests[i];
    if (!selected(tests, t->name)) continue;
    if (t->needs_listener && !g_have_listener) {
      fprintf(stderr, "ss-syscalls: %s skipped (no --listener)\n", t->name);
      continue;
    }
    uint64_t ops = 0;
    double secs = 0;
    double ns = time_test(t->fn, duration, &ops, &secs);
    if (ns < 0) {
      fprintf(stderr, "ss-syscalls: %s failed: %s\n", t->name, strerror(errno));
      failures++;
      continue;
    }
    printf("{\"test\":\"%s\",\"ops\":%llu,\"seconds\":%.6f,\"ns_per_op\":%.2f}\n", t->name,
           (unsigned long long)ops, secs, ns);
    fflush(stdout);
  }
  unlink(g_file);
  return failures == 0 ? 0 : 3;
}
