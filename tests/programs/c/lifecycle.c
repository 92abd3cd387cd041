// lifecycle: ends in the way a test asks, so slipstream-trace's exit status can be compared.
//
//   lifecycle exit N        make a trapped socket call, print "exiting N", exit N
//   lifecycle segv          print "faulting", then write through a NULL pointer (SIGSEGV)
//   lifecycle wait          print "ready", then wait for a signal (at most 30 s, then exit 4)
//   lifecycle catch         catch SIGTERM, SIGINT and SIGHUP; print "ready"; after the first one
//                           arrives, collect more for 300 ms and print "caught SIGX xN" per kind
//   lifecycle listen FILE   listen on 127.0.0.1, write the port to FILE, print "ready", wait as
//                           `wait` does (a supervised program with a socket open)
#include "fixture.h"  // first: it defines _GNU_SOURCE

#include <signal.h>

static volatile sig_atomic_t counts[NSIG];

static void OnSignal(int sig) { ++counts[sig]; }

static void OnAlarm(int sig) {
  (void)sig;
  static const char msg[] = "lifecycle: timeout\n";
  (void)!write(2, msg, sizeof(msg) - 1);
  _exit(4);
}

static int Usage(void) {
  fprintf(stderr, "usage: lifecycle exit N | segv | wait | catch | listen FILE\n");
  return 2;
}

// A TCP socket() call (trapped when --trace or --stats asks for it), so every run makes one.
static void TouchSocket(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fx_die("socket");
  close(fd);
}

static void WaitForSignal(void) {
  signal(SIGALRM, OnAlarm);
  alarm(30);
  for (;;) pause();
}

static int Catch(void) {
  const int sigs[] = {SIGTERM, SIGINT, SIGHUP};
  sigset_t block;
  sigemptyset(&block);
  for (size_t k = 0; k < 3; ++k) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = OnSignal;
    sigaction(sigs[k], &sa, NULL);
    sigaddset(&block, sigs[k]);
  }
  sigset_t old;
  sigprocmask(SIG_BLOCK, &block, &old);
  printf("ready\n");
  fflush(stdout);
  double deadline = fx_now() + 30;
  int total = 0;
  while (total == 0 && fx_now() < deadline) {
    sigsuspend(&old);  // handlers run only in here
    for (size_t k = 0; k < 3; ++k) total += counts[sigs[k]];
  }
  if (total == 0) return 4;
  // A duplicate delivery (the same signal sent twice) arrives within microseconds; 300 ms is a
  // generous window to observe it, not a synchronisation.
  sigprocmask(SIG_SETMASK, &old, NULL);
  double settle = fx_now() + 0.3;
  while (fx_now() < settle) {
    struct timespec left = {0, 10 * 1000 * 1000};
    nanosleep(&left, NULL);
  }
  for (size_t k = 0; k < 3; ++k) {
    if (counts[sigs[k]] > 0) printf("caught %s x%d\n", sigabbrev_np(sigs[k]), (int)counts[sigs[k]]);
  }
  return 0;
}

int main(int argc, char** argv) {
  fx_program = "lifecycle";
  if (argc < 2) return Usage();
  if (strcmp(argv[1], "exit") == 0 && argc == 3) {
    int code = (int)fx_parse_count("exit code", argv[2]);
    TouchSocket();
    printf("exiting %d\n", code);
    fflush(stdout);
    exit(code);
  }
  if (strcmp(argv[1], "segv") == 0) {
    TouchSocket();
    printf("faulting\n");
    fflush(stdout);
    signal(SIGSEGV, SIG_DFL);
    *(volatile int*)(uintptr_t)0 = 1;
    return 5;
  }
  if (strcmp(argv[1], "wait") == 0) {
    TouchSocket();
    printf("ready\n");
    fflush(stdout);
    WaitForSignal();
  }
  if (strcmp(argv[1], "catch") == 0) {
    TouchSocket();
    return Catch();
  }
  if (strcmp(argv[1], "listen") == 0 && argc == 3) {
    struct sockaddr_storage addr;
    socklen_t len = fx_make_addr("127.0.0.1", 0, &addr);
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l < 0 || bind(l, (struct sockaddr*)&addr, len) < 0 || listen(l, 4) < 0) fx_die("listen");
    len = sizeof(addr);
    if (getsockname(l, (struct sockaddr*)&addr, &len) < 0) fx_die("getsockname");
    fx_write_port_file(argv[2], fx_port_of(&addr));
    printf("ready\n");
    fflush(stdout);
    WaitForSignal();
  }
  return Usage();
}
