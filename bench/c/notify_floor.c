// ss-notify-floor: the cost floor of a trapped call, for comparison with slipstream-trace's.
//
//   ss-notify-floor [--no-sync-wakeup] -- PROGRAM [ARGS...]
//
// Runs PROGRAM under the smallest seccomp user-notification supervisor there can be: the filter
// traps getsockname() only, and the supervisor answers each notification with CONTINUE at once,
// reading nothing (no /proc, no process memory, no fd copy). What a getsockname costs PROGRAM
// here is the bare notification round trip: the filter, two context switches, two ioctls. Like
// slipstream-trace, it waits for notifications in poll() and asks for
// SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (Linux 6.6: the target is woken on the supervisor's CPU)
// unless --no-sync-wakeup; it runs where it was started (bench/run pins both to the client CPU).
//
// Exit status: PROGRAM's, or 126 if the supervisor could not be set up.
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

// In the child: installs the filter and returns its notification fd.
static int install_filter(void) {
  struct sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_getsockname, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {sizeof code / sizeof code[0], code};
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

int main(int argc, char** argv) {
  int i = 1;
  int sync_wakeup = 1;
  if (i < argc && strcmp(argv[i], "--no-sync-wakeup") == 0) sync_wakeup = 0, ++i;
  if (i < argc && strcmp(argv[i], "--") == 0) ++i;
  if (i >= argc) {
    fprintf(stderr, "usage: ss-notify-floor [--no-sync-wakeup] -- PROGRAM [ARGS...]\n");
    return 2;
  }
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) die("socketpair");
  pid_t child = fork();
  if (child < 0) die("fork");
  if (child == 0) {
    close(sv[0]);
    int fd = install_filter();
    send_fd(sv[1], fd);
    close(fd);
    char go;
    if (read(sv[1], &go, 1) != 1) _exit(126);  // the supervisor holds the fd: run
    execvp(argv[i], &argv[i]);
    fprintf(stderr, "ss-notify-floor: exec %s: %s\n", argv[i], strerror(errno));
    _exit(127);
  }
  close(sv[1]);
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
