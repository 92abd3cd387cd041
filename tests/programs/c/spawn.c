// spawn: starts PROGRAM with posix_spawn (glibc uses clone(CLONE_VM | CLONE_VFORK)) and waits.
//
//   spawn PROGRAM [ARGS...]
//
// Prints "spawn: child exited N" (or "killed by SIGX") and exits with the child's status; the
// parent and child pids go to stderr ("spawn: parent P child C") for tests that map trace lines.
#include "fixture.h"  // first: it defines _GNU_SOURCE

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

extern char** environ;

int main(int argc, char** argv) {
  fx_program = "spawn";
  if (argc < 2) {
    fprintf(stderr, "usage: spawn PROGRAM [ARGS...]\n");
    return 2;
  }
  // A socket call in the parent before the spawn: the parent is supervised too.
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fx_die("socket");
  close(fd);
  fflush(stdout);
  pid_t child;
  int rc = posix_spawn(&child, argv[1], NULL, NULL, argv + 1, environ);
  if (rc != 0) {
    errno = rc;
    fx_die("posix_spawn %s", argv[1]);
  }
  fprintf(stderr, "spawn: parent %d child %d\n", (int)getpid(), (int)child);
  int status;
  while (waitpid(child, &status, 0) < 0) {
    if (errno != EINTR) fx_die("waitpid");
  }
  if (WIFEXITED(status)) {
    printf("spawn: child exited %d\n", WEXITSTATUS(status));
    return WEXITSTATUS(status);
  }
  printf("spawn: child killed by %s\n", sigabbrev_np(WTERMSIG(status)));
  return 128 + WTERMSIG(status);
}
