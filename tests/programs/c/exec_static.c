// exec_static: makes a trapped socket call, then execs PROGRAM (a static binary) in place.
//
//   exec_static PROGRAM [ARGS...]
//
// Prints "exec_static: exec <basename>" before the exec and its pid on stderr, so a test can tell
// that the socket calls after the exec come from the same process. Exit 127 when exec fails.
#include "fixture.h"  // first: it defines _GNU_SOURCE

#include <libgen.h>

int main(int argc, char** argv) {
  fx_program = "exec_static";
  if (argc < 2) {
    fprintf(stderr, "usage: exec_static PROGRAM [ARGS...]\n");
    return 2;
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fx_die("socket");
  close(fd);
  char copy[4096];
  snprintf(copy, sizeof(copy), "%s", argv[1]);
  printf("exec_static: exec %s\n", basename(copy));
  fflush(stdout);
  fprintf(stderr, "exec_static: pid %d\n", (int)getpid());
  execv(argv[1], argv + 1);
  fprintf(stderr, "exec_static: execv %s: %s\n", argv[1], fx_errno_name(errno));
  return 127;
}
