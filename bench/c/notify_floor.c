// ss-notify-floor: the cost floor of a trapped call, for comparison with slipstream-trace's.
//
//   ss-notify-floor [--no-sync-wakeup] [--trap CALL]... -- PROGRAM [ARGS...]
//
// Runs PROGRAM under the smallest seccomp user-notification supervisor there can be: the filter
// traps getsockname() only (or the CALLs named: getsockname, connect, accept (accept and
// accept4), listen), and the supervisor answers each notification with CONTINUE at once,
// reading nothing (no /proc, no process memory, no fd copy). What a getsockname costs PROGRAM
// here is the bare notification round trip: the filter, two context switches, two ioctls. Like
// slipstream-trace, it waits for notifications in poll() and asks for
// SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (Linux 6.6: the target is woken on the supervisor's CPU)
// unless --no-sync-wakeup; it runs where it was started (bench/run pins both to the client CPU).
//
// SIGTERM, SIGINT and SIGHUP are forwarded to PROGRAM. Exit status: PROGRAM's, or 126 if the
// supervisor could not be set up.
#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (1UL << 0)
#endif

static void die(const char* what) {
  fprintf(stderr, "ss-notify-floor: %s: %s\n", what, strerror(errno));
  exit(126);
}

enum { kMaxTrapped = 8 };

// In the child: installs the filter trapping the `n` system calls `nrs` and returns its
// notification fd.
static int install_filter(const int* nrs, int n) {
  struct sock_filter code[4 + kMaxTrapped + 2];
  int len = 0;
  code[len++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                             offsetof(struct seccomp_data, arch));
  code[len++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0);
  code[len++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
  code[len++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                             offsetof(struct seccomp_data, nr));
  // Each match jumps over the remaining tests and the ALLOW to the USER_NOTIF at the end.
  for (int i = 0; i < n; ++i) {
    code[len++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nrs[i],
                                               (unsigned char)(n - i), 0);
  }
  code[len++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
  code[len++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF);
  struct sock_fprog prog = {(unsigned short)len, code};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) die("prctl(NO_NEW_PRIVS)");
  int fd =
      (int)syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
  if (fd < 0) die("seccomp(NEW_LISTENER)");
  return fd;
}

// One byte with room for one fd in SCM_RIGHTS: the message both ends of the hand-over use.
typedef struct {
  char data;
  struct iovec iov;
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int))];
  } u;
  struct msghdr msg;
} fd_message;

static void fd_message_init(fd_message* m) {
  memset(m, 0, sizeof *m);
  m->iov.iov_base = &m->data;
  m->iov.iov_len = 1;
  m->msg.msg_iov = &m->iov;
  m->msg.msg_iovlen = 1;
  m->msg.msg_control = m->u.buf;
  m->msg.msg_controllen = sizeof m->u.buf;
}

static void send_fd(int sock, int fd) {
  fd_message m;
  fd_message_init(&m);
  struct cmsghdr* c = CMSG_FIRSTHDR(&m.msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &fd, sizeof fd);
  if (sendmsg(sock, &m.msg, 0) != 1) die("sendmsg");
}

static int recv_fd(int sock) {
  fd_message m;
  fd_message_init(&m);
  if (recvmsg(sock, &m.msg, MSG_CMSG_CLOEXEC) != 1) die("recvmsg");
  struct cmsghdr* c = CMSG_FIRSTHDR(&m.msg);
  if (c == NULL || c->cmsg_type != SCM_RIGHTS) {
    errno = EPROTO;
    die("no notification fd from the child");
  }
  int fd;
  memcpy(&fd, CMSG_DATA(c), sizeof fd);
  return fd;
}

static volatile pid_t g_child;

// SIGTERM, SIGINT, SIGHUP go on to PROGRAM, as slipstream-trace forwards them: a benchmark that
// stops the supervisor stops the program.
static void forward_signal(int sig) {
  if (g_child > 0) kill(g_child, sig);
}

// Answers every notification with CONTINUE until no process uses the filter any more (POLLHUP).
static void serve(int notify_fd) {
  struct seccomp_notif req;
  struct seccomp_notif_resp resp;
  for (;;) {
    struct pollfd p = {notify_fd, POLLIN, 0};
    if (poll(&p, 1, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    if (p.revents & POLLIN) {
      memset(&req, 0, sizeof req);
      if (ioctl(notify_fd, SECCOMP_IOCTL_NOTIF_RECV, &req) < 0) {
        if (errno == EINTR || errno == ENOENT) continue;  // the target left the call
        die("SECCOMP_IOCTL_NOTIF_RECV");
      }
      memset(&resp, 0, sizeof resp);
      resp.id = req.id;
      resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
      if (ioctl(notify_fd, SECCOMP_IOCTL_NOTIF_SEND, &resp) < 0 && errno != ENOENT) {
        die("SECCOMP_IOCTL_NOTIF_SEND");
      }
    } else if (p.revents & (POLLHUP | POLLERR)) {
      return;
    }
  }
}

// Adds the system calls named `name` to `nrs`; 0 if the name is unknown.
static int add_trapped(const char* name, int* nrs, int* n) {
  if (*n + 2 > kMaxTrapped) return 0;
  if (strcmp(name, "getsockname") == 0) {
    nrs[(*n)++] = __NR_getsockname;
  } else if (strcmp(name, "connect") == 0) {
    nrs[(*n)++] = __NR_connect;
  } else if (strcmp(name, "accept") == 0) {
    nrs[(*n)++] = __NR_accept;
    nrs[(*n)++] = __NR_accept4;
  } else if (strcmp(name, "listen") == 0) {
    nrs[(*n)++] = __NR_listen;
  } else {
    return 0;
  }
  return 1;
}

int main(int argc, char** argv) {
  static const char kUsage[] =
      "usage: ss-notify-floor [--no-sync-wakeup] [--trap getsockname|connect|accept|listen]... "
      "-- PROGRAM [ARGS...]\n";
  int i = 1;
  int sync_wakeup = 1;
  int nrs[kMaxTrapped];
  int n = 0;
  for (; i < argc && strncmp(argv[i], "--", 2) == 0 && argv[i][2] != '\0'; ++i) {
    if (strcmp(argv[i], "--no-sync-wakeup") == 0) {
      sync_wakeup = 0;
    } else if (strcmp(argv[i], "--trap") == 0 && i + 1 < argc) {
      if (!add_trapped(argv[++i], nrs, &n)) {
        fprintf(stderr, "ss-notify-floor: cannot trap '%s'\n%s", argv[i], kUsage);
        return 2;
      }
    } else {
      fprintf(stderr, "ss-notify-floor: unknown option '%s'\n%s", argv[i], kUsage);
      return 2;
    }
  }
  if (n == 0) nrs[n++] = __NR_getsockname;
  if (i < argc && strcmp(argv[i], "--") == 0) ++i;
  if (i >= argc) {
    fputs(kUsage, stderr);
    return 2;
  }
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) die("socketpair");
  pid_t child = fork();
  if (child < 0) die("fork");
  if (child == 0) {
    close(sv[0]);
    int fd = install_filter(nrs, n);
    send_fd(sv[1], fd);
    close(fd);
    char go;
    if (read(sv[1], &go, 1) != 1) _exit(126);  // the supervisor holds the fd: run
    execvp(argv[i], &argv[i]);
    fprintf(stderr, "ss-notify-floor: exec %s: %s\n", argv[i], strerror(errno));
    _exit(127);
  }
  close(sv[1]);
  g_child = child;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = forward_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  int notify_fd = recv_fd(sv[0]);
  if (sync_wakeup) {
    unsigned long long flags = SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP;
    if (ioctl(notify_fd, SECCOMP_IOCTL_NOTIF_SET_FLAGS, flags) < 0 && errno != EINVAL) {
      die("SECCOMP_IOCTL_NOTIF_SET_FLAGS");
    }
  }
  if (write(sv[0], "g", 1) != 1) die("write");
  close(sv[0]);
  serve(notify_fd);
  int status;
  while (waitpid(child, &status, 0) < 0) {
    if (errno != EINTR) die("waitpid");
  }
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return WEXITSTATUS(status);
}
