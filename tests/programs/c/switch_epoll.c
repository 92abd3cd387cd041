// switch_epoll: a client that registers its socket with epoll before it connects (as Java NIO or
// libuv may), and the server it talks to. The client prints a transcript of what epoll reports,
// so a switched run can be compared with a native one.
//
//   switch_epoll server [--family ipv4|ipv6] --port-file F
//   switch_epoll client [--host H] --port-file F [--edge] [--blocking-connect] [--hold]
//
// Client: socket(SOCK_NONBLOCK unless --blocking-connect) -> epoll_ctl(ADD, EPOLLIN|EPOLLOUT|
// EPOLLRDHUP [|EPOLLET], data.u64 = a magic number) -> connect -> [--hold: "ready client pid=P
// fd=F epfd=E local=A peer=B", then a stdin gate] -> wait for EPOLLOUT, SO_ERROR -> write
// "hello" -> wait for EPOLLIN; ask epoll again without reading (level-triggered: EPOLLIN again;
// edge-triggered: no EPOLLIN) -> read "world" -> write "ack" -> wait for EPOLLRDHUP (the server's
// shutdown(SHUT_WR)) -> read EOF -> write "bye" -> close. Every wait prints the event that ended
// it (events among IN|OUT|RDHUP|HUP|ERR, and whether data was the magic number). Waits are bounded
// (5 s) and say "timeout".
// Server: accept, read "hello", write "world", read "ack", shutdown(SHUT_WR), read "bye" and EOF,
// print what it read.
#include "fixture.h"  // first: it defines _GNU_SOURCE

#include <signal.h>
#include <sys/epoll.h>

#define MAGIC 0x5157495443480001ull

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

static const char* EventText(uint32_t ev, char* buf, size_t len) {
  snprintf(buf, len, "%s%s%s%s%s", ev & EPOLLIN ? "|IN" : "", ev & EPOLLOUT ? "|OUT" : "",
           ev & EPOLLRDHUP ? "|RDHUP" : "", ev & EPOLLHUP ? "|HUP" : "",
           ev & EPOLLERR ? "|ERR" : "");
  return buf[0] ? buf + 1 : "none";
}

// Waits until an event with one of `want` arrives; prints it under `label`. Returns its events.
static uint32_t WaitFor(int epfd, uint32_t want, const char* label) {
  double deadline = fx_now() + 5.0;
  for (;;) {
    int left = (int)((deadline - fx_now()) * 1000);
    if (left <= 0) {
      Say("%s: timeout", label);
      return 0;
    }
    struct epoll_event ev;
    int n = epoll_wait(epfd, &ev, 1, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fx_die("epoll_wait");
    if (n == 0) continue;
    if (ev.events & want) {
      char text[64];
      Say("%s: events=%s data=%s", label, EventText(ev.events, text, sizeof(text)),
          ev.data.u64 == MAGIC ? "magic" : "other");
      return ev.events;
    }
  }
}

static void ReadExpect(int fd, const char* want, const char* label) {
  char buf[32];
  size_t len = strlen(want);
  size_t got = 0;
  double deadline = fx_now() + 5.0;
  while (got < len && fx_now() < deadline) {
    ssize_t n = read(fd, buf + got, len - got);
    if (n > 0) got += (size_t)n;
    if (n == 0) break;
    if (n < 0 && errno != EAGAIN && errno != EINTR) break;
    if (n < 0) {
      struct pollfd p = {fd, POLLIN, 0};
      poll(&p, 1, 100);
    }
  }
  Say("%s: read %zu %s", label, got, got == len && memcmp(buf, want, len) == 0 ? "ok" : "wrong");
}

static int Client(const char* host, const char* port_file, int edge, int blocking, int hold) {
  struct sockaddr_storage dest;
  socklen_t len = fx_make_addr(host, fx_read_port_file(port_file, 30), &dest);
  if (len == 0) fx_die("bad host %s", host);
  int epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) fx_die("epoll_create1");
  int fd = socket(dest.ss_family, SOCK_STREAM | SOCK_CLOEXEC | (blocking ? 0 : SOCK_NONBLOCK), 0);
  if (fd < 0) fx_die("socket");
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | (edge ? EPOLLET : 0),
                           .data.u64 = MAGIC};
  Say("epoll_ctl ADD = %d", epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev));
  int rc = connect(fd, (struct sockaddr*)&dest, len);
  Say("connect = %d%s%s", rc, rc < 0 ? " " : "", rc < 0 ? fx_errno_name(errno) : "");
  if (hold) {
    printf("ready client pid=%d fd=%d epfd=%d\n", (int)getpid(), fd, epfd);
    fflush(stdout);
    Gate();
  }
  WaitFor(epfd, EPOLLOUT, "connected");
  int err = -1;
  socklen_t err_len = sizeof(err);
  getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &err_len);
  Say("SO_ERROR = %d", err);
  if (fx_write_all(fd, "hello\n", 6) < 0) fx_die("write hello");
  WaitFor(epfd, EPOLLIN, "reply");
  struct epoll_event again;
  int n = epoll_wait(epfd, &again, 1, 0);
  Say("asked again without reading: %s",
      n == 1 && (again.events & EPOLLIN) ? "IN (level)" : "no IN (edge)");
  ReadExpect(fd, "world\n", "reply");
  if (fx_write_all(fd, "ack\n", 4) < 0) fx_die("write ack");
  WaitFor(epfd, EPOLLRDHUP, "server half-closed");
  char c;
  ssize_t r = read(fd, &c, 1);
  Say("read after half-close = %zd", r);
  Say("write after the server's half-close = %zd", write(fd, "bye\n", 4));
  close(fd);
  close(epfd);
  return 0;
}

static int Server(const char* family, const char* port_file) {
  int v6 = strcmp(family, "ipv6") == 0;
  struct sockaddr_storage addr;
  socklen_t len = fx_make_addr(v6 ? "::1" : "127.0.0.1", 0, &addr);
  int l = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (l < 0 || bind(l, (struct sockaddr*)&addr, len) < 0 || listen(l, 16) < 0) fx_die("listen");
  len = sizeof(addr);
  if (getsockname(l, (struct sockaddr*)&addr, &len) < 0) fx_die("getsockname");
  fx_write_port_file(port_file, fx_port_of(&addr));
  int fd = accept4(l, NULL, NULL, SOCK_CLOEXEC);
  if (fd < 0) fx_die("accept4");
  char buf[16];
  ssize_t n = fx_read_full(fd, buf, 6);
  Say("server: read %zd %s", n, n == 6 && memcmp(buf, "hello\n", 6) == 0 ? "hello" : "wrong");
  if (fx_write_all(fd, "world\n", 6) < 0) fx_die("write world");
  n = fx_read_full(fd, buf, 4);
  Say("server: read %zd %s", n, n == 4 && memcmp(buf, "ack\n", 4) == 0 ? "ack" : "wrong");
  Say("server: shutdown SHUT_WR = %d", shutdown(fd, SHUT_WR));
  n = fx_read_full(fd, buf, sizeof(buf));
  Say("server: read to EOF %zd %s", n, n == 4 && memcmp(buf, "bye\n", 4) == 0 ? "bye" : "wrong");
  close(fd);
  close(l);
  return 0;
}

int main(int argc, char** argv) {
  fx_program = "switch_epoll";
  signal(SIGPIPE, SIG_IGN);
  if (argc < 2) goto usage;
  const char* family = "ipv4";
  const char* host = "127.0.0.1";
  const char* port_file = NULL;
  int edge = 0, blocking = 0, hold = 0;
  for (int i = 2; i < argc; ++i) {
    if (strcmp(argv[i], "--edge") == 0) {
      edge = 1;
    } else if (strcmp(argv[i], "--blocking-connect") == 0) {
      blocking = 1;
    } else if (strcmp(argv[i], "--hold") == 0) {
      hold = 1;
    } else if (i + 1 < argc && strcmp(argv[i], "--family") == 0) {
      family = argv[++i];
    } else if (i + 1 < argc && strcmp(argv[i], "--host") == 0) {
      host = argv[++i];
    } else if (i + 1 < argc && strcmp(argv[i], "--port-file") == 0) {
      port_file = argv[++i];
    } else {
      goto usage;
    }
  }
  if (port_file == NULL) goto usage;
  if (strcmp(argv[1], "server") == 0) return Server(family, port_file);
  if (strcmp(argv[1], "client") == 0) return Client(host, port_file, edge, blocking, hold);
usage:
  fprintf(stderr, "usage: switch_epoll server|client [options] --port-file F\n");
  return 2;
}
