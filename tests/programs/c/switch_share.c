// switch_share: one TCP connection used from several fds and processes, against an echo server
// (switch_peer server --mode echo), printing what each user of the connection sees.
//
//   switch_share fork-child-writes --port-file F [--hold]   the child writes, the parent reads
//   switch_share fork-parent-writes --port-file F [--hold]  the parent writes, the child reads
//   switch_share dup --port-file F [--hold]     dup, dup2, close the original, keep using the copy
//   switch_share exec --port-file F [--hold]    a forked child execs this program, which inherits
//                                               the fd and uses it
//   switch_share scm --port-file F [--hold]     the fd goes over SCM_RIGHTS to a child forked
//                                               before the connect
//   switch_share dup-before --port-file F [--hold]      copies made with dup, dup3 and
//                                               F_DUPFD_CLOEXEC before the connect are used for
//                                               writing and reading after it
//   switch_share fork-before --port-file F [--hold]     a child forked before the connect writes
//                                               through its inherited copy after it
//   switch_share scm-before --port-file F [--hold]      the unconnected socket goes over SCM_RIGHTS
//                                               to a child, which writes through it after the
//                                               parent's connect
//   switch_share send --port-file F --path P [--hold]   the fd goes over SCM_RIGHTS to another
//   switch_share receive --path P [--hold]              program (listening on AF_UNIX path P)
//
// Every process that gets the connection prints "ready share pid=P fd=F local=A peer=B" (the
// getsockname/getpeername answers it gets) and, with --hold, waits for a line on stdin; then it
// prints "<scenario>: <who>: ..." lines: getpeername, and echoes of its own messages.
#include "fixture.h"  // first: it defines _GNU_SOURCE

#include <signal.h>
#include <sys/un.h>
#include <sys/wait.h>

static int hold;
static const char* scenario = "?";

static void Gate(void) {
  char c;
  for (;;) {
    ssize_t n = read(0, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || c == '\n') return;
  }
}

static void Say(const char* who, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
static void Say(const char* who, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("%s: %s: ", scenario, who);
  vprintf(fmt, ap);
  printf("\n");
  fflush(stdout);
  va_end(ap);
}

static const char* NameText(int fd, int peer, char* buf, size_t len) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof(ss));
  socklen_t sl = sizeof(ss);
  int rc = peer ? getpeername(fd, (struct sockaddr*)&ss, &sl)
                : getsockname(fd, (struct sockaddr*)&ss, &sl);
  if (rc < 0) {
    snprintf(buf, len, "error-%s", fx_errno_name(errno));
    return buf;
  }
  char host[INET6_ADDRSTRLEN];
  fx_host_text(&ss, host, sizeof(host));
  if (ss.ss_family == AF_INET) {
    snprintf(buf, len, "%s:%d", host, fx_port_of(&ss));
  } else if (ss.ss_family == AF_INET6) {
    snprintf(buf, len, "[%s]:%d", host, fx_port_of(&ss));
  } else {
    snprintf(buf, len, "family%d", ss.ss_family);
  }
  return buf;
}

// Announces this process's use of the connection (and waits at the gate with --hold).
static void Ready(int fd) {
  char local[96], peer[96];
  printf("ready share pid=%d fd=%d local=%s peer=%s\n", (int)getpid(), fd,
         NameText(fd, 0, local, sizeof(local)), NameText(fd, 1, peer, sizeof(peer)));
  fflush(stdout);
  if (hold) Gate();
}

static void Names(int fd, const char* who) {
  char local[96], peer[96];
  Say(who, "getsockname %s getpeername %s", NameText(fd, 0, local, sizeof(local)),
      NameText(fd, 1, peer, sizeof(peer)));
}

static void Write(int fd, const char* who, const char* msg) {
  int rc = fx_write_all(fd, msg, strlen(msg));
  Say(who, "write %zu = %s", strlen(msg), rc == 0 ? "ok" : fx_errno_name(errno));
}

static void Read(int fd, const char* who, const char* want) {
  char buf[64];
  size_t len = strlen(want);
  ssize_t n = fx_read_full(fd, buf, len);
  Say(who, "read %zd %s", n, n == (ssize_t)len && memcmp(buf, want, len) == 0 ? "ok" : "wrong");
}

static int NewSocket(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fx_die("socket");
  return fd;
}

static void ConnectSocket(int fd, const char* port_file) {
  struct sockaddr_storage dest;
  socklen_t len = fx_make_addr("127.0.0.1", fx_read_port_file(port_file, 30), &dest);
  if (connect(fd, (struct sockaddr*)&dest, len) < 0) fx_die("connect");
}

static int Connect(const char* port_file) {
  int fd = NewSocket();
  ConnectSocket(fd, port_file);
  return fd;
}

static int WaitChild(pid_t pid) {
  int status;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) fx_die("waitpid");
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// The writer writes and the reader reads the echo; both look at the names.
static int Fork(const char* port_file, int child_writes) {
  int fd = Connect(port_file);
  Ready(fd);
  pid_t pid = fork();
  if (pid < 0) fx_die("fork");
  int is_child = pid == 0;
  const char* who = is_child ? "child" : "parent";
  Names(fd, who);
  if (is_child == child_writes) {
    Write(fd, who, "written by the writer\n");
  } else {
    Read(fd, who, "written by the writer\n");
  }
  if (is_child) _exit(0);
  int rc = WaitChild(pid);
  Say("parent", "child exit %d", rc);
  shutdown(fd, SHUT_WR);
  char c;
  Say("parent", "read at the end = %zd", fx_read_full(fd, &c, 1));
  close(fd);
  return 0;
}

static int Dup(const char* port_file) {
  int fd = Connect(port_file);
  Ready(fd);
  int copy = dup(fd);
  Names(copy, "dup");
  Write(copy, "dup", "via dup\n");
  Read(fd, "original", "via dup\n");
  close(fd);
  Names(copy, "dup after closing the original");
  Write(copy, "dup", "still\n");
  Read(copy, "dup", "still\n");
  if (dup2(copy, 100) != 100) fx_die("dup2");
  close(copy);
  Names(100, "dup2 to 100");
  Write(100, "fd 100", "via fd 100\n");
  Read(100, "fd 100", "via fd 100\n");
  shutdown(100, SHUT_WR);
  char c;
  Say("fd 100", "read at the end = %zd", fx_read_full(100, &c, 1));
  close(100);
  return 0;
}

static int ExecChild(int fd) {
  Ready(fd);
  Names(fd, "exec'd child");
  Write(fd, "exec'd child", "from the exec'd child\n");
  Read(fd, "exec'd child", "from the exec'd child\n");
  return 0;
}

static int Exec(const char* port_file) {
  int fd = Connect(port_file);
  Ready(fd);
  int flags = fcntl(fd, F_GETFD);
  if (fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC) < 0) fx_die("clear FD_CLOEXEC");
  pid_t pid = fork();
  if (pid < 0) fx_die("fork");
  if (pid == 0) {
    char fd_text[16];
    snprintf(fd_text, sizeof(fd_text), "%d", fd);
    char* args[] = {"switch_share", "exec-child", fd_text, hold ? "--hold" : NULL, NULL};
    execv("/proc/self/exe", args);
    fx_die("execv");
  }
  Say("parent", "child exit %d", WaitChild(pid));
  Names(fd, "parent");
  Write(fd, "parent", "from the parent\n");
  Read(fd, "parent", "from the parent\n");
  shutdown(fd, SHUT_WR);
  char c;
  Say("parent", "read at the end = %zd", fx_read_full(fd, &c, 1));
  close(fd);
  return 0;
}

static void SendFd(int channel, int fd) {
  char byte = 'f';
  struct iovec iov = {&byte, 1};
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } control;
  memset(&control, 0, sizeof(control));
  struct msghdr msg = {.msg_iov = &iov,
                       .msg_iovlen = 1,
                       .msg_control = control.buf,
                       .msg_controllen = sizeof(control.buf)};
  struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &fd, sizeof(int));
  if (sendmsg(channel, &msg, 0) != 1) fx_die("sendmsg");
}

static int ReceiveFd(int channel) {
  char byte;
  struct iovec iov = {&byte, 1};
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } control;
  struct msghdr msg = {.msg_iov = &iov,
                       .msg_iovlen = 1,
                       .msg_control = control.buf,
                       .msg_controllen = sizeof(control.buf)};
  if (recvmsg(channel, &msg, MSG_CMSG_CLOEXEC) != 1) fx_die("recvmsg");
  struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
  if (c == NULL || c->cmsg_type != SCM_RIGHTS) fx_die("no fd received");
  int fd;
  memcpy(&fd, CMSG_DATA(c), sizeof(int));
  return fd;
}

// Uses a connection received over `channel`, then tells the sender it is done.
static int UseReceived(int channel, const char* who) {
  int fd = ReceiveFd(channel);
  Ready(fd);
  Names(fd, who);
  Write(fd, who, "from the receiver\n");
  Read(fd, who, "from the receiver\n");
  close(fd);
  if (write(channel, "d", 1) != 1) fx_die("write done");
  return 0;
}

// The sender keeps its copy until the receiver is done, then uses it once more and ends it.
static void FinishSent(int fd, int channel) {
  char done;
  if (read(channel, &done, 1) != 1) fx_die("read done");
  Names(fd, "sender");
  Write(fd, "sender", "from the sender\n");
  Read(fd, "sender", "from the sender\n");
  shutdown(fd, SHUT_WR);
  char c;
  Say("sender", "read at the end = %zd", fx_read_full(fd, &c, 1));
  close(fd);
}

static int Scm(const char* port_file) {
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0) fx_die("socketpair");
  pid_t pid = fork();
  if (pid < 0) fx_die("fork");
  if (pid == 0) {
    close(pair[0]);
    _exit(UseReceived(pair[1], "receiver"));
  }
  close(pair[1]);
  int fd = Connect(port_file);
  Ready(fd);
  SendFd(pair[0], fd);
  FinishSent(fd, pair[0]);
  Say("sender", "child exit %d", WaitChild(pid));
  return 0;
}

// Copies of the socket made before its connect() are the same connection after it.
static int DupBefore(const char* port_file) {
  int fd = NewSocket();
  int copies[3] = {dup(fd), dup3(fd, 100, O_CLOEXEC), fcntl(fd, F_DUPFD_CLOEXEC, 200)};
  for (int i = 0; i < 3; ++i) {
    if (copies[i] < 0) fx_die("dup");
  }
  ConnectSocket(fd, port_file);
  Ready(fd);
  const char* who[3] = {"dup", "dup3", "F_DUPFD_CLOEXEC"};
  for (int i = 0; i < 3; ++i) {
    Names(copies[i], who[i]);
    Write(copies[i], who[i], "through a copy made before connect\n");
    Read(fd, "original", "through a copy made before connect\n");
    Write(fd, "original", "read through a copy\n");
    Read(copies[i], who[i], "read through a copy\n");
  }
  shutdown(copies[0], SHUT_WR);
  char c;
  Say("original", "read at the end = %zd", fx_read_full(fd, &c, 1));
  return 0;
}

// `go` is a pipe the parent writes one byte to once it has connected.
static void AwaitConnect(int go) {
  char byte;
  if (read(go, &byte, 1) != 1) fx_die("read go");
}

// Connects `fd`, tells the child (over `go`) to write `msg` through its copy, and reads the echo.
static int ConnectAndReadChild(int fd, const char* port_file, int go, pid_t child, const char* who,
                               const char* msg) {
  ConnectSocket(fd, port_file);
  Ready(fd);
  if (write(go, "g", 1) != 1) fx_die("write go");
  Say(who, "child exit %d", WaitChild(child));
  Read(fd, who, msg);
  shutdown(fd, SHUT_WR);
  char c;
  Say(who, "read at the end = %zd", fx_read_full(fd, &c, 1));
  return 0;
}

// A child forked before the connect writes through its copy after it; the parent reads the echo.
static int ForkBefore(const char* port_file) {
  int fd = NewSocket();
  int go[2];
  if (pipe(go) < 0) fx_die("pipe");
  pid_t pid = fork();
  if (pid < 0) fx_die("fork");
  if (pid == 0) {
    AwaitConnect(go[0]);
    Names(fd, "child");
    Write(fd, "child", "from the child forked before connect\n");
    _exit(0);
  }
  return ConnectAndReadChild(fd, port_file, go[1], pid, "parent",
                             "from the child forked before connect\n");
}

// The unconnected socket goes to a child over SCM_RIGHTS; the child writes after the connect.
static int ScmBefore(const char* port_file) {
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0) fx_die("socketpair");
  pid_t pid = fork();
  if (pid < 0) fx_die("fork");
  if (pid == 0) {
    close(pair[0]);
    int fd = ReceiveFd(pair[1]);
    if (write(pair[1], "r", 1) != 1) fx_die("write received");  // no longer in flight
    AwaitConnect(pair[1]);
    Names(fd, "receiver");
    Write(fd, "receiver", "from the receiver of the unconnected socket\n");
    _exit(0);
  }
  close(pair[1]);
  int fd = NewSocket();
  SendFd(pair[0], fd);
  char received;
  if (read(pair[0], &received, 1) != 1) fx_die("read received");
  return ConnectAndReadChild(fd, port_file, pair[0], pid, "sender",
                             "from the receiver of the unconnected socket\n");
}

static int UnixPathSocket(const char* path, int listen_on) {
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) fx_die("socket(AF_UNIX)");
  if (listen_on) {
    if (bind(s, (struct sockaddr*)&addr, sizeof(addr)) < 0 || listen(s, 1) < 0)
      fx_die("listen %s", path);
    return s;
  }
  double deadline = fx_now() + 30;
  while (connect(s, (struct sockaddr*)&addr, sizeof(addr)) < 0) {
    if (fx_now() > deadline) fx_die("connect %s", path);
    struct timespec pause = {0, 5 * 1000 * 1000};
    nanosleep(&pause, NULL);
  }
  return s;
}

static int Receive(const char* path) {
  int l = UnixPathSocket(path, 1);
  int channel = accept4(l, NULL, NULL, SOCK_CLOEXEC);
  if (channel < 0) fx_die("accept4(AF_UNIX)");
  return UseReceived(channel, "receiver");
}

static int Send(const char* port_file, const char* path) {
  int channel = UnixPathSocket(path, 0);
  int fd = Connect(port_file);
  Ready(fd);
  SendFd(channel, fd);
  FinishSent(fd, channel);
  return 0;
}

int main(int argc, char** argv) {
  fx_program = "switch_share";
  signal(SIGPIPE, SIG_IGN);
  if (argc < 2) goto usage;
  scenario = argv[1];
  const char* port_file = NULL;
  const char* path = NULL;
  int i = 2;
  if (strcmp(scenario, "exec-child") == 0) {
    if (argc < 3) goto usage;
    scenario = "exec";
    i = 3;
  }
  for (; i < argc; ++i) {
    if (strcmp(argv[i], "--hold") == 0) {
      hold = 1;
    } else if (i + 1 < argc && strcmp(argv[i], "--port-file") == 0) {
      port_file = argv[++i];
    } else if (i + 1 < argc && strcmp(argv[i], "--path") == 0) {
      path = argv[++i];
    } else {
      goto usage;
    }
  }
  if (strcmp(argv[1], "exec-child") == 0) return ExecChild((int)fx_parse_count("fd", argv[2]));
  if (strcmp(scenario, "receive") == 0 && path) return Receive(path);
  if (port_file == NULL) goto usage;
  if (strcmp(scenario, "fork-child-writes") == 0) return Fork(port_file, 1);
  if (strcmp(scenario, "fork-parent-writes") == 0) return Fork(port_file, 0);
  if (strcmp(scenario, "dup") == 0) return Dup(port_file);
  if (strcmp(scenario, "exec") == 0) return Exec(port_file);
  if (strcmp(scenario, "scm") == 0) return Scm(port_file);
  if (strcmp(scenario, "dup-before") == 0) return DupBefore(port_file);
  if (strcmp(scenario, "fork-before") == 0) return ForkBefore(port_file);
  if (strcmp(scenario, "scm-before") == 0) return ScmBefore(port_file);
  if (strcmp(scenario, "send") == 0 && path) return Send(port_file, path);
usage:
  fprintf(stderr, "usage: switch_share SCENARIO --port-file F [--path P] [--hold]\n");
  return 2;
}
