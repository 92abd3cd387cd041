// accept_later: listens, then accepts only when told to, so a test can prepare the accept queue
// (e.g. a connection its peer has already reset) before the program's accept() runs.
//
//   accept_later --port-file PATH [--null-addr]
//
// After writing the port file it waits for one line on stdin, then calls accept() once (with an
// address buffer, or with NULL under --null-addr) and prints what came back and what the first
// read() of the new socket returns:
//   accept: fd peer=127.0.0.1 read=-1 ECONNRESET
//   accept: -1 ECONNABORTED
#include "fixture.h"  // first: it defines _GNU_SOURCE

int main(int argc, char** argv) {
  fx_program = "accept_later";
  const char* port_file = NULL;
  int null_addr = 0;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--port-file") == 0 && i + 1 < argc) {
      port_file = argv[++i];
    } else if (strcmp(argv[i], "--null-addr") == 0) {
      null_addr = 1;
    } else {
      port_file = NULL;
      break;
    }
  }
  if (port_file == NULL) {
    fprintf(stderr, "usage: accept_later --port-file PATH [--null-addr]\n");
    return 2;
  }
  struct sockaddr_storage addr;
  socklen_t len = fx_make_addr("127.0.0.1", 0, &addr);
  int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (l < 0 || bind(l, (struct sockaddr*)&addr, len) < 0 || listen(l, 8) < 0) fx_die("listen");
  len = sizeof(addr);
  if (getsockname(l, (struct sockaddr*)&addr, &len) < 0) fx_die("getsockname");
  fx_write_port_file(port_file, fx_port_of(&addr));

  char line[64];
  if (fgets(line, sizeof(line), stdin) == NULL) return 3;
  struct sockaddr_storage peer;
  socklen_t peer_len = sizeof(peer);
  int fd = null_addr ? accept(l, NULL, NULL) : accept(l, (struct sockaddr*)&peer, &peer_len);
  if (fd < 0) {
    printf("accept: -1 %s\n", fx_errno_name(errno));
    return 0;
  }
  char host[INET6_ADDRSTRLEN] = "-";
  if (!null_addr) fx_host_text(&peer, host, sizeof(host));
  char byte;
  ssize_t n = read(fd, &byte, 1);
  printf("accept: fd peer=%s read=%zd%s%s\n", host, n, n < 0 ? " " : "",
         n < 0 ? fx_errno_name(errno) : "");
  close(fd);
  close(l);
  return 0;
}
