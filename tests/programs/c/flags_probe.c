// flags_probe: the flags and address arguments of the send/recv family on a connected stream
// socket, one case per line, so that a run over a switched connection can be compared with a
// native TCP run line by line (tests/integration/test_switch_flags.py).
//
//   flags_probe [--unix] [--list] [CASE...]
//
// Each case gets a fresh connection: a TCP loopback connection (connect + accept in this process),
// or with --unix a plain AF_UNIX socketpair, which shows what the kernel itself does differently
// (the list of things Slipstream must answer). A case prints "NAME: observations", where
// observations are the call's result (ret=N or err=ENAME), the bytes it returned, whether a
// canary buffer was touched, and what is left in the stream afterwards (rest=...).
// The last line is "evidence: unix=N tcp=M": how many of the receiving fds were, while the case
// ran, AF_UNIX sockets in /proc/net/unix and TCP sockets in /proc/net/tcp (the kernel's view).
#include "fixture.h"  // first: it defines _GNU_SOURCE

#include <pthread.h>
#include <signal.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/time.h>

#ifndef MSG_ZEROCOPY
#define MSG_ZEROCOPY 0x4000000
#endif

static int unix_mode;
static int listener = -1;
static struct sockaddr_in listen_addr;
static int evidence_unix, evidence_tcp;

static const char kPayload[] = "0123456789";  // what the peer sent, unless a case says otherwise

// ---- Output -----------------------------------------------------------------------------------

static char line[4096];

static void Add(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
static void Add(const char* fmt, ...) {
  size_t used = strlen(line);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line + used, sizeof(line) - used, fmt, ap);
  va_end(ap);
}

static void Result(const char* what, ssize_t r) {
  if (r < 0) {
    Add(" %s=%s", what, fx_errno_name(errno));
  } else {
    Add(" %s=%zd", what, r);
  }
}

static void Bytes(const char* what, const char* buf, ssize_t n) {
  Add(" %s=", what);
  if (n <= 0) {
    Add("-");
    return;
  }
  for (ssize_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)buf[i];
    Add(c > ' ' && c < 127 ? "%c" : "\\x%02x", c);
  }
}

// What is left to read: everything available within 100 ms of quiet, without blocking.
static void Rest(int fd) {
  static char buf[1 << 16];
  size_t have = 0;
  for (;;) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) break;
    ssize_t n = recv(fd, buf + have, sizeof(buf) - have, MSG_DONTWAIT);
    if (n <= 0) {
      if (n == 0 && have == 0) Add(" rest=EOF");
      break;
    }
    have += (size_t)n;
    if (have == sizeof(buf)) break;
  }
  if (have > 64) {
    Add(" rest=%zu bytes", have);
  } else if (have > 0) {
    Bytes("rest", buf, (ssize_t)have);
  } else if (!strstr(line, "rest=EOF")) {
    Add(" rest=-");
  }
}

// ---- Connections ------------------------------------------------------------------------------

static void Setup(void) {
  if (unix_mode) return;
  listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) fx_die("socket");
  listen_addr.sin_family = AF_INET;
  listen_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(listen_addr);
  if (bind(listener, (struct sockaddr*)&listen_addr, len) < 0) fx_die("bind");
  if (getsockname(listener, (struct sockaddr*)&listen_addr, &len) < 0) fx_die("getsockname");
  if (listen(listener, 16) < 0) fx_die("listen");
}

// `a` is the client end (the sender in most cases), `b` the accepted end.
static void Pair(int* a, int* b) {
  if (unix_mode) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) fx_die("socketpair");
    *a = sv[0];
    *b = sv[1];
    return;
  }
  *a = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (*a < 0) fx_die("socket");
  if (connect(*a, (struct sockaddr*)&listen_addr, sizeof(listen_addr)) < 0) fx_die("connect");
  *b = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
  if (*b < 0) fx_die("accept");
}

static int InodeListed(const char* path, unsigned long ino, int column) {
  FILE* f = fopen(path, "r");
  if (f == NULL) return 0;
  char text[512];
  int found = 0;
  while (!found && fgets(text, sizeof(text), f)) {
    char* save = NULL;
    char* tok = strtok_r(text, " \t\n", &save);
    for (int i = 0; tok != NULL && i < column; i++) tok = strtok_r(NULL, " \t\n", &save);
    if (tok != NULL && strtoul(tok, NULL, 10) == ino) found = 1;
  }
  fclose(f);
  return found;
}

// The kernel's view of `fd`: an AF_UNIX socket (/proc/net/unix) or a TCP socket (/proc/net/tcp).
static void Evidence(int fd) {
  struct stat st;
  if (fstat(fd, &st) < 0) return;
  if (InodeListed("/proc/net/unix", st.st_ino, 6)) evidence_unix++;
  if (InodeListed("/proc/net/tcp", st.st_ino, 9)) evidence_tcp++;
}

// ---- Helpers of the cases ---------------------------------------------------------------------

static void Send(int fd, const char* data) {
  if (fx_write_all(fd, data, strlen(data)) < 0) fx_die("send");
}

// Waits until `fd` has `n` bytes to read (both kernels report their queue through SIOCINQ).
static void Arrived(int fd, int n) {
  for (int i = 0; i < 2000; i++) {
    int inq = 0;
    if (ioctl(fd, SIOCINQ, &inq) == 0 && inq >= n) return;
    usleep(1000);
  }
}

struct Later {
  pthread_t thread;
  int fd;
  int delay_ms;
  const char* data;
  int shut;  // shutdown(SHUT_WR) after sending
};

static void* LaterMain(void* arg) {
  struct Later* l = arg;
  usleep((useconds_t)l->delay_ms * 1000);
  // Not fx_write_all: a case whose reader failed closes its end, and the writer must then stop.
  for (size_t off = 0, len = l->data ? strlen(l->data) : 0; off < len;) {
    ssize_t n = send(l->fd, l->data + off, len - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    off += (size_t)n;
  }
  if (l->shut) shutdown(l->fd, SHUT_WR);
  return NULL;
}

// Sends `data` on `fd` after `delay_ms`, from another thread; Join() before the case ends.
static void SendLater(struct Later* l, int fd, int delay_ms, const char* data, int shut) {
  l->fd = fd;
  l->delay_ms = delay_ms;
  l->data = data;
  l->shut = shut;
  if (pthread_create(&l->thread, NULL, LaterMain, l) != 0) fx_die("pthread_create");
}

static void Join(struct Later* l) { pthread_join(l->thread, NULL); }

static void OnAlarm(int sig) { (void)sig; }

// A SIGALRM (handler without SA_RESTART) in `ms` milliseconds.
static void AlarmIn(int ms) {
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = OnAlarm;
  sigaction(SIGALRM, &sa, NULL);
  struct itimerval it = {{0, 0}, {ms / 1000, (ms % 1000) * 1000}};
  setitimer(ITIMER_REAL, &it, NULL);
}

static void RcvTimeout(int fd, int ms) {
  struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
  if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0) fx_die("SO_RCVTIMEO");
}

static const char k52[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP";  // 52 bytes

// ---- The recv family --------------------------------------------------------------------------

static ssize_t RecvfromCase(int b, void* buf, size_t len, int flags) {
  return recvfrom(b, buf, len, flags, NULL, NULL);
}

// recv(buf, len, flags) with the payload already queued: result, bytes, rest.
static void RecvSimple(int a, int b, size_t len, int flags) {
  Send(a, kPayload);
  Arrived(b, (int)strlen(kPayload));
  char buf[64];
  ssize_t r = RecvfromCase(b, buf, len, flags);
  Result("ret", r);
  Bytes("data", buf, r);
  Rest(b);
}

static void r_plain(int a, int b) { RecvSimple(a, b, 5, 0); }
static void r_peek(int a, int b) { RecvSimple(a, b, 5, MSG_PEEK); }
static void r_waitall(int a, int b) { RecvSimple(a, b, 5, MSG_WAITALL); }
static void r_dontwait(int a, int b) { RecvSimple(a, b, 5, MSG_DONTWAIT); }
static void r_cmsg_cloexec(int a, int b) { RecvSimple(a, b, 5, MSG_CMSG_CLOEXEC); }
static void r_errqueue(int a, int b) { RecvSimple(a, b, 5, MSG_ERRQUEUE); }
static void r_errqueue_peek(int a, int b) { RecvSimple(a, b, 5, MSG_ERRQUEUE | MSG_PEEK); }
static void r_oob_none(int a, int b) { RecvSimple(a, b, 5, MSG_OOB); }

static void r_dontwait_empty(int a, int b) {
  (void)a;
  char buf[8];
  Result("ret", recv(b, buf, sizeof(buf), MSG_DONTWAIT));
}

static void r_oob(int a, int b) {
  Send(a, "abc");
  Result("send_oob", send(a, "X", 1, MSG_OOB));
  Arrived(b, 3);
  usleep(20000);
  char buf[8];
  ssize_t r = recv(b, buf, sizeof(buf), MSG_OOB);
  Result("ret", r);
  Bytes("data", buf, r);
  Rest(b);
}

static void r_waitall_staggered(int a, int b) {
  struct Later l;
  Send(a, "0");
  SendLater(&l, a, 50, "123456789", 0);
  char buf[16];
  ssize_t r = recv(b, buf, 10, MSG_WAITALL);
  Join(&l);
  Result("ret", r);
  Bytes("data", buf, r);
  Rest(b);
}

// The protocol sniffing: 1 byte, then 51 more 50 ms later; peek 5 with MSG_WAITALL.
static void PeekWaitall(int a, int b, int flags) {
  struct Later l;
  Send(a, "0");
  Arrived(b, 1);
  SendLater(&l, a, 50, k52 + 1, 0);
  char buf[8];
  ssize_t r = recv(b, buf, 5, flags);
  Join(&l);
  Result("ret", r);
  Bytes("data", buf, r);
  Rest(b);
}

static void r_peek_waitall(int a, int b) { PeekWaitall(a, b, MSG_PEEK | MSG_WAITALL); }

static void r_peek_waitall_ready(int a, int b) { RecvSimple(a, b, 5, MSG_PEEK | MSG_WAITALL); }

static void r_peek_waitall_dontwait(int a, int b) {
  Send(a, "012");
  Arrived(b, 3);
  char buf[8];
  ssize_t r = recv(b, buf, 5, MSG_PEEK | MSG_WAITALL | MSG_DONTWAIT);
  Result("ret", r);
  Bytes("data", buf, r);
  Rest(b);
}

static void r_peek_waitall_nonblock(int a, int b) {
  fx_set_nonblocking(b, 1);
  r_peek_waitall_dontwait(a, b);
}

static void r_peek_waitall_eof(int a, int b) {
  struct Later l;
  Send(a, "01");
  SendLater(&l, a, 50, NULL, 1);
  char buf[8];
  ssize_t r = recv(b, buf, 5, MSG_PEEK | MSG_WAITALL);
  Join(&l);
  Result("ret", r);
  Bytes("data", buf, r);
  Rest(b);
}

static void r_peek_waitall_timeout(int a, int b) {
  Send(a, "012");
  Arrived(b, 3);
  RcvTimeout(b, 100);
  char buf[8];
  ssize_t r = recv(b, buf, 5, MSG_PEEK | MSG_WAITALL);
  Result("ret", r);
  Bytes("data", buf, r);
  Rest(b);
}

static void r_peek_waitall_timeout_empty(int a, int b) {
  (void)a;
  RcvTimeout(b, 100);
  char buf[8];
  Result("ret", recv(b, buf, 5, MSG_PEEK | MSG_WAITALL));
}

static void r_peek_waitall_signal(int a, int b) {
  Send(a, "012");
  Arrived(b, 3);
  AlarmIn(50);
  char buf[8];
  ssize_t r = recv(b, buf, 5, MSG_PEEK | MSG_WAITALL);
  Result("ret", r);
  Bytes("data", buf, r);
  Rest(b);
}

static void r_peek_waitall_signal_empty(int a, int b) {
  (void)a;
  AlarmIn(50);
  char buf[8];
  Result("ret", recv(b, buf, 5, MSG_PEEK | MSG_WAITALL));
}

// MSG_TRUNC: TCP discards the bytes without copying them anywhere.
static void r_trunc_null(int a, int b) {
  Send(a, kPayload);
  Arrived(b, 10);
  Result("ret", recv(b, NULL, 5, MSG_TRUNC));
  Rest(b);
}

static void r_trunc_short_buffer(int a, int b) {
  Send(a, kPayload);
  Arrived(b, 10);
  char buf[16];
  memset(buf, 'x', sizeof(buf));
  // Asks for 8 bytes with a buffer of 16: TCP must leave the buffer untouched.
  Result("ret", recv(b, buf, 8, MSG_TRUNC));
  Bytes("buf", buf, 16);
  Rest(b);
}

static void r_trunc_more_than_queued(int a, int b) {
  Send(a, kPayload);
  Arrived(b, 10);
  Result("ret", recv(b, NULL, 20, MSG_TRUNC));
  Rest(b);
}

static void r_trunc_peek(int a, int b) {
  Send(a, kPayload);
  Arrived(b, 10);
  Result("ret", recv(b, NULL, 5, MSG_TRUNC | MSG_PEEK));
  Rest(b);
}

static void r_trunc_waitall(int a, int b) {
  struct Later l;
  Send(a, "0");
  SendLater(&l, a, 50, "123456789", 0);
  Result("ret", recv(b, NULL, 8, MSG_TRUNC | MSG_WAITALL));
  Join(&l);
  Rest(b);
}

static void r_trunc_blocking(int a, int b) {
  struct Later l;
  SendLater(&l, a, 50, kPayload, 0);
  Result("ret", recv(b, NULL, 5, MSG_TRUNC));
  Join(&l);
  Rest(b);
}

static void r_trunc_dontwait_empty(int a, int b) {
  (void)a;
  Result("ret", recv(b, NULL, 5, MSG_TRUNC | MSG_DONTWAIT));
}

static void r_trunc_eof(int a, int b) {
  Send(a, "012");
  shutdown(a, SHUT_WR);
  Arrived(b, 3);
  Result("ret", recv(b, NULL, 5, MSG_TRUNC | MSG_WAITALL));
  Result("again", recv(b, NULL, 5, MSG_TRUNC));
}

static void r_trunc_timeout(int a, int b) {
  Send(a, "012");
  Arrived(b, 3);
  RcvTimeout(b, 100);
  Result("ret", recv(b, NULL, 5, MSG_TRUNC | MSG_WAITALL));
  Result("again", recv(b, NULL, 5, MSG_TRUNC));
}

static void r_trunc_signal(int a, int b) {
  Send(a, "012");
  Arrived(b, 3);
  AlarmIn(50);
  Result("ret", recv(b, NULL, 5, MSG_TRUNC | MSG_WAITALL));
  Rest(b);
}

static void r_trunc_signal_empty(int a, int b) {
  (void)a;
  AlarmIn(50);
  Result("ret", recv(b, NULL, 5, MSG_TRUNC));
}

static void r_trunc_large(int a, int b) {
  // 300 000 bytes discarded by a reader while the writer is still writing.
  static char big[300000];
  memset(big, 'q', sizeof(big));
  struct Later l;
  big[sizeof(big) - 1] = 0;
  SendLater(&l, a, 10, big, 0);
  ssize_t r = recv(b, NULL, sizeof(big) - 1 - 5, MSG_TRUNC | MSG_WAITALL);
  Result("ret", r);
  if (r < 0) shutdown(b, SHUT_RDWR);  // stops the writer
  Join(&l);
  Rest(b);
}

// recvfrom with an address: TCP stores an address length of 0 and leaves the address alone.
static void r_from_addr(int a, int b) {
  Send(a, kPayload);
  Arrived(b, 10);
  char buf[8];
  struct sockaddr_storage ss;
  memset(&ss, 0x55, sizeof(ss));
  socklen_t len = sizeof(ss);
  ssize_t r = recvfrom(b, buf, 5, 0, (struct sockaddr*)&ss, &len);
  Result("ret", r);
  Bytes("data", buf, r);
  Add(" addrlen=%u family=%d", len, ss.ss_family);
  Rest(b);
}

static void r_from_addr_short_len(int a, int b) {
  Send(a, kPayload);
  Arrived(b, 10);
  char buf[8];
  struct sockaddr_storage ss;
  memset(&ss, 0x55, sizeof(ss));
  socklen_t len = 1;
  ssize_t r = recvfrom(b, buf, 5, MSG_PEEK, (struct sockaddr*)&ss, &len);
  Result("ret", r);
  Add(" addrlen=%u family=%d", len, ss.ss_family);
  Rest(b);
}

static void r_from_addr_negative_len(int a, int b) {
  Send(a, kPayload);
  Arrived(b, 10);
  char buf[8];
  struct sockaddr_storage ss;
  int len = -1;
  Result("ret", recvfrom(b, buf, 5, 0, (struct sockaddr*)&ss, (socklen_t*)&len));
  Rest(b);
}

static void r_from_addr_bad_len_ptr(int a, int b) {
  Send(a, kPayload);
  Arrived(b, 10);
  char buf[8];
  struct sockaddr_storage ss;
  Result("ret", recvfrom(b, buf, 5, 0, (struct sockaddr*)&ss, (socklen_t*)8));
  Rest(b);
}

static void r_from_addr_bad_buffer(int a, int b) {
  Send(a, kPayload);
  Arrived(b, 10);
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  Result("ret", recvfrom(b, (void*)8, 5, 0, (struct sockaddr*)&ss, &len));
  Rest(b);
}

static void r_from_addr_blocking(int a, int b) {
  struct Later l;
  SendLater(&l, a, 50, kPayload, 0);
  char buf[16];
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  ssize_t r = recvfrom(b, buf, 10, MSG_WAITALL, (struct sockaddr*)&ss, &len);
  Join(&l);
  Result("ret", r);
  Bytes("data", buf, r);
  Add(" addrlen=%u", len);
}

static void r_from_addr_eof(int a, int b) {
  shutdown(a, SHUT_WR);
  char buf[8];
  struct sockaddr_storage ss;
  memset(&ss, 0x55, sizeof(ss));
  socklen_t len = sizeof(ss);
  Result("ret", recvfrom(b, buf, 5, 0, (struct sockaddr*)&ss, &len));
  Add(" addrlen=%u family=%d", len, ss.ss_family);
}

static void r_from_addr_trunc(int a, int b) {
  Send(a, kPayload);
  Arrived(b, 10);
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  Result("ret", recvfrom(b, NULL, 5, MSG_TRUNC, (struct sockaddr*)&ss, &len));
  Add(" addrlen=%u", len);
  Rest(b);
}

static void r_from_addr_large(int a, int b) {
  static char big[200001];
  memset(big, 'z', sizeof(big) - 1);
  static char in[200000];
  struct Later l;
  SendLater(&l, a, 10, big, 0);
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  ssize_t r = recvfrom(b, in, sizeof(in), MSG_WAITALL, (struct sockaddr*)&ss, &len);
  Join(&l);
  Result("ret", r);
  Add(" same=%d addrlen=%u", r == (ssize_t)sizeof(in) && memcmp(in, big, sizeof(in)) == 0, len);
}

// recvmsg: one iovec of `len` bytes at `base`.
static ssize_t Recvmsg(int b, void* base, size_t len, int flags, struct msghdr* m,
                       struct sockaddr_storage* name) {
  static struct iovec iov;
  iov.iov_base = base;
  iov.iov_len = len;
  memset(m, 0, sizeof(*m));
  if (name) {
    memset(name, 0x55, sizeof(*name));
    m->msg_name = name;
    m->msg_namelen = sizeof(*name);
  }
  m->msg_iov = &iov;
  m->msg_iovlen = 1;
  m->msg_flags = 0x7777;
  return recvmsg(b, m, flags);
}

static void MsgFields(const struct msghdr* m) {
  Add(" namelen=%u controllen=%zu msg_flags=%#x", m->msg_namelen, m->msg_controllen,
      m->msg_flags);
}

static void m_plain(int a, int b) {
  Send(a, kPayload);
  Arrived(b, 10);
  char buf[8];
  struct msghdr m;
  ssize_t r = Recvmsg(b, buf, 5, 0, &m, NULL);
  Result("ret", r);
  Bytes("data", buf, r);
  MsgFields(&m);
  Rest(b);
}

static void m_name(int a, int b) {
  Send(a, kPayload);
  Arrived(b, 10);
  char buf[8];
  struct msghdr m;
  struct sockaddr_storage name;
  ssize_t r = Recvmsg(b, buf, 5, 0, &m, &name);
  Result("ret", r);
  MsgFields(&m);
  Add(" family=%d", name.ss_family);
  Rest(b);
}

static void m_trunc_null(int a, int b) {
  Send(a, kPayload);
  Arrived(b, 10);
  struct msghdr m;
  Result("ret", Recvmsg(b, NULL, 5, MSG_TRUNC, &m, NULL));
  MsgFields(&m);
  Rest(b);
}

static void m_trunc_name(int a, int b) {
  Send(a, kPayload);
  Arrived(b, 10);
  struct msghdr m;
  struct sockaddr_storage name;
  Result("ret", Recvmsg(b, NULL, 5, MSG_TRUNC, &m, &name));
  MsgFields(&m);
  Add(" family=%d", name.ss_family);
  Rest(b);
}

static void m_trunc_waitall(int a, int b) {
  struct Later l;
  Send(a, "0");
  SendLater(&l, a, 50, "123456789", 0);
  struct msghdr m;
  Result("ret", Recvmsg(b, NULL, 8, MSG_TRUNC | MSG_WAITALL, &m, NULL));
  Join(&l);
  MsgFields(&m);
  Rest(b);
}

static void m_peek_waitall(int a, int b) {
  struct Later l;
  Send(a, "0");
  Arrived(b, 1);
  SendLater(&l, a, 50, k52 + 1, 0);
  char buf[8];
  struct msghdr m;
  ssize_t r = Recvmsg(b, buf, 5, MSG_PEEK | MSG_WAITALL, &m, NULL);
  Join(&l);
  Result("ret", r);
  Bytes("data", buf, r);
  MsgFields(&m);
  Rest(b);
}

static void m_errqueue(int a, int b) {
  Send(a, kPayload);
  Arrived(b, 10);
  char buf[8];
  struct msghdr m;
  ssize_t r = Recvmsg(b, buf, 5, MSG_ERRQUEUE, &m, NULL);
  Result("ret", r);
  Rest(b);
}

static void m_cmsg_cloexec(int a, int b) {
  Send(a, kPayload);
  Arrived(b, 10);
  char buf[8];
  struct msghdr m;
  ssize_t r = Recvmsg(b, buf, 5, MSG_CMSG_CLOEXEC, &m, NULL);
  Result("ret", r);
  MsgFields(&m);
  Rest(b);
}

// recvmmsg with one message.
static void MmsgCase(int a, int b, void* base, size_t len, int flags, int stagger) {
  struct Later l;
  if (stagger) {
    Send(a, "0");
    Arrived(b, 1);
    SendLater(&l, a, 50, k52 + 1, 0);
  } else {
    Send(a, kPayload);
    Arrived(b, 10);
  }
  struct iovec iov = {base, len};
  struct mmsghdr mm;
  memset(&mm, 0, sizeof(mm));
  mm.msg_hdr.msg_iov = &iov;
  mm.msg_hdr.msg_iovlen = 1;
  mm.msg_len = 0x7777;
  ssize_t r = recvmmsg(b, &mm, 1, flags, NULL);
  if (stagger) Join(&l);
  Result("ret", r);
  Add(" msg_len=%u", mm.msg_len);
  if (base) Bytes("data", base, r > 0 ? (ssize_t)mm.msg_len : 0);
  MsgFields(&mm.msg_hdr);
  Rest(b);
}

static void mm_plain(int a, int b) {
  char buf[8];
  MmsgCase(a, b, buf, 5, 0, 0);
}
static void mm_trunc_null(int a, int b) { MmsgCase(a, b, NULL, 5, MSG_TRUNC, 0); }
static void mm_peek_waitall(int a, int b) {
  char buf[8];
  MmsgCase(a, b, buf, 5, MSG_PEEK | MSG_WAITALL, 1);
}
static void mm_errqueue(int a, int b) {
  char buf[8];
  MmsgCase(a, b, buf, 5, MSG_ERRQUEUE, 0);
}

// ---- The send family --------------------------------------------------------------------------

// send(flags) of "hello": result, and what the peer can read.
static void SendFlags(int a, int b, int flags) {
  Result("ret", send(a, "hello", 5, flags));
  Rest(b);
}

static void s_plain(int a, int b) { SendFlags(a, b, 0); }
static void s_more(int a, int b) {
  Result("ret", send(a, "hello", 5, MSG_MORE));
  // TCP holds the partial segment back (like TCP_CORK) until the next send without MSG_MORE.
  struct pollfd p = {b, POLLIN, 0};
  Add(" readable_at_once=%d", poll(&p, 1, 50));
  Result("ret2", send(a, "!", 1, 0));
  Rest(b);
}
static void s_confirm(int a, int b) { SendFlags(a, b, MSG_CONFIRM); }
static void s_dontroute(int a, int b) { SendFlags(a, b, MSG_DONTROUTE); }
static void s_eor(int a, int b) { SendFlags(a, b, MSG_EOR); }
static void s_nosignal(int a, int b) { SendFlags(a, b, MSG_NOSIGNAL); }
static void s_dontwait(int a, int b) { SendFlags(a, b, MSG_DONTWAIT); }
static void s_zerocopy(int a, int b) { SendFlags(a, b, MSG_ZEROCOPY); }
static void s_fastopen(int a, int b) { SendFlags(a, b, MSG_FASTOPEN); }
static void s_oob(int a, int b) { SendFlags(a, b, MSG_OOB); }
static void s_waitall(int a, int b) { SendFlags(a, b, MSG_WAITALL); }
static void s_trunc(int a, int b) { SendFlags(a, b, MSG_TRUNC); }
static void s_peek(int a, int b) { SendFlags(a, b, MSG_PEEK); }

// The address of the connected peer, as a program that reuses datagram code would pass it.
static socklen_t PeerAddr(int a, struct sockaddr_storage* ss) {
  socklen_t len = sizeof(*ss);
  if (getpeername(a, (struct sockaddr*)ss, &len) < 0) {
    // An AF_UNIX socketpair has no peer address; any address will do for the probe.
    struct sockaddr_in* in = (struct sockaddr_in*)ss;
    memset(ss, 0, sizeof(*ss));
    in->sin_family = AF_INET;
    in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    in->sin_port = htons(9);
    len = sizeof(*in);
  }
  return len;
}

static void SendtoCase(int a, int b, socklen_t len_override, int use_len, int flags) {
  struct sockaddr_storage ss;
  socklen_t len = PeerAddr(a, &ss);
  if (use_len) len = len_override;
  Result("ret", sendto(a, "hello", 5, flags, (struct sockaddr*)&ss, len));
  Rest(b);
}

static void st_addr(int a, int b) { SendtoCase(a, b, 0, 0, 0); }
static void st_addr_len1(int a, int b) { SendtoCase(a, b, 1, 1, 0); }
static void st_addr_len0(int a, int b) { SendtoCase(a, b, 0, 1, 0); }
static void st_addr_len128(int a, int b) { SendtoCase(a, b, 128, 1, 0); }
static void st_addr_len129(int a, int b) { SendtoCase(a, b, 129, 1, 0); }
static void st_addr_len_negative(int a, int b) { SendtoCase(a, b, (socklen_t)-1, 1, 0); }
static void st_addr_dontwait(int a, int b) { SendtoCase(a, b, 0, 0, MSG_DONTWAIT); }
static void st_addr_oob(int a, int b) { SendtoCase(a, b, 0, 0, MSG_OOB); }
static void st_addr_fastopen(int a, int b) { SendtoCase(a, b, 0, 0, MSG_FASTOPEN); }
static void st_addr_more(int a, int b) { SendtoCase(a, b, 0, 0, MSG_MORE | MSG_NOSIGNAL); }

static void st_addr_other(int a, int b) {
  struct sockaddr_in6 other;
  memset(&other, 0, sizeof(other));
  other.sin6_family = AF_INET6;
  other.sin6_port = htons(1);
  other.sin6_addr.s6_addr[15] = 1;
  Result("ret", sendto(a, "hello", 5, 0, (struct sockaddr*)&other, sizeof(other)));
  Rest(b);
}

static void st_addr_bad_pointer(int a, int b) {
  Result("ret", sendto(a, "hello", 5, 0, (struct sockaddr*)8, 16));
  Rest(b);
}

static void st_addr_bad_buffer(int a, int b) {
  struct sockaddr_storage ss;
  socklen_t len = PeerAddr(a, &ss);
  Result("ret", sendto(a, (void*)8, 5, 0, (struct sockaddr*)&ss, len));
  Rest(b);
}

static void st_addr_empty(int a, int b) {
  struct sockaddr_storage ss;
  socklen_t len = PeerAddr(a, &ss);
  Result("ret", sendto(a, "", 0, 0, (struct sockaddr*)&ss, len));
  Rest(b);
}

static void st_addr_after_shut_wr(int a, int b) {
  shutdown(a, SHUT_WR);
  struct sockaddr_storage ss;
  socklen_t len = PeerAddr(a, &ss);
  Result("ret", sendto(a, "hello", 5, MSG_NOSIGNAL, (struct sockaddr*)&ss, len));
  Rest(b);
}

static volatile sig_atomic_t sigpipes;
static void OnSigpipe(int sig) {
  (void)sig;
  sigpipes++;
}

// Without MSG_NOSIGNAL a send on a shut-down connection raises SIGPIPE, as for any send.
static void st_addr_sigpipe(int a, int b) {
  shutdown(a, SHUT_WR);
  struct sockaddr_storage ss;
  socklen_t len = PeerAddr(a, &ss);
  sigpipes = 0;
  signal(SIGPIPE, OnSigpipe);
  Result("ret", sendto(a, "hello", 5, 0, (struct sockaddr*)&ss, len));
  signal(SIGPIPE, SIG_IGN);
  Add(" sigpipe=%d", (int)sigpipes);
  Rest(b);
}

struct Drain {
  pthread_t thread;
  int fd;
  int delay_ms;  // before reading; 50 when 0
  size_t want;
  size_t got;
  uint64_t hash;
};

static void* DrainMain(void* arg) {
  struct Drain* d = arg;
  static char buf[1 << 15];
  d->hash = FX_FNV_OFFSET;
  usleep((useconds_t)(d->delay_ms ? d->delay_ms : 50) * 1000);  // let the sender fill it first
  while (d->got < d->want) {
    ssize_t n = recv(d->fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    d->hash = fx_fnv1a(d->hash, (uint8_t*)buf, (size_t)n);
    d->got += (size_t)n;
  }
  return NULL;
}

// 4 MiB in one blocking sendto with an address: more than either kernel buffers, so the sender
// must wait for the reader.
static void st_addr_large(int a, int b) {
  size_t size = 4u << 20;
  uint8_t* big = malloc(size);
  fx_pattern_fill(7, 0, big, size);
  struct Drain d = {.fd = b, .want = size};
  if (pthread_create(&d.thread, NULL, DrainMain, &d) != 0) fx_die("pthread_create");
  struct sockaddr_storage ss;
  socklen_t len = PeerAddr(a, &ss);
  ssize_t r = sendto(a, big, size, 0, (struct sockaddr*)&ss, len);
  Result("ret", r);
  if (r < 0) shutdown(a, SHUT_WR);  // the reader stops at EOF
  pthread_join(d.thread, NULL);
  Add(" received=%zu same=%d", d.got, d.hash == fx_pattern_hash(7, size));
  free(big);
}

// The same, interrupted by a signal while the connection is full: TCP returns what it sent.
static void st_addr_large_signal(int a, int b) {
  size_t size = 4u << 20;
  uint8_t* big = malloc(size);
  fx_pattern_fill(9, 0, big, size);
  struct sockaddr_storage ss;
  socklen_t len = PeerAddr(a, &ss);
  AlarmIn(100);
  ssize_t r = sendto(a, big, size, 0, (struct sockaddr*)&ss, len);
  int partial = r > 0 && (size_t)r < size;
  Add(" partial=%d", partial);
  // Whatever the count, exactly that many bytes reach the peer, in order.
  size_t got = 0;
  uint64_t hash = FX_FNV_OFFSET;
  static char buf[1 << 15];
  for (;;) {
    struct pollfd p = {b, POLLIN, 0};
    if (poll(&p, 1, 200) <= 0) break;
    ssize_t n = recv(b, buf, sizeof(buf), MSG_DONTWAIT);
    if (n <= 0) break;
    hash = fx_fnv1a(hash, (uint8_t*)buf, (size_t)n);
    got += (size_t)n;
  }
  Add(" consistent=%d", r > 0 && got == (size_t)r && hash == fx_pattern_hash(9, (uint64_t)r));
  free(big);
}

// The same with SA_RESTART and a reader that starts late: whatever the count, the reader gets
// exactly the bytes the count says, once each (a restarted call must not send anything twice).
static void st_addr_large_signal_restart(int a, int b) {
  size_t size = 4u << 20;
  uint8_t* big = malloc(size);
  fx_pattern_fill(11, 0, big, size);
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = OnAlarm;
  sa.sa_flags = SA_RESTART;
  sigaction(SIGALRM, &sa, NULL);
  struct itimerval it = {{0, 0}, {0, 100000}};
  setitimer(ITIMER_REAL, &it, NULL);
  struct Drain d = {.fd = b, .want = size};
  d.delay_ms = 300;
  if (pthread_create(&d.thread, NULL, DrainMain, &d) != 0) fx_die("pthread_create");
  struct sockaddr_storage ss;
  socklen_t len = PeerAddr(a, &ss);
  size_t sent = 0;
  while (sent < size) {  // a program that handles short counts
    ssize_t r = sendto(a, big + sent, size - sent, 0, (struct sockaddr*)&ss, len);
    if (r < 0) break;
    sent += (size_t)r;
  }
  shutdown(a, SHUT_WR);
  pthread_join(d.thread, NULL);
  Add(" sent=%zu received=%zu same=%d", sent, d.got, d.hash == fx_pattern_hash(11, size));
  free(big);
}

static void st_addr_nonblocking_full(int a, int b) {
  // Fill the connection first, then one sendto with an address: EAGAIN, as without the address.
  fx_set_nonblocking(a, 1);
  static char chunk[65536];
  while (send(a, chunk, sizeof(chunk), 0) > 0) {
  }
  struct sockaddr_storage ss;
  socklen_t len = PeerAddr(a, &ss);
  Result("ret", sendto(a, "hello", 5, 0, (struct sockaddr*)&ss, len));
  (void)b;
}

static void SendmsgCase(int a, int b, int with_name) {
  struct sockaddr_storage ss;
  socklen_t len = PeerAddr(a, &ss);
  struct iovec iov = {(void*)"hello", 5};
  struct msghdr m;
  memset(&m, 0, sizeof(m));
  if (with_name) {
    m.msg_name = &ss;
    m.msg_namelen = len;
  }
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  Result("ret", sendmsg(a, &m, 0));
  Rest(b);
}

static void sm_plain(int a, int b) { SendmsgCase(a, b, 0); }
static void sm_name(int a, int b) { SendmsgCase(a, b, 1); }

static void SendmmsgCase(int a, int b, int with_name) {
  struct sockaddr_storage ss;
  socklen_t len = PeerAddr(a, &ss);
  struct iovec iov[2] = {{(void*)"hello", 5}, {(void*)"world", 5}};
  struct mmsghdr mm[2];
  memset(mm, 0, sizeof(mm));
  for (int i = 0; i < 2; i++) {
    if (with_name) {
      mm[i].msg_hdr.msg_name = &ss;
      mm[i].msg_hdr.msg_namelen = len;
    }
    mm[i].msg_hdr.msg_iov = &iov[i];
    mm[i].msg_hdr.msg_iovlen = 1;
  }
  Result("ret", sendmmsg(a, mm, 2, 0));
  Add(" len0=%u len1=%u", mm[0].msg_len, mm[1].msg_len);
  Rest(b);
}

static void smm_plain(int a, int b) { SendmmsgCase(a, b, 0); }
static void smm_name(int a, int b) { SendmmsgCase(a, b, 1); }

// ---- The table --------------------------------------------------------------------------------

struct Case {
  const char* name;
  void (*run)(int a, int b);
};

static const struct Case kCases[] = {
    {"recv", r_plain},
    {"recv_peek", r_peek},
    {"recv_waitall", r_waitall},
    {"recv_waitall_staggered", r_waitall_staggered},
    {"recv_dontwait", r_dontwait},
    {"recv_dontwait_empty", r_dontwait_empty},
    {"recv_cmsg_cloexec", r_cmsg_cloexec},
    {"recv_errqueue", r_errqueue},
    {"recv_errqueue_peek", r_errqueue_peek},
    {"recv_oob_none", r_oob_none},
    {"recv_oob", r_oob},
    {"recv_peek_waitall", r_peek_waitall},
    {"recv_peek_waitall_ready", r_peek_waitall_ready},
    {"recv_peek_waitall_dontwait", r_peek_waitall_dontwait},
    {"recv_peek_waitall_nonblock", r_peek_waitall_nonblock},
    {"recv_peek_waitall_eof", r_peek_waitall_eof},
    {"recv_peek_waitall_timeout", r_peek_waitall_timeout},
    {"recv_peek_waitall_timeout_empty", r_peek_waitall_timeout_empty},
    {"recv_peek_waitall_signal", r_peek_waitall_signal},
    {"recv_peek_waitall_signal_empty", r_peek_waitall_signal_empty},
    {"recv_trunc_null", r_trunc_null},
    {"recv_trunc_short_buffer", r_trunc_short_buffer},
    {"recv_trunc_more_than_queued", r_trunc_more_than_queued},
    {"recv_trunc_peek", r_trunc_peek},
    {"recv_trunc_waitall", r_trunc_waitall},
    {"recv_trunc_blocking", r_trunc_blocking},
    {"recv_trunc_dontwait_empty", r_trunc_dontwait_empty},
    {"recv_trunc_eof", r_trunc_eof},
    {"recv_trunc_timeout", r_trunc_timeout},
    {"recv_trunc_signal", r_trunc_signal},
    {"recv_trunc_signal_empty", r_trunc_signal_empty},
    {"recv_trunc_large", r_trunc_large},
    {"recvfrom_addr", r_from_addr},
    {"recvfrom_addr_short_len", r_from_addr_short_len},
    {"recvfrom_addr_negative_len", r_from_addr_negative_len},
    {"recvfrom_addr_bad_len_ptr", r_from_addr_bad_len_ptr},
    {"recvfrom_addr_bad_buffer", r_from_addr_bad_buffer},
    {"recvfrom_addr_blocking", r_from_addr_blocking},
    {"recvfrom_addr_eof", r_from_addr_eof},
    {"recvfrom_addr_trunc", r_from_addr_trunc},
    {"recvfrom_addr_large", r_from_addr_large},
    {"recvmsg", m_plain},
    {"recvmsg_name", m_name},
    {"recvmsg_trunc_null", m_trunc_null},
    {"recvmsg_trunc_name", m_trunc_name},
    {"recvmsg_trunc_waitall", m_trunc_waitall},
    {"recvmsg_peek_waitall", m_peek_waitall},
    {"recvmsg_errqueue", m_errqueue},
    {"recvmsg_cmsg_cloexec", m_cmsg_cloexec},
    {"recvmmsg", mm_plain},
    {"recvmmsg_trunc_null", mm_trunc_null},
    {"recvmmsg_peek_waitall", mm_peek_waitall},
    {"recvmmsg_errqueue", mm_errqueue},
    {"send", s_plain},
    {"send_more", s_more},
    {"send_confirm", s_confirm},
    {"send_dontroute", s_dontroute},
    {"send_eor", s_eor},
    {"send_nosignal", s_nosignal},
    {"send_dontwait", s_dontwait},
    {"send_zerocopy", s_zerocopy},
    {"send_fastopen", s_fastopen},
    {"send_oob", s_oob},
    {"send_waitall", s_waitall},
    {"send_trunc", s_trunc},
    {"send_peek", s_peek},
    {"sendto_addr", st_addr},
    {"sendto_addr_other", st_addr_other},
    {"sendto_addr_len1", st_addr_len1},
    {"sendto_addr_len0", st_addr_len0},
    {"sendto_addr_len128", st_addr_len128},
    {"sendto_addr_len129", st_addr_len129},
    {"sendto_addr_len_negative", st_addr_len_negative},
    {"sendto_addr_bad_pointer", st_addr_bad_pointer},
    {"sendto_addr_bad_buffer", st_addr_bad_buffer},
    {"sendto_addr_empty", st_addr_empty},
    {"sendto_addr_dontwait", st_addr_dontwait},
    {"sendto_addr_oob", st_addr_oob},
    {"sendto_addr_fastopen", st_addr_fastopen},
    {"sendto_addr_more", st_addr_more},
    {"sendto_addr_after_shut_wr", st_addr_after_shut_wr},
    {"sendto_addr_sigpipe", st_addr_sigpipe},
    {"sendto_addr_large", st_addr_large},
    {"sendto_addr_large_signal", st_addr_large_signal},
    {"sendto_addr_large_signal_restart", st_addr_large_signal_restart},
    {"sendto_addr_nonblocking_full", st_addr_nonblocking_full},
    {"sendmsg", sm_plain},
    {"sendmsg_name", sm_name},
    {"sendmmsg", smm_plain},
    {"sendmmsg_name", smm_name},
};

static void RunCase(const struct Case* c) {
  int a, b;
  Pair(&a, &b);
  line[0] = 0;
  c->run(a, b);
  Evidence(b);
  printf("%s:%s\n", c->name, line);
  fflush(stdout);
  close(a);
  close(b);
}

int main(int argc, char** argv) {
  fx_program = "flags_probe";
  signal(SIGPIPE, SIG_IGN);
  int first = 1;
  for (; first < argc && argv[first][0] == '-'; first++) {
    if (strcmp(argv[first], "--unix") == 0) {
      unix_mode = 1;
    } else if (strcmp(argv[first], "--list") == 0) {
      for (size_t i = 0; i < sizeof(kCases) / sizeof(kCases[0]); i++) puts(kCases[i].name);
      return 0;
    } else {
      fprintf(stderr, "usage: flags_probe [--unix] [--list] [CASE...]\n");
      return 2;
    }
  }
  Setup();
  int ran = 0;
  for (size_t i = 0; i < sizeof(kCases) / sizeof(kCases[0]); i++) {
    int wanted = first == argc;
    for (int j = first; j < argc; j++) wanted |= strcmp(argv[j], kCases[i].name) == 0;
    if (!wanted) continue;
    RunCase(&kCases[i]);
    ran++;
  }
  printf("evidence: unix=%d tcp=%d\n", evidence_unix, evidence_tcp);
  return ran > 0 ? 0 : 2;
}
