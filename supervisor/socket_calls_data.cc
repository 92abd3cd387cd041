// The data-path calls in the rare forms the filter traps (tracer/filter.cc, AddDataRules): on a
// switched socket they are answered as tcp_recvmsg/tcp_sendmsg would answer them; on any other
// socket they run in the kernel at once (CONTINUE). Measured against TCP by
// tests/programs/c/flags_probe.c.
//
// The supervisor never writes received bytes into the program: MSG_TRUNC discards into a scratch
// buffer, a peek with MSG_WAITALL is held until enough bytes are queued and then performed by the
// kernel. Only sendto's bytes pass through the supervisor (read from the program, sent on the
// copy of its end).
#include <fcntl.h>
#include <linux/sockios.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "base/socket_info.h"
#include "base/syscalls.h"
#include "supervisor/socket_calls.h"
#include "supervisor/socket_calls_util.h"

namespace slipstream::supervisor {

using tracer::Call;
using tracer::TargetAccess;

namespace {

constexpr size_t kChunk = 64 * 1024;
// The most one read or write moves (MAX_RW_COUNT, include/linux/fs.h): INT_MAX & PAGE_MASK.
constexpr size_t kMaxRwCount = 0x7ffff000;
constexpr size_t kUioMaxIov = 1024;  // UIO_MAXIOV
// struct msghdr / struct mmsghdr field offsets on x86-64 (the only ABI supervised).
constexpr uint64_t kMsgNameLen = 8, kMsgIov = 16, kMsgIovLen = 24, kMsgControlLen = 40,
                   kMsgFlags = 48, kMmsgLen = 56, kMmsgSize = 64;

uint8_t* Scratch() {
  static uint8_t buf[kChunk];  // the supervisor is single-threaded
  return buf;
}

int Queued(int fd) {
  int n = 0;
  return ioctl(fd, SIOCINQ, &n) < 0 ? 0 : n;
}

// EOF, shutdown or a pending error: a blocking read would return at once.
bool ReadEnded(int fd) {
  pollfd p{fd, POLLIN | POLLRDHUP, 0};
  if (poll(&p, 1, 0) <= 0) return false;
  return (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

bool NonBlocking(int fd, unsigned flags) {
  if (flags & MSG_DONTWAIT) return true;
  auto fl = GetFileFlags(fd);
  return fl && (*fl & O_NONBLOCK);
}

std::string DataArgsText(const PendingCall& c, int flags_arg) {
  char text[96];
  snprintf(text, sizeof(text), "%d, ..., flags=%#x", static_cast<int>(c.arg(0)),
           static_cast<unsigned>(c.arg(flags_arg)));
  return text;
}

Result<uint64_t> ReadU64(const TargetAccess& target, uint64_t addr) {
  uint64_t v = 0;
  auto st = target.Read(addr, {reinterpret_cast<uint8_t*>(&v), sizeof(v)});
  if (!st) return tl::unexpected(st.error());
  return v;
}

// The byte count a recvmsg names in its msghdr at `msg`, checked as the kernel's
// copy_msghdr_from_user/import_iovec check it; nullopt when the kernel would fail the call
// itself (EFAULT, EINVAL, EMSGSIZE), which CONTINUE then reproduces exactly.
std::optional<size_t> MsgLength(const TargetAccess& target, uint64_t msg) {
  uint8_t hdr[kMmsgLen];
  if (!target.Read(msg, hdr)) return std::nullopt;
  uint64_t name, iov, iovlen;
  int32_t namelen;
  std::memcpy(&name, hdr, 8);
  std::memcpy(&namelen, hdr + kMsgNameLen, 4);
  std::memcpy(&iov, hdr + kMsgIov, 8);
  std::memcpy(&iovlen, hdr + kMsgIovLen, 8);
  if (name != 0 && namelen < 0) return std::nullopt;
  if (iovlen > kUioMaxIov) return std::nullopt;
  std::vector<uint64_t> vec(iovlen * 2);
  if (iovlen > 0 && !target.Read(iov, {reinterpret_cast<uint8_t*>(vec.data()), vec.size() * 8})) {
    return std::nullopt;
  }
  size_t total = 0;
  for (size_t i = 0; i < iovlen; ++i) {
    auto len = static_cast<int64_t>(vec[2 * i + 1]);
    if (len < 0) return std::nullopt;
    total = std::min(kMaxRwCount, total + std::min<size_t>(static_cast<size_t>(len), kMaxRwCount));
  }
  return total;
}

// What ____sys_recvmsg writes back after a TCP receive: the (empty) source address's length,
// msg_flags (MSG_CMSG_CLOEXEC is echoed; TCP adds nothing here), no control data.
int WriteMsgResult(const TargetAccess& target, uint64_t msg, unsigned flags, bool addrlen_first) {
  auto name = ReadU64(target, msg);
  if (!name) return EFAULT;
  if (*name != 0) {
    auto st = tracer::CopySockAddrOut(target, SockAddr(), *name, msg + kMsgNameLen, addrlen_first);
    if (!st) return st.error().err;
  }
  if (!target.WriteInt(msg + kMsgFlags, static_cast<int32_t>(flags & MSG_CMSG_CLOEXEC))) {
    return EFAULT;
  }
  uint64_t zero = 0;
  if (!target.Write(msg + kMsgControlLen, {reinterpret_cast<uint8_t*>(&zero), 8})) return EFAULT;
  return 0;
}

// Discards up to `len` bytes without waiting; returns the count, or -errno if nothing was read.
ssize_t DiscardQueued(int fd, size_t len) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = recv(fd, Scratch(), std::min(len - done, kChunk), MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n < 0 && done == 0) return -errno;
      break;
    }
    done += static_cast<size_t>(n);
  }
  return static_cast<ssize_t>(done);
}

}  // namespace

// One trapped receive on a switched socket. The modes mirror tcp_recvmsg (net/ipv4/tcp.c):
// it waits until `target` bytes are there (all of them with MSG_WAITALL, else SO_RCVLOWAT), or
// EOF, an error, the socket's timeout or a signal end the wait, and then reports what it has.
struct SocketCalls::RecvJob {
  enum class Mode {
    kPeekThenKernel,  // MSG_PEEK|MSG_WAITALL: wait, then CONTINUE (the kernel peeks all of it)
    kPeekCount,       // MSG_PEEK|MSG_TRUNC: the count TCP would peek, nothing copied
    kDiscard,         // MSG_TRUNC: consume into scratch, nothing copied
  };
  Call call;
  Mode mode;
  unsigned flags;
  size_t len;
  size_t target;
  bool nonblocking;
  size_t done = 0;
};

// One trapped sendto with an address on a switched socket: the bytes are read from the program
// and sent on the copy of its end, with TCP's blocking semantics.
struct SocketCalls::SendJob {
  uint64_t buf;
  size_t len;
  unsigned flags;
  bool nonblocking;
  size_t done = 0;
};

void SocketCalls::OnData(PendingCall c) {
  Call call = c.trace().call;
  bool recv = call == Call::kRecvfrom || call == Call::kRecvmsg || call == Call::kRecvmmsg;
  int flags_arg = call == Call::kSendmsg || call == Call::kRecvmsg ? 2 : 3;
  c.trace().args = DataArgsText(c, flags_arg);
  if (env_.switcher == nullptr) return;
  auto target = OpenTarget(c);
  if (!target) return;
  auto sock = TakeSocket(c, static_cast<int>(c.arg(0)));
  if (!sock || !sock->switched) return;  // TCP, UDP, genuine AF_UNIX: the kernel is exact
  auto flags = static_cast<unsigned>(c.arg(flags_arg));
  c.trace().note = "(switched socket)";
  if (recv) return OnRecv(std::move(c), *target, std::move(sock->fd), flags);
  OnSend(std::move(c), *target, *sock, flags);
}

void SocketCalls::OnRecv(PendingCall c, const TargetAccess& target, UniqueFd fd, unsigned flags) {
  // tcp_recvmsg reads the error queue before anything else: a switched socket's is always empty
  // (no zerocopy, no ICMP on AF_UNIX), and AF_UNIX would read the stream instead.
  if (flags & MSG_ERRQUEUE) return (void)c.Fail(EAGAIN);
  if (flags & MSG_OOB) return;  // AF_UNIX's own out-of-band byte (docs/differences.md)
  auto job = std::make_shared<RecvJob>();
  job->call = c.trace().call;
  job->flags = flags;
  if (job->call == Call::kRecvfrom) {
    job->len = std::min<size_t>(c.arg(2), kMaxRwCount);
  } else {
    uint64_t msg = c.arg(1);
    if (job->call == Call::kRecvmmsg && c.arg(2) == 0) return;  // vlen 0: the kernel returns 0
    auto len = MsgLength(target, msg);
    if (!len) return;  // the kernel's own EFAULT/EINVAL/EMSGSIZE
    job->len = *len;
  }
  bool peek = flags & MSG_PEEK;
  bool waitall = flags & MSG_WAITALL;
  if (!(flags & MSG_TRUNC)) {
    job->mode = RecvJob::Mode::kPeekThenKernel;
  } else {
    job->mode = peek ? RecvJob::Mode::kPeekCount : RecvJob::Mode::kDiscard;
  }
  if (job->mode == RecvJob::Mode::kDiscard) job->done = std::min(job->len, TakeProgress(c));
  int lowat = std::max(1, IntSockOpt(fd.Get(), SOL_SOCKET, SO_RCVLOWAT));
  job->target = waitall ? job->len : std::min(job->len, static_cast<size_t>(lowat));
  job->nonblocking = NonBlocking(fd.Get(), flags);
  if (StepRecv(c, fd.Get(), *job)) return;
  env_.held.Hold(
      std::move(c), std::move(fd), HeldCalls::Wait::kReadMore,
      [this, job](PendingCall& call, int f) { return StepRecv(call, f, *job); },
      [this, job](PendingCall& call, int f, HeldCalls::End end) {
        InterruptRecv(call, f, *job, end);
      });
  ++env_.stats.held;
}

bool SocketCalls::StepRecv(PendingCall& c, int fd, RecvJob& job) {
  // A call the program left (a signal without WAIT_KILLABLE_RECV) must not take bytes.
  if (!env_.notifier.IdValid(c.id())) {
    SaveProgress(c, job.done);
    c.Abandon();
    return true;
  }
  int queued = Queued(fd);
  switch (job.mode) {
    case RecvJob::Mode::kPeekThenKernel:
      // AF_UNIX peeks across all queued buffers up to len; it only does not wait for more.
      if (job.nonblocking || static_cast<size_t>(queued) >= job.target || ReadEnded(fd)) {
        c.Continue();
        return true;
      }
      return false;
    case RecvJob::Mode::kPeekCount:
      if (static_cast<size_t>(queued) >= job.target || (queued > 0 && job.nonblocking)) {
        FinishRecv(c, job, std::min(job.len, static_cast<size_t>(queued)));
        return true;
      }
      if (queued > 0 && ReadEnded(fd)) {
        FinishRecv(c, job, std::min(job.len, static_cast<size_t>(queued)));
        return true;
      }
      if (queued == 0 && (job.nonblocking || ReadEnded(fd))) {
        // EOF (0) or the pending error, as a peek of one byte reports them.
        ssize_t n = recv(fd, Scratch(), 1, MSG_PEEK | MSG_DONTWAIT);
        if (n < 0) {
          if (errno == EAGAIN && !job.nonblocking) return false;
          c.Fail(errno);
          return true;
        }
        FinishRecv(c, job, 0);
        return true;
      }
      return false;
    case RecvJob::Mode::kDiscard: {
      ssize_t n = DiscardQueued(fd, job.len - job.done);
      if (n > 0) job.done += static_cast<size_t>(n);
      if (job.done >= job.target || n == 0 || (n < 0 && n != -EAGAIN && n != -EWOULDBLOCK)) {
        // Enough, EOF, or an error (reported only when nothing was read, as TCP does).
        if (job.done == 0 && n < 0) {
          c.Fail(static_cast<int>(-n));
        } else {
          FinishRecv(c, job, job.done);
        }
        return true;
      }
      if (job.nonblocking) {
        if (job.done == 0) {
          c.Fail(EAGAIN);
        } else {
          FinishRecv(c, job, job.done);
        }
        return true;
      }
      return false;
    }
  }
  return false;
}

void SocketCalls::InterruptRecv(PendingCall& c, int fd, RecvJob& job, HeldCalls::End end) {
  if (end == HeldCalls::End::kWithdrawn) return SaveProgress(c, job.done);
  bool timeout = end == HeldCalls::End::kTimeout;
  // tcp_recvmsg: what was read by then is the result; with nothing, EAGAIN after the timeout and
  // ERESTARTSYS for a signal (the kernel restarts the call or returns EINTR).
  size_t queued = static_cast<size_t>(Queued(fd));
  switch (job.mode) {
    case RecvJob::Mode::kPeekThenKernel:
      if (queued > 0) return c.Continue();  // the kernel peeks what is there, at once
      break;
    case RecvJob::Mode::kPeekCount:
      if (queued > 0) return FinishRecv(c, job, std::min(job.len, queued));
      break;
    case RecvJob::Mode::kDiscard:
      if (job.done > 0) return FinishRecv(c, job, job.done);
      break;
  }
  c.Fail(timeout ? EAGAIN : kErestartSys);
}

void SocketCalls::FinishRecv(PendingCall& c, const RecvJob& job, size_t count) {
  auto target = OpenTarget(c);
  if (!target || !env_.notifier.IdValid(c.id())) return c.Abandon();
  // As the kernel, after the bytes were taken: the source address (none for TCP) and, for
  // recvmsg/recvmmsg, the msghdr's result fields.
  int err = 0;
  if (job.call == Call::kRecvfrom) {
    if (c.arg(4) != 0) {
      auto st = tracer::CopySockAddrOut(*target, SockAddr(), c.arg(4), c.arg(5),
                                        env_.features.addrlen_first);
      if (!st) err = st.error().err;
    }
  } else {
    err = WriteMsgResult(*target, c.arg(1), job.flags, env_.features.addrlen_first);
  }
  if (err != 0) return (void)c.Fail(err);
  if (job.call != Call::kRecvmmsg) {
    if (!c.Return(static_cast<int64_t>(count)) && job.mode == RecvJob::Mode::kDiscard) {
      SaveProgress(c, count);
    }
    return;
  }
  // recvmmsg: this was the first message, and the only one (docs/differences.md); its length
  // goes into msg_len.
  if (!target->WriteInt(c.arg(1) + kMmsgLen, static_cast<int32_t>(count))) {
    return (void)c.Fail(EFAULT);
  }
  c.Return(1);
}

void SocketCalls::OnSend(PendingCall c, const TargetAccess& target, Sock& sock, unsigned flags) {
  Call call = c.trace().call;
  // A connected TCP socket refuses MSG_FASTOPEN (EISCONN, or EOPNOTSUPP when the sysctl lacks
  // the client bit): ask the retained TCP socket, which sends nothing when it refuses.
  if (flags & MSG_FASTOPEN) {
    if (sendto(sock.tcp(), nullptr, 0, MSG_FASTOPEN | MSG_DONTWAIT | MSG_NOSIGNAL, nullptr, 0) <
        0) {
      return (void)c.Fail(errno);
    }
    if (call != Call::kSendto || c.arg(4) == 0) return;  // no address: AF_UNIX sends as TCP
  }
  // sendto with an address on a connected socket: TCP ignores the address once
  // move_addr_to_kernel accepted it (length 0..128, readable); AF_UNIX fails with EISCONN
  // (unix_stream_sendmsg, net/unix/af_unix.c). Bad lengths and addresses: the kernel's own error.
  auto addrlen = static_cast<int32_t>(c.arg(5));
  if (call != Call::kSendto || addrlen <= 0 ||
      static_cast<size_t>(addrlen) > sizeof(sockaddr_storage)) {
    return;
  }
  std::vector<uint8_t> addr(static_cast<size_t>(addrlen));
  if (!target.Read(c.arg(4), addr)) return;
  auto job = std::make_shared<SendJob>();
  job->buf = c.arg(1);
  job->len = std::min<size_t>(c.arg(2), kMaxRwCount);
  job->flags = flags;
  job->nonblocking = NonBlocking(sock.fd.Get(), flags);
  job->done = std::min(job->len, TakeProgress(c));
  if (StepSend(c, sock.fd.Get(), *job)) return;
  env_.held.Hold(
      std::move(c), std::move(sock.fd), HeldCalls::Wait::kWrite,
      [this, job](PendingCall& held, int f) { return StepSend(held, f, *job); },
      [this, job](PendingCall& held, int, HeldCalls::End end) {
        // tcp_sendmsg: a partial send is reported as such; with nothing sent, EAGAIN after
        // SO_SNDTIMEO and ERESTARTSYS for a signal.
        if (end == HeldCalls::End::kWithdrawn) {
          SaveProgress(held, job->done);
        } else if (job->done > 0) {
          if (!held.Return(static_cast<int64_t>(job->done))) SaveProgress(held, job->done);
        } else {
          held.Fail(end == HeldCalls::End::kTimeout ? EAGAIN : kErestartSys);
        }
      });
  ++env_.stats.held;
}

bool SocketCalls::StepSend(PendingCall& c, int fd, SendJob& job) {
  auto target = OpenTarget(c);
  if (!target) {
    c.Abandon();
    return true;
  }
  unsigned pass = (job.flags & ~(MSG_DONTWAIT | MSG_FASTOPEN | MSG_OOB | MSG_NOSIGNAL)) |
                  MSG_DONTWAIT | MSG_NOSIGNAL;
  do {
    size_t chunk = std::min(job.len - job.done, kChunk);
    if (chunk > 0 && !target->Read(job.buf + job.done, {Scratch(), chunk})) {
      FinishSend(c, job, EFAULT);
      return true;
    }
    // Read first, then check: a valid id proves the bytes came from the program still in the
    // call (TOCTOU order, tracer/target.h), and no byte is sent for a call it left.
    if (!env_.notifier.IdValid(c.id())) {
      SaveProgress(c, job.done);
      c.Abandon();
      return true;
    }
    // Out-of-band: the last byte of the whole call, as TCP's urgent pointer marks it.
    unsigned f = pass | ((job.flags & MSG_OOB) && job.done + chunk == job.len ? MSG_OOB : 0);
    ssize_t n = send(fd, Scratch(), chunk, f);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && chunk > 0) {
      if (!job.nonblocking) return false;  // wait for room (POLLOUT)
      FinishSend(c, job, EAGAIN);
      return true;
    }
    if (n < 0) {
      FinishSend(c, job, errno);
      return true;
    }
    job.done += static_cast<size_t>(n);
  } while (job.done < job.len);
  FinishSend(c, job, 0);
  return true;
}

void SocketCalls::FinishSend(PendingCall& c, const SendJob& job, int err) {
  // tcp_sendmsg reports bytes sent before an error; with none, the error, and EPIPE raises
  // SIGPIPE for the sending thread unless MSG_NOSIGNAL (sk_stream_error).
  if (job.done > 0 || err == 0) {
    if (!c.Return(static_cast<int64_t>(job.done))) SaveProgress(c, job.done);
    return;
  }
  // EPIPE raises SIGPIPE for the sending thread before the call returns, as sk_stream_error
  // does. Without WAIT_KILLABLE_RECV a signal raised while the call is pending would withdraw it
  // (and the restarted call would raise another): then it follows the answer, a little late.
  bool sigpipe = err == EPIPE && !(job.flags & MSG_NOSIGNAL);
  pid_t tgid = ProcessOf(c);
  if (sigpipe && env_.held.killable()) syscall(SYS_tgkill, tgid, c.tid(), SIGPIPE);
  bool answered = c.Fail(err);
  if (sigpipe && !env_.held.killable() && answered) syscall(SYS_tgkill, tgid, c.tid(), SIGPIPE);
}

// Without WAIT_KILLABLE_RECV (before 5.19) a signal withdraws a held call, and the program never
// learns how many bytes the supervisor had already sent or discarded for it. It restarts the
// call (SA_RESTART) or, after EINTR, usually retries it with the same arguments: that call
// resumes where the withdrawn one stopped, so no byte is sent or discarded twice. Any other call
// of the thread forgets it.
void SocketCalls::SaveProgress(const PendingCall& c, size_t done) {
  if (done == 0) return;
  Progress p{c.notification().nr, {}, done};
  for (int i = 0; i < 6; ++i) p.args[static_cast<size_t>(i)] = c.arg(i);
  progress_[c.tid()] = p;
}

size_t SocketCalls::TakeProgress(const PendingCall& c) {
  auto it = progress_.find(c.tid());
  if (it == progress_.end()) return 0;
  Progress p = it->second;
  progress_.erase(it);
  for (int i = 0; i < 6; ++i) {
    if (p.args[static_cast<size_t>(i)] != c.arg(i)) return 0;
  }
  return p.nr == c.notification().nr ? p.done : 0;
}

}  // namespace slipstream::supervisor
