// switch_options: socket options and shutdowns whose effect must survive the switch. One process
// tree: a client (forked child) connects to a listener of the parent. Prints one line per run.
//
//   switch_options rcvtimeo-before-connect   SO_RCVTIMEO 200 ms set before connect(); the read
//                                            must time out (EAGAIN), not block
//   switch_options linger-before-connect     SO_LINGER {1, 0} set before connect(), then close():
//                                            the server's read fails with ECONNRESET
//   switch_options linger-taken-back         SO_LINGER {1, 0} then {0, 0}, then close(): EOF
//   switch_options shutdown-wakes-reader     a thread blocked in read() returns 0 when another
//                                            thread calls shutdown(SHUT_RDWR)
//   switch_options sndtimeo-after-shut-rd    SO_SNDTIMEO 200 ms, shutdown(SHUT_RD), then writes to
//                                            a peer that never reads: EAGAIN, not a block
// A bounded wait (SIGALRM, 5 s) turns a hang into "HANG" and exit status 3.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static int server_fd;
static volatile long reader_result = -2;

static void OnAlarm(int sig) {
  (void)sig;
  static const char msg[] = "HANG\n";
  (void)!write(1, msg, sizeof(msg) - 1);
  _exit(3);
}

static const char* Outcome(long n, int err) {
  static char text[64];
  if (n >= 0) {
    snprintf(text, sizeof(text), "%ld", n);
  } else {
    snprintf(text, sizeof(text), "-1 %s", strerrorname_np(err));
  }
  return text;
}

static void* Reader(void* arg) {
  (void)arg;
  char b[16];
  reader_result = read(server_fd, b, sizeof(b));
  return NULL;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: switch_options MODE\n");
    return 2;
  }
  const char* mode = argv[1];
  signal(SIGALRM, OnAlarm);
  signal(SIGPIPE, SIG_IGN);
  alarm(5);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t addr_len = sizeof(addr);
  int listener = socket(AF_INET, SOCK_STREAM, 0);
  if (bind(listener, (struct sockaddr*)&addr, sizeof(addr)) < 0 || listen(listener, 4) < 0 ||
      getsockname(listener, (struct sockaddr*)&addr, &addr_len) < 0) {
    perror("listen");
    return 1;
  }
  int go[2];
  if (pipe(go) < 0) return 1;
  pid_t child = fork();
  if (child == 0) {
    close(go[1]);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct linger abort_close = {1, 0}, orderly = {0, 0};
    struct timeval timeout = {0, 200000};
    if (strcmp(mode, "linger-before-connect") == 0) {
      setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort_close, sizeof(abort_close));
    }
    if (strcmp(mode, "rcvtimeo-before-connect") == 0) {
      setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    }
    if (connect(fd, (struct sockaddr*)&addr, sizeof(addr)) < 0) _exit(1);
    if (strcmp(mode, "rcvtimeo-before-connect") == 0) {
      char b[4];
      long n = read(fd, b, sizeof(b));
      printf("client read: %s\n", Outcome(n, errno));
      fflush(stdout);
      _exit(0);
    }
    char c;
    (void)!read(go[0], &c, 1);  // the server has accepted
    if (strcmp(mode, "linger-taken-back") == 0) {
      setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort_close, sizeof(abort_close));
      setsockopt(fd, SOL_SOCKET, SO_LINGER, &orderly, sizeof(orderly));
    }
    if (strncmp(mode, "linger", 6) == 0) {
      close(fd);
      _exit(0);
    }
    (void)!read(go[0], &c, 1);  // until the parent is done
    _exit(0);
  }
  close(go[0]);
  server_fd = accept(listener, NULL, NULL);
  if (server_fd < 0) return 1;
  if (write(go[1], "a", 1) != 1) return 1;
  if (strncmp(mode, "linger", 6) == 0) {
    waitpid(child, NULL, 0);
    char b[8];
    long n = read(server_fd, b, sizeof(b));
    printf("server read after the client's close: %s\n", Outcome(n, errno));
  } else if (strcmp(mode, "shutdown-wakes-reader") == 0) {
    pthread_t thread;
    pthread_create(&thread, NULL, Reader, NULL);
    usleep(200000);  // the reader is blocked in read() (not a sync: a late one returns 0 too)
    shutdown(server_fd, SHUT_RDWR);
    pthread_join(thread, NULL);
    printf("blocked reader after shutdown(SHUT_RDWR): %ld\n", reader_result);
  } else if (strcmp(mode, "sndtimeo-after-shut-rd") == 0) {
    struct timeval timeout = {0, 200000};
    setsockopt(server_fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
    shutdown(server_fd, SHUT_RD);
    static char buf[65536];
    long n;
    while ((n = write(server_fd, buf, sizeof(buf))) > 0) {
    }
    printf("writes to a peer that does not read: %s\n", Outcome(n, errno));
  } else if (strcmp(mode, "rcvtimeo-before-connect") == 0) {
    waitpid(child, NULL, 0);
  } else {
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
  }
  fflush(stdout);
  close(go[1]);
  kill(child, SIGKILL);
  waitpid(child, NULL, 0);
  return 0;
}
