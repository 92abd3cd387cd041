// switch_end: one end of a connection whose other end gets killed, reporting what it sees.
//
//   switch_end server --port-file F [--send N] [--then idle|read|write] [--hold]
//   switch_end client --port-file F [--send N] [--then idle|read|write] [--hold]
//
// After connect/accept: "ready ROLE pid=P fd=F local=A peer=B" and, with --hold, a stdin gate.
// Then --send N writes N bytes the peer never reads ("sent N"), and --then:
//   idle   "idle", then wait to be killed (at most 60 s)
//   read   "reading", read until EOF or an error, print "read: N bytes then EOF|ERRNO"; then
//          write 1 KiB up to 100 times: "write after: ERRNO" and "write after: K succeeded first"
//   write  "writing", write 64 KiB blocks until an error: "write: ERRNO"; then "then read: R" and
//          "then write: W" (return value and errno of one more read and write)
// SIGPIPE is ignored, so a write to a dead peer reports EPIPE.
#include "fixture.h"  // first: it defines _GNU_SOURCE

#include <signal.h>

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

static void ReadToEnd(int fd) {
  Say("reading");
  char buf[65536];
  long long total = 0;
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      Say("read: %lld bytes then %s", total, fx_errno_name(errno));
      break;
    }
    if (n == 0) {
      Say("read: %lld bytes then EOF", total);
      break;
    }
    total += n;
  }
  char block[1024];
  memset(block, 'w', sizeof(block));
  int ok = 0;
  for (int i = 0; i < 100; ++i) {
    ssize_t n = write(fd, block, sizeof(block));
    if (n < 0) {
      Say("write after: %s", fx_errno_name(errno));
      Say("write after: %d succeeded first", ok);
      return;
    }
    ++ok;
  }
  Say("write after: no error in 100 writes");
}

static void WriteUntilError(int fd) {
  Say("writing");
  static char block[65536];
  memset(block, 'x', sizeof(block));
  for (long long i = 0; i < 100000; ++i) {
    ssize_t n = write(fd, block, sizeof(block));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      Say("write: %s", fx_errno_name(errno));
      char c;
      n = read(fd, &c, 1);
      Say("then read: %zd%s%s", n, n < 0 ? " " : "", n < 0 ? fx_errno_name(errno) : "");
      n = write(fd, block, 1);
      Say("then write: %zd%s%s", n, n < 0 ? " " : "", n < 0 ? fx_errno_name(errno) : "");
      return;
    }
  }
  Say("write: no error");
}

int main(int argc, char** argv) {
  fx_program = "switch_end";
  signal(SIGPIPE, SIG_IGN);
  alarm(60);
  if (argc < 2) goto usage;
  const char* role = argv[1];
  const char* port_file = NULL;
  const char* then = "idle";
  long long send = 0;
  int hold = 0;
  for (int i = 2; i < argc; ++i) {
    if (strcmp(argv[i], "--hold") == 0) {
      hold = 1;
    } else if (i + 1 < argc && strcmp(argv[i], "--port-file") == 0) {
      port_file = argv[++i];
    } else if (i + 1 < argc && strcmp(argv[i], "--then") == 0) {
      then = argv[++i];
    } else if (i + 1 < argc && strcmp(argv[i], "--send") == 0) {
      send = fx_parse_count("--send", argv[++i]);
    } else {
      goto usage;
    }
  }
  if (port_file == NULL) goto usage;
  int fd;
  if (strcmp(role, "server") == 0) {
    struct sockaddr_storage addr;
    socklen_t len = fx_make_addr("127.0.0.1", 0, &addr);
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l < 0 || bind(l, (struct sockaddr*)&addr, len) < 0 || listen(l, 4) < 0) fx_die("listen");
    len = sizeof(addr);
    if (getsockname(l, (struct sockaddr*)&addr, &len) < 0) fx_die("getsockname");
    fx_write_port_file(port_file, fx_port_of(&addr));
    fd = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) fx_die("accept4");
  } else if (strcmp(role, "client") == 0) {
    struct sockaddr_storage dest;
    socklen_t len = fx_make_addr("127.0.0.1", fx_read_port_file(port_file, 30), &dest);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr*)&dest, len) < 0) fx_die("connect");
  } else {
    goto usage;
  }
  char local[64], peer[64];
  printf("ready %s pid=%d fd=%d local=%s peer=%s\n", role, (int)getpid(), fd,
         Addr(fd, 0, local, sizeof(local)), Addr(fd, 1, peer, sizeof(peer)));
  fflush(stdout);
  if (hold) Gate();
  if (send > 0) {
    char* buf = calloc(1, (size_t)send);
    if (fx_write_all(fd, buf, (size_t)send) < 0) fx_die("send");
    free(buf);
    Say("sent %lld", send);
  }
  if (strcmp(then, "read") == 0) {
    ReadToEnd(fd);
  } else if (strcmp(then, "write") == 0) {
    WriteUntilError(fd);
  } else {
    Say("idle");
    for (;;) pause();
  }
  close(fd);
  return 0;
usage:
  fprintf(stderr,
          "usage: switch_end server|client --port-file F [--send N] [--then idle|read|write]\n");
  return 2;
}
