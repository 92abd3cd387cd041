// switch_close: one end of a connection that runs a script of shutdown/close steps and reports
// what each step returns, so a test can compare a native run with a switched one step by step.
//
//   switch_close server --port-file F --script S [--sigpipe default|ignore]
//   switch_close client --port-file F --script S [--sigpipe ...] [--bind-port P] [--reuseaddr]
//
// After connect/accept: "ready ROLE pid=P fd=F local=A peer=B". The script is a comma-separated
// list of steps, each printing one line (errno names, never numbers):
//   gate          wait for a line on stdin (the test orders the two programs' steps)
//   sleep:MS      sleep MS milliseconds
//   send:N        one write() of N bytes: "send N -> R|ERRNO"
//   read          one read() of up to 64 KiB, after poll() saw it would not block; a read that
//                 would still block after 3 s prints "read -> blocked" instead of hanging
//   drain         read() until 0 or an error (same guard): "drain -> N bytes then
//   EOF|ERRNO|blocked" poll          poll() without waiting: "poll IN OUT RDHUP HUP ERR PRI" (the
//   bits set) epoll         epoll_ctl(ADD) of the socket (EPOLLIN|EPOLLRDHUP) into a new epoll
//   instance epwait        epoll_wait() for up to 3 s: "epwait IN RDHUP ..." or "epwait none"
//   shut:rd|wr|rdwr  shutdown(): "shut:rd -> 0|ERRNO"
//   linger0       setsockopt(SO_LINGER, {1, 0}): "linger0 -> 0|ERRNO"
//   close         close() the connection: "close -> 0|ERRNO"
//   reconnect     (client) a new socket bound to the same local port (SO_REUSEADDR with
//                 --reuseaddr) connects again: "reconnect bind -> 0|ERRNO connect -> 0|ERRNO"
//   accept        (server) accepts one more connection: "accept -> ok|ERRNO"
// At the end: "done". SIGPIPE is ignored unless --sigpipe default; alarm(60) bounds everything.
#include "fixture.h"  // first: it defines _GNU_SOURCE

#include <signal.h>
#include <sys/epoll.h>

static int g_listener = -1;
static int g_epoll = -1;

static void Gate(void) {
  char c;
  for (;;) {
    ssize_t n = read(0, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || c == '\n') return;
  }
}

static void Say(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
static void Say(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vprintf(fmt, ap);
  printf("\n");
  fflush(stdout);
  va_end(ap);
}

static const char* Result(long r) { return r < 0 ? fx_errno_name(errno) : "0"; }

static const char* Addr(int fd, int peer, char* buf, size_t len) {
  struct sockaddr_storage ss;
  socklen_t sl = sizeof(ss);
  if ((peer ? getpeername(fd, (struct sockaddr*)&ss, &sl)
            : getsockname(fd, (struct sockaddr*)&ss, &sl)) < 0) {
    snprintf(buf, len, "error-%s", fx_errno_name(errno));
    return buf;
  }
  char host[INET6_ADDRSTRLEN];
  fx_host_text(&ss, host, sizeof(host));
  snprintf(buf, len, "%s:%d", host, fx_port_of(&ss));
  return buf;
}

static void Bits(char* out, size_t len, unsigned ev) {
  out[0] = '\0';
  static const struct {
    unsigned bit;
    const char* name;
  } names[] = {{POLLIN, "IN"},   {POLLOUT, "OUT"}, {POLLRDHUP, "RDHUP"},
               {POLLHUP, "HUP"}, {POLLERR, "ERR"}, {POLLPRI, "PRI"}};
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); ++i) {
    if (ev & names[i].bit) {
      strncat(out, " ", len - strlen(out) - 1);
      strncat(out, names[i].name, len - strlen(out) - 1);
    }
  }
  if (out[0] == '\0') snprintf(out, len, " none");
}

// 1: readable (a read will not block), 0: still not after 3 s.
static int WaitReadable(int fd) {
  struct pollfd p = {fd, POLLIN, 0};
  for (;;) {
    int r = poll(&p, 1, 3000);
    if (r < 0 && errno == EINTR) continue;
    return r > 0;
  }
}

// One read: >0 bytes, 0 EOF, -1 error (errno), -2 would block.
static long ReadOnce(int fd) {
  static char buf[65536];
  if (!WaitReadable(fd)) return -2;
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    return n;
  }
}

static int Connect(const char* port_file, int bind_port, int reuse) {
  struct sockaddr_storage dest;
  socklen_t len = fx_make_addr("127.0.0.1", fx_read_port_file(port_file, 30), &dest);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fx_die("socket");
  if (reuse) {
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0) fx_die("SO_REUSEADDR");
  }
  if (bind_port > 0) {
    struct sockaddr_storage local;
    socklen_t llen = fx_make_addr("127.0.0.1", bind_port, &local);
    if (bind(fd, (struct sockaddr*)&local, llen) < 0) {
      int err = errno;
      close(fd);
      errno = err;
      return -1;
    }
  }
  if (connect(fd, (struct sockaddr*)&dest, len) < 0) {
    int err = errno;
    close(fd);
    errno = err;
    return -2;
  }
  return fd;
}

static void Reconnect(const char* port_file, int bind_port, int reuse) {
  int fd = Connect(port_file, bind_port, reuse);
  if (fd == -1) {
    Say("reconnect bind -> %s", fx_errno_name(errno));
  } else if (fd == -2) {
    Say("reconnect bind -> 0 connect -> %s", fx_errno_name(errno));
  } else {
    Say("reconnect bind -> 0 connect -> 0");
    close(fd);
  }
}

static void Step(int* fd, const char* step, const char* port_file, int bind_port, int reuse) {
  char bits[64];
  if (strcmp(step, "gate") == 0) {
    Gate();
  } else if (strncmp(step, "sleep:", 6) == 0) {
    usleep((useconds_t)atoi(step + 6) * 1000);
  } else if (strncmp(step, "send:", 5) == 0) {
    long n = atol(step + 5);
    char* buf = calloc(1, (size_t)n);
    memset(buf, 's', (size_t)n);
    ssize_t r = write(*fd, buf, (size_t)n);
    free(buf);
    if (r < 0) {
      Say("send %ld -> %s", n, fx_errno_name(errno));
    } else {
      Say("send %ld -> %zd", n, r);
    }
  } else if (strcmp(step, "read") == 0) {
    long r = ReadOnce(*fd);
    if (r == -2) {
      Say("read -> blocked");
    } else if (r < 0) {
      Say("read -> %s", fx_errno_name(errno));
    } else {
      Say("read -> %ld", r);
    }
  } else if (strcmp(step, "drain") == 0) {
    long long total = 0;
    for (;;) {
      long r = ReadOnce(*fd);
      if (r > 0) {
        total += r;
        continue;
      }
      Say("drain -> %lld bytes then %s", total,
          r == 0    ? "EOF"
          : r == -2 ? "blocked"
                    : fx_errno_name(errno));
      break;
    }
  } else if (strcmp(step, "poll") == 0) {
    struct pollfd p = {*fd, POLLIN | POLLOUT | POLLRDHUP | POLLPRI, 0};
    poll(&p, 1, 0);
    Bits(bits, sizeof(bits), (unsigned)p.revents);
    Say("poll%s", bits);
  } else if (strcmp(step, "epoll") == 0) {
    g_epoll = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = 7};
    Say("epoll -> %s", Result(epoll_ctl(g_epoll, EPOLL_CTL_ADD, *fd, &ev)));
  } else if (strcmp(step, "epwait") == 0) {
    struct epoll_event ev;
    int n;
    do {
      n = epoll_wait(g_epoll, &ev, 1, 3000);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
      Say("epwait none");
    } else {
      Bits(bits, sizeof(bits), ev.events);
      Say("epwait%s data=%llu", bits, (unsigned long long)ev.data.u64);
    }
  } else if (strncmp(step, "shut:", 5) == 0) {
    const char* how = step + 5;
    int h = strcmp(how, "rd") == 0 ? SHUT_RD : strcmp(how, "wr") == 0 ? SHUT_WR : SHUT_RDWR;
    Say("%s -> %s", step, Result(shutdown(*fd, h)));
  } else if (strcmp(step, "linger0") == 0) {
    struct linger l = {1, 0};
    Say("linger0 -> %s", Result(setsockopt(*fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l))));
  } else if (strcmp(step, "close") == 0) {
    Say("close -> %s", Result(close(*fd)));
    *fd = -1;
  } else if (strcmp(step, "reconnect") == 0) {
    Reconnect(port_file, bind_port, reuse);
  } else if (strcmp(step, "accept") == 0) {
    int c = accept4(g_listener, NULL, NULL, SOCK_CLOEXEC);
    Say("accept -> %s", c < 0 ? fx_errno_name(errno) : "ok");
    if (c >= 0) close(c);
  } else {
    fprintf(stderr, "switch_close: unknown step %s\n", step);
    exit(2);
  }
}

int main(int argc, char** argv) {
  fx_program = "switch_close";
  alarm(60);
  if (argc < 2) goto usage;
  const char* role = argv[1];
  const char* port_file = NULL;
  const char* script = "";
  int bind_port = 0, reuse = 0, sigpipe_default = 0;
  for (int i = 2; i < argc; ++i) {
    if (strcmp(argv[i], "--reuseaddr") == 0) {
      reuse = 1;
    } else if (i + 1 < argc && strcmp(argv[i], "--port-file") == 0) {
      port_file = argv[++i];
    } else if (i + 1 < argc && strcmp(argv[i], "--script") == 0) {
      script = argv[++i];
    } else if (i + 1 < argc && strcmp(argv[i], "--bind-port") == 0) {
      bind_port = atoi(argv[++i]);
    } else if (i + 1 < argc && strcmp(argv[i], "--sigpipe") == 0) {
      sigpipe_default = strcmp(argv[++i], "default") == 0;
    } else {
      goto usage;
    }
  }
  if (port_file == NULL) goto usage;
  signal(SIGPIPE, sigpipe_default ? SIG_DFL : SIG_IGN);
  int fd;
  if (strcmp(role, "server") == 0) {
    struct sockaddr_storage addr;
    socklen_t len = fx_make_addr("127.0.0.1", 0, &addr);
    g_listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (g_listener < 0 || bind(g_listener, (struct sockaddr*)&addr, len) < 0 ||
        listen(g_listener, 4) < 0) {
      fx_die("listen");
    }
    len = sizeof(addr);
    if (getsockname(g_listener, (struct sockaddr*)&addr, &len) < 0) fx_die("getsockname");
    fx_write_port_file(port_file, fx_port_of(&addr));
    fd = accept4(g_listener, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) fx_die("accept4");
  } else if (strcmp(role, "client") == 0) {
    fd = Connect(port_file, bind_port, reuse);
    if (fd < 0) fx_die("connect");
  } else {
    goto usage;
  }
  char local[64], peer[64];
  printf("ready %s pid=%d fd=%d local=%s peer=%s\n", role, (int)getpid(), fd,
         Addr(fd, 0, local, sizeof(local)), Addr(fd, 1, peer, sizeof(peer)));
  fflush(stdout);
  char* steps = strdup(script);
  for (char *save = NULL, *step = strtok_r(steps, ",", &save); step != NULL;
       step = strtok_r(NULL, ",", &save)) {
    Step(&fd, step, port_file, bind_port, reuse);
  }
  free(steps);
  Say("done");
  return 0;
usage:
  fprintf(stderr,
          "usage: switch_close server|client --port-file F --script S [--sigpipe default] "
          "[--bind-port P] [--reuseaddr]\n");
  return 2;
}
