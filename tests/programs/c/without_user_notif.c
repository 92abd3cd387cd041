// without_user_notif: runs a command as on a kernel without seccomp user notification.
//   without_user_notif COMMAND [ARGS...]
// Installs a seccomp filter (allowed unprivileged after NO_NEW_PRIVS) under which seccomp(2)
// fails with EINVAL, the answer of a kernel older than 5.0 to SECCOMP_FILTER_FLAG_NEW_LISTENER,
// then execs COMMAND. The command's own filters (e.g. slipstream-trace's) can then not be
// installed; everything else runs normally.
#include "fixture.h"  // first: it defines _GNU_SOURCE

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

int main(int argc, char** argv) {
  fx_program = "without_user_notif";
  if (argc < 2) {
    fprintf(stderr, "usage: without_user_notif COMMAND [ARGS...]\n");
    return 2;
  }
  struct sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_seccomp, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EINVAL),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {sizeof(code) / sizeof(code[0]), code};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) fx_die("prctl(NO_NEW_PRIVS)");
  if (syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0) fx_die("seccomp");
  execvp(argv[1], argv + 1);
  fx_die("exec");
}
