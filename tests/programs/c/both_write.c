// both_write: each side of one connection writes N bytes before it reads any (a naive protocol
// that works over TCP as long as the connection holds N bytes each way), then reads the N bytes
// of the other side and checks them.
//
//   both_write server --port-file F --bytes N
//   both_write client --port-file F --bytes N
//
// Prints "<role> read N ok" and exits 0, or dies naming what differed. Over TCP on loopback 4 MiB
// each way runs (tcp_wmem's 4 MiB); a default AF_UNIX socketpair holds about 200 KB, and this
// program deadlocked at 500 KB over a switched connection before its ends got TCP's send buffer
// (now 3 MiB and 4,000,000 bytes run; 4 MiB does not: docs/differences.md).
#include "fixture.h"  // first: it defines _GNU_SOURCE

static unsigned char Pattern(const char* role, size_t i) {
  return (unsigned char)((i * 131 + (role[0] == 's' ? 7 : 11)) & 0xff);
}

int main(int argc, char** argv) {
  fx_program = "both_write";
  if (argc != 6 || strcmp(argv[2], "--port-file") != 0 || strcmp(argv[4], "--bytes") != 0) {
    fprintf(stderr, "usage: both_write server|client --port-file F --bytes N\n");
    return 2;
  }
  const char* role = argv[1];
  const char* other = strcmp(role, "server") == 0 ? "client" : "server";
  size_t n = strtoul(argv[5], NULL, 10);
  int fd;
  if (strcmp(role, "server") == 0) {
    struct sockaddr_storage addr;
    socklen_t len = fx_make_addr("127.0.0.1", 0, &addr);
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l < 0 || bind(l, (struct sockaddr*)&addr, len) < 0 || listen(l, 1) < 0) fx_die("listen");
    len = sizeof(addr);
    if (getsockname(l, (struct sockaddr*)&addr, &len) < 0) fx_die("getsockname");
    fx_write_port_file(argv[3], fx_port_of(&addr));
    fd = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) fx_die("accept4");
  } else {
    struct sockaddr_storage addr;
    socklen_t len = fx_make_addr("127.0.0.1", fx_read_port_file(argv[3], 30), &addr);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr*)&addr, len) < 0) fx_die("connect");
  }
  unsigned char* buf = malloc(n ? n : 1);
  if (buf == NULL) fx_die("malloc");
  for (size_t i = 0; i < n; ++i) buf[i] = Pattern(role, i);
  if (fx_write_all(fd, buf, n) < 0) fx_die("write");
  if (fx_read_full(fd, buf, n) != (ssize_t)n) fx_die("read: short");
  for (size_t i = 0; i < n; ++i) {
    if (buf[i] != Pattern(other, i)) fx_die("byte %zu differs", i);
  }
  printf("%s read %zu ok\n", role, n);
  return 0;
}
