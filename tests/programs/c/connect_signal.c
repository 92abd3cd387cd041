// connect_signal: one blocking connect() while a test sends SIGUSR1.
//
//   connect_signal (--restart | --no-restart) --port PORT
//
// Connects to 127.0.0.1:PORT (a listener whose accept queue the test keeps full, so the SYN is
// dropped and connect waits for a retransmission). The SIGUSR1 handler is installed with or
// without SA_RESTART and writes "handler: SIGUSR1". Prints what connect() returned, whether the
// socket is still blocking, and how often the handler ran:
//   connect: 0            (SA_RESTART: the call resumed and completed once the queue had room)
//   connect: -1 EINTR     (no SA_RESTART)
// A 30-second alarm bounds the wait (exit 4).
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
  static const char msg[] = "connect_signal: timeout\n";
  (void)!write(2, msg, sizeof(msg) - 1);
  _exit(4);
}

int main(int argc, char** argv) {
  fx_program = "connect_signal";
  int restart = -1;
  int port = 0;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--restart") == 0) {
      restart = 1;
    } else if (strcmp(argv[i], "--no-restart") == 0) {
      restart = 0;
    } else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
      port = (int)fx_parse_count("port", argv[++i]);
    } else {
      restart = -1;
      break;
    }
  }
  if (restart < 0 || port <= 0) {
    fprintf(stderr, "usage: connect_signal (--restart | --no-restart) --port PORT\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IONBF, 0);
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = OnUsr1;
  sa.sa_flags = restart ? SA_RESTART : 0;
  sigaction(SIGUSR1, &sa, NULL);
  signal(SIGALRM, OnAlarm);
  alarm(30);

  struct sockaddr_storage addr;
  socklen_t len = fx_make_addr("127.0.0.1", port, &addr);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fx_die("socket");
  int rc = connect(fd, (struct sockaddr*)&addr, len);
  int err = errno;
  if (rc == 0) {
    printf("connect: 0\n");
  } else {
    printf("connect: -1 %s\n", fx_errno_name(err));
  }
  printf("socket: %s\n", (fcntl(fd, F_GETFL) & O_NONBLOCK) ? "non-blocking" : "blocking");
  printf("handler calls: %d\n", (int)handler_calls);
  close(fd);
  return 0;
}
