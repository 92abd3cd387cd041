// accept_signal: blocks in one accept() on a blocking listener while a test sends SIGUSR1.
//
//   accept_signal (--restart | --no-restart) --port-file PATH
//
// The SIGUSR1 handler is installed with or without SA_RESTART and writes "handler: SIGUSR1". The
// program calls accept() exactly once and reports what it returned:
//   accept: fd            (SA_RESTART: the call resumed and took the test's connection)
//   accept: -1 EINTR      (no SA_RESTART)
// then whether the listener is still blocking and how often the handler ran. On success it sends
// "hello\n" to the peer. A 30-second alarm bounds the wait (exit 4).
#include "fixture.h"  // first: it defines _GNU_SOURCE

#include <signal.h>

static volatile sig_atomic_t handler_calls;

static void OnUsr1(int sig) {
  (void)sig;
  ++handler_calls;
  static const char msg[] = "handler: SIGUSR1\n";
  (void)!write(1, msg, sizeof(msg) - 1);
}

static void OnAlarm(int sig) {
  (void)sig;
  static const char msg[] = "accept_signal: timeout\n";
  (void)!write(2, msg, sizeof(msg) - 1);
  _exit(4);
}

int main(int argc, char** argv) {
  fx_program = "accept_signal";
  int restart = -1;
  const char* port_file = NULL;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--restart") == 0) {
      restart = 1;
    } else if (strcmp(argv[i], "--no-restart") == 0) {
      restart = 0;
    } else if (strcmp(argv[i], "--port-file") == 0 && i + 1 < argc) {
      port_file = argv[++i];
    } else {
      restart = -1;
      break;
    }
  }
  if (restart < 0 || port_file == NULL) {
    fprintf(stderr, "usage: accept_signal (--restart | --no-restart) --port-file PATH\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IONBF, 0);
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = OnUsr1;
  sa.sa_flags = restart ? SA_RESTART : 0;
  sigaction(SIGUSR1, &sa, NULL);
  signal(SIGALRM, OnAlarm);
  signal(SIGPIPE, SIG_IGN);
  alarm(30);

  struct sockaddr_storage addr;
  socklen_t len = fx_make_addr("127.0.0.1", 0, &addr);
  int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (l < 0) fx_die("socket");
  if (bind(l, (struct sockaddr*)&addr, len) < 0) fx_die("bind");
  if (listen(l, 16) < 0) fx_die("listen");
  len = sizeof(addr);
  if (getsockname(l, (struct sockaddr*)&addr, &len) < 0) fx_die("getsockname");
  fx_write_port_file(port_file, fx_port_of(&addr));

  struct sockaddr_storage peer;
  socklen_t peer_len = sizeof(peer);
  int fd = accept(l, (struct sockaddr*)&peer, &peer_len);
  int err = errno;
  if (fd >= 0) {
    char host[INET6_ADDRSTRLEN];
    printf("accept: fd peer=%s\n", fx_host_text(&peer, host, sizeof(host)));
  } else {
    printf("accept: -1 %s\n", fx_errno_name(err));
  }
  printf("listener: %s\n", (fcntl(l, F_GETFL) & O_NONBLOCK) ? "non-blocking" : "blocking");
  printf("handler calls: %d\n", (int)handler_calls);
  if (fd >= 0) {
    if (fx_write_all(fd, "hello\n", 6) < 0) fx_die("write");
    close(fd);
  }
  close(l);
  return 0;
}
