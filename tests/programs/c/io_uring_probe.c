// io_uring_probe: calls io_uring_setup(2) with a raw syscall (no liburing) and prints the outcome:
//   io_uring_setup: ok            a ring was created
//   io_uring_setup: -1 ENOSYS     (what slipstream-trace answers by default)
// Always exits 0; the test compares the line.
#include "fixture.h"  // first: it defines _GNU_SOURCE

#include <linux/io_uring.h>
#include <sys/syscall.h>

int main(void) {
  fx_program = "io_uring_probe";
  struct io_uring_params params;
  memset(&params, 0, sizeof(params));
  long fd = syscall(__NR_io_uring_setup, 4, &params);
  if (fd >= 0) {
    printf("io_uring_setup: ok\n");
    close((int)fd);
  } else {
    printf("io_uring_setup: -1 %s\n", fx_errno_name(errno));
  }
  return 0;
}
