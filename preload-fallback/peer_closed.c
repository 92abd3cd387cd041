/* Writes to a switched socket whose peer has closed, as TCP answers them.
 *
 * Over TCP the first write after the peer's close succeeds (the bytes are lost: the peer answers
 * with a reset) and only the next one fails with EPIPE and SIGPIPE. On an AF_UNIX pair the first
 * already fails, with SIGPIPE (unix_stream_sendmsg() in net/unix/af_unix.c), which kills a
 * program that TCP lets live. The supervisor cannot help: write() is never trapped. Here, for the
 * fds the library saw come out of a switched connect() or accept(), writes are sent with
 * MSG_NOSIGNAL; the first EPIPE is answered as TCP's accepted write, later ones raise SIGPIPE the
 * way the kernel would (to the writing thread) unless the program asked for MSG_NOSIGNAL.
 *
 * Cost on every other write: one load and one branch. Not covered (docs/differences.md): fds the
 * library did not see being switched (a dup, an fd received over SCM_RIGHTS or across exec),
 * writes libc makes internally (stdio), sendfile and splice.
 *
 * Async-signal-safe, no allocation: two static byte tables indexed by fd. */
#define _DEFAULT_SOURCE

#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "peer_closed.h"

#include "names.h"
#include "self_memory.h"

#ifndef RTLD_NEXT
#define RTLD_NEXT ((void*)-1L)
#endif
#define EXPORT __attribute__((visibility("default")))

enum { kTrackedFds = 65536 };

/* kSwitched: a switched end whose writes go through Send(); kGraceUsed: the one write TCP accepts
 * after the peer's close has been accepted; kWriteShut: the program shut its own write side (its
 * EPIPE is TCP's at once); kReset: the peer closed with data unread, which over TCP is a reset
 * (the program read ECONNRESET, or a write found it pending): no write is accepted after it.
 * Written by the thread that owns the call; a racing close/reuse of the same fd number by two
 * threads is the program's own race. */
enum { kSwitched = 1, kGraceUsed = 2, kWriteShut = 4, kReset = 8 };
static unsigned char g_state[kTrackedFds];

typedef ssize_t (*write_fn)(int, const void*, size_t);
typedef ssize_t (*writev_fn)(int, const struct iovec*, int);
typedef ssize_t (*send_fn)(int, const void*, size_t, int);
typedef ssize_t (*sendto_fn)(int, const void*, size_t, int, const struct sockaddr*, socklen_t);
typedef ssize_t (*sendmsg_fn)(int, const struct msghdr*, int);
typedef ssize_t (*read_fn)(int, void*, size_t);
typedef ssize_t (*readv_fn)(int, const struct iovec*, int);
typedef ssize_t (*recv_fn)(int, void*, size_t, int);
typedef ssize_t (*recvfrom_fn)(int, void*, size_t, int, struct sockaddr*, socklen_t*);
typedef ssize_t (*recvmsg_fn)(int, struct msghdr*, int);
typedef int (*close_fn)(int);
typedef int (*dup2_fn)(int, int);
typedef int (*dup3_fn)(int, int, int);
typedef int (*shutdown_fn)(int, int);

static struct {
  write_fn write;
  writev_fn writev;
  send_fn send;
  sendto_fn sendto;
  sendmsg_fn sendmsg;
  read_fn read;
  readv_fn readv;
  recv_fn recv;
  recvfrom_fn recvfrom;
  recvmsg_fn recvmsg;
  close_fn close;
  dup2_fn dup2;
  dup3_fn dup3;
} real;

__attribute__((constructor)) static void InitPeerClosed(void) {
  real.write = (write_fn)dlsym(RTLD_NEXT, "write");
  real.writev = (writev_fn)dlsym(RTLD_NEXT, "writev");
  real.send = (send_fn)dlsym(RTLD_NEXT, "send");
  real.sendto = (sendto_fn)dlsym(RTLD_NEXT, "sendto");
  real.sendmsg = (sendmsg_fn)dlsym(RTLD_NEXT, "sendmsg");
  real.read = (read_fn)dlsym(RTLD_NEXT, "read");
  real.readv = (readv_fn)dlsym(RTLD_NEXT, "readv");
  real.recv = (recv_fn)dlsym(RTLD_NEXT, "recv");
  real.recvfrom = (recvfrom_fn)dlsym(RTLD_NEXT, "recvfrom");
  real.recvmsg = (recvmsg_fn)dlsym(RTLD_NEXT, "recvmsg");
  real.close = (close_fn)dlsym(RTLD_NEXT, "close");
  real.dup2 = (dup2_fn)dlsym(RTLD_NEXT, "dup2");
  real.dup3 = (dup3_fn)dlsym(RTLD_NEXT, "dup3");
}

static int Tracked(int fd) { return fd >= 0 && fd < kTrackedFds && (g_state[fd] & kSwitched) != 0; }

static void Forget(int fd) {
  if (fd >= 0 && fd < kTrackedFds) g_state[fd] = 0;
  slipstream_names_forget(fd);
}

void slipstream_note_tcp(int fd) { Forget(fd); }

void slipstream_note_connection(int fd) {
  if (fd < 0 || fd >= kTrackedFds) return;
  g_state[fd] = slipstream_preload_switching() && slipstream_may_switched(fd) ? kSwitched : 0;
}

/* SIGPIPE as the kernel sends it: to the writing thread, unless ignored (then nothing). */
static void RaiseSigpipe(void) {
  int saved = errno;
  syscall(SYS_tgkill, getpid(), (pid_t)syscall(SYS_gettid), SIGPIPE);
  errno = saved;
}

/* The write of `msg` on a tracked fd, with TCP's answer after the peer's close. `nosignal`: the
 * program itself passed MSG_NOSIGNAL. `total` is what a successful write would return. */
static ssize_t Send(int fd, const struct msghdr* msg, int flags, size_t total) {
  ssize_t r = real.sendmsg ? real.sendmsg(fd, msg, flags | MSG_NOSIGNAL)
                           : syscall(SYS_sendmsg, fd, msg, flags | MSG_NOSIGNAL);
  if (r >= 0 || errno != EPIPE) return r;
  unsigned char state = g_state[fd];
  if ((state & (kGraceUsed | kWriteShut | kReset)) == 0 &&
      slipstream_take_socket_error(fd) == ECONNRESET) {
    /* The peer closed with our data unread (unix_release_sock() left ECONNRESET pending here):
     * over TCP its reset is pending, and tcp_sendmsg() reports it, once and without SIGPIPE. */
    g_state[fd] = (unsigned char)(state | kReset);
    errno = ECONNRESET;
    return -1;
  }
  if ((state & (kGraceUsed | kWriteShut | kReset)) == 0 && slipstream_may_switched(fd)) {
    /* An empty write sends TCP nothing, so nothing draws the peer's reset: it returns 0 as often
     * as it is made (CPython's ssl_io_loop sends the empty output of its BIO, and its
     * test_bio_handshake failed with EPIPE on the second). */
    if (total == 0) return 0;
    g_state[fd] = (unsigned char)(state | kGraceUsed);
    return (ssize_t)total; /* TCP accepted it; the peer's reset made it vanish */
  }
  if ((flags & MSG_NOSIGNAL) == 0) RaiseSigpipe();
  errno = EPIPE;
  return -1;
}

static size_t Total(const struct iovec* iov, int n) {
  size_t total = 0;
  for (int i = 0; i < n; ++i) total += iov[i].iov_len;
  return total;
}

EXPORT ssize_t write(int fd, const void* buf, size_t n) {
  if (Tracked(fd)) {
    struct iovec iov = {(void*)buf, n};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    ssize_t r = Send(fd, &msg, 0, n);
    if (r >= 0 || errno != ENOTSOCK) return r;
    Forget(fd); /* the number names another file now: a plain write */
  }
  return real.write ? real.write(fd, buf, n) : syscall(SYS_write, fd, buf, n);
}

EXPORT ssize_t writev(int fd, const struct iovec* iov, int n) {
  if (Tracked(fd) && n >= 0) {
    struct msghdr msg = {.msg_iov = (struct iovec*)iov, .msg_iovlen = (size_t)n};
    ssize_t r = Send(fd, &msg, 0, Total(iov, n));
    if (r >= 0 || errno != ENOTSOCK) return r;
    Forget(fd);
  }
  return real.writev ? real.writev(fd, iov, n) : syscall(SYS_writev, fd, iov, n);
}

EXPORT ssize_t send(int fd, const void* buf, size_t n, int flags) {
  if (Tracked(fd)) {
    struct iovec iov = {(void*)buf, n};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    return Send(fd, &msg, flags, n);
  }
  return real.send ? real.send(fd, buf, n, flags) : syscall(SYS_sendto, fd, buf, n, flags, 0, 0);
}

EXPORT ssize_t sendto(int fd, const void* buf, size_t n, int flags, const struct sockaddr* addr,
                      socklen_t len) {
  /* With an address the supervisor answers (trapped): TCP ignores the address. */
  if (Tracked(fd) && addr == NULL) {
    struct iovec iov = {(void*)buf, n};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    return Send(fd, &msg, flags, n);
  }
  return real.sendto ? real.sendto(fd, buf, n, flags, addr, len)
                     : syscall(SYS_sendto, fd, buf, n, flags, addr, len);
}

EXPORT ssize_t sendmsg(int fd, const struct msghdr* msg, int flags) {
  if (Tracked(fd) && msg != NULL && msg->msg_iovlen <= 1024) {
    struct msghdr copy = *msg;
    if (copy.msg_name != NULL) {
      /* TCP ignores the destination of a connected socket once the kernel has checked its length
       * (move_addr_to_kernel); AF_UNIX would fail the call with EISCONN. */
      if (copy.msg_namelen > sizeof(struct sockaddr_storage)) {
        errno = EINVAL;
        return -1;
      }
      copy.msg_name = NULL;
      copy.msg_namelen = 0;
    }
    return Send(fd, &copy, flags, Total(msg->msg_iov, (int)msg->msg_iovlen));
  }
  return real.sendmsg ? real.sendmsg(fd, msg, flags) : syscall(SYS_sendmsg, fd, msg, flags);
}

/* Reads: one branch for fds that are not switched ends; on one, a reset reported by the read
 * (ECONNRESET) is remembered for the writes that follow. */
static ssize_t Received(int fd, ssize_t r) {
  if (r < 0 && errno == ECONNRESET) g_state[fd] |= kReset;
  return r;
}

EXPORT ssize_t read(int fd, void* buf, size_t n) {
  ssize_t r = real.read ? real.read(fd, buf, n) : syscall(SYS_read, fd, buf, n);
  return Tracked(fd) ? Received(fd, r) : r;
}

EXPORT ssize_t readv(int fd, const struct iovec* iov, int n) {
  ssize_t r = real.readv ? real.readv(fd, iov, n) : syscall(SYS_readv, fd, iov, n);
  return Tracked(fd) ? Received(fd, r) : r;
}

EXPORT ssize_t recv(int fd, void* buf, size_t n, int flags) {
  ssize_t r = real.recv ? real.recv(fd, buf, n, flags)
                        : syscall(SYS_recvfrom, fd, buf, n, flags, NULL, NULL);
  return Tracked(fd) ? Received(fd, r) : r;
}

EXPORT ssize_t recvfrom(int fd, void* buf, size_t n, int flags, struct sockaddr* addr,
                        socklen_t* len) {
  ssize_t r = real.recvfrom ? real.recvfrom(fd, buf, n, flags, addr, len)
                            : syscall(SYS_recvfrom, fd, buf, n, flags, addr, len);
  return Tracked(fd) ? Received(fd, r) : r;
}

EXPORT ssize_t recvmsg(int fd, struct msghdr* msg, int flags) {
  ssize_t r = real.recvmsg ? real.recvmsg(fd, msg, flags) : syscall(SYS_recvmsg, fd, msg, flags);
  return Tracked(fd) ? Received(fd, r) : r;
}

EXPORT int close(int fd) {
  Forget(fd);
  return real.close ? real.close(fd) : (int)syscall(SYS_close, fd);
}

EXPORT int dup2(int old_fd, int new_fd) {
  int r = real.dup2 ? real.dup2(old_fd, new_fd) : (int)syscall(SYS_dup2, old_fd, new_fd);
  if (r >= 0 && r != old_fd) Forget(r);
  return r;
}

EXPORT int dup3(int old_fd, int new_fd, int flags) {
  int r =
      real.dup3 ? real.dup3(old_fd, new_fd, flags) : (int)syscall(SYS_dup3, old_fd, new_fd, flags);
  if (r >= 0) Forget(r);
  return r;
}

void slipstream_note_socket_error(int fd, const void* value, const socklen_t* len) {
  if (!Tracked(fd)) return; /* one branch for every other socket */
  /* The program's memory, read as the kernel just wrote it; through process_vm_readv so that a
   * buffer another thread unmapped since gives no SIGSEGV here. */
  socklen_t n = 0;
  int err = 0;
  if (!slipstream_read_self(&n, len, sizeof(n)) || n < (socklen_t)sizeof(err) ||
      !slipstream_read_self(&err, value, sizeof(err))) {
    return;
  }
  if (err == ECONNRESET) g_state[fd] |= kReset;
}

/* preload.c's shutdown() tells us of a successful shutdown of the write side. */
void slipstream_note_write_shut(int fd) {
  if (Tracked(fd)) g_state[fd] |= kWriteShut;
}
