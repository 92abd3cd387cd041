#include "supervisor/socket_calls.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cstring>
#include <string>
#include <vector>

#include "base/socket_info.h"
#include "preload-fallback/preload_abi.h"
#include "supervisor/socket_calls_util.h"

namespace slipstream::supervisor {

using tracer::Call;
using tracer::TargetAccess;

bool IsSupervisorResourceError(int err) {
  return err == EMFILE || err == ENFILE || err == ENOMEM || err == ENOBUFS;
}

size_t SocketCalls::parked() const {
  size_t n = 0;
  for (const auto& [id, queue] : parked_) n += queue.size();
  return n;
}

void SocketCalls::PurgeParked(SockDiag& diag) {
  for (auto it = parked_.begin(); it != parked_.end();) {
    bool alive = false;
    auto local = it->second.empty() ? Result<SockAddr>(Error(ENOENT, "nothing parked"))
                                    : SocketName(it->second.front().tcp.Get(), false);
    if (local) {
      if (auto listeners = diag.TcpListeners(local->port())) {
        for (const auto& l : *listeners) alive |= l.inode == it->first.ino;
      } else {
        alive = true;  // cannot tell: keep them
      }
    }
    if (alive) {
      ++it;
      continue;
    }
    for (Parked& conn : it->second) {
      if (conn.unix_end) env_.switcher->Disown(std::move(conn.unix_end));
    }
    it = parked_.erase(it);
  }
}

void SocketCalls::Handle(PendingCall call) {
  // A thread is in one system call at a time: any call this thread had held was withdrawn (a
  // signal), and this may be its restart, with the same buffers. The held one is ended now, so
  // that what it did is known before this call runs and it is never retried after it (an accept
  // would write another connection's peer into the buffer this call filled).
  env_.held.ThreadMovedOn(call.tid());
  switch (call.trace().call) {
    case Call::kSocket:
      return OnSocket(call);
    case Call::kConnect:
      return OnConnect(std::move(call));
    case Call::kAccept:
      return OnAccept(std::move(call), false);
    case Call::kAccept4:
      return OnAccept(std::move(call), true);
    case Call::kBind:
      return OnBind(call);
    case Call::kListen:
      return OnListen(call);
    case Call::kGetsockname:
      return OnGetName(call, false);
    case Call::kGetpeername:
      return OnGetName(call, true);
    case Call::kGetsockopt:
      return OnSockopt(call, true);
    case Call::kSetsockopt:
      return OnSockopt(call, false);
    case Call::kShutdown:
      return OnShutdown(call);
    case Call::kSendto:
    case Call::kRecvfrom:
    case Call::kSendmsg:
    case Call::kRecvmsg:
    case Call::kSendmmsg:
    case Call::kRecvmmsg:
      return OnData(std::move(call));
  }
}

std::optional<TargetAccess> SocketCalls::OpenTarget(PendingCall& c) {
  if (!CanEmulate()) return std::nullopt;
  auto pidfd = pidfds_.Get(c.tid());
  if (!pidfd) return std::nullopt;
  return TargetAccess::Borrow(c.tid(), *pidfd);
}

Result<UniqueFd> SocketCalls::TakeFd(pid_t tid, int fd) {
  for (int attempt = 0;; ++attempt) {
    auto pidfd = pidfds_.Get(tid);
    if (!pidfd) return tl::unexpected(pidfd.error());
    auto copy = PidfdGetfd(*pidfd, fd);
    // ESRCH: the cached pidfd names a thread that has exited; this tid is a new thread.
    if (copy || copy.error().err != ESRCH || attempt > 0) return copy;
    pidfds_.Invalidate(tid);
  }
}

pid_t SocketCalls::ProcessOf(PendingCall& c) {
  // Read once per call: its thread waits in it and cannot exit meanwhile. Across calls a tid can
  // be reused once its thread has exited, so a remembered answer is checked, with one path lookup
  // where reading /proc/TID/status costs an open, two reads and a close: /proc/TGID/task/TID
  // resolves exactly when TID is a thread of TGID now (proc_task_lookup() checks the group).
  if (c.process() != 0) return c.process();
  pid_t tid = c.tid();
  if (auto it = process_of_.find(tid); it != process_of_.end()) {
    if (IsThreadOf(tid, it->second)) return c.set_process(it->second);
    process_of_.erase(it);
  }
  auto tgid = ThreadGroupOf(tid);
  if (!tgid) return tid;
  if (process_of_.size() >= kMaxRememberedThreads) process_of_.clear();
  process_of_[tid] = *tgid;
  return c.set_process(*tgid);
}

std::optional<SocketCalls::Sock> SocketCalls::TakeSocket(PendingCall& c, int fd,
                                                         bool validate_tcp) {
  auto copy = TakeFd(c.tid(), fd);
  if (!copy) return std::nullopt;  // EBADF and friends: the kernel says it exactly
  Sock sock{std::move(*copy)};
  // IPPROTO_TCP is only ever the protocol of an AF_INET/AF_INET6 stream socket (MPTCP reports
  // IPPROTO_MPTCP); AF_UNIX sockets report 0. One getsockopt classifies the fd.
  int protocol = IntSockOpt(sock.fd.Get(), SOL_SOCKET, SO_PROTOCOL);
  if (protocol != IPPROTO_TCP) {
    if (protocol != 0 || env_.switcher == nullptr) return std::nullopt;
    // A non-socket has no switch; an AF_UNIX end may come from another supervisor's program.
    sock.switched = env_.switcher->FindOrAdopt(sock.fd.Get());
    if (sock.switched == nullptr) return std::nullopt;
  }
  // Read, then validate: the copy is the program's fd only if the call is still pending.
  if ((sock.switched != nullptr || validate_tcp) && !env_.notifier.IdValid(c.id())) {
    c.Abandon();
    return std::nullopt;
  }
  return sock;
}

std::optional<UniqueFd> SocketCalls::TakeInetSocket(PendingCall& c, int fd) {
  auto sock = TakeSocket(c, fd);
  if (!sock || sock->switched) return std::nullopt;
  return std::move(sock->fd);
}

void SocketCalls::OnSocket(PendingCall& c) {
  c.trace().args = std::string(FamilyName(static_cast<int>(c.arg(0)))) + ", " +
                   SocketTypeText(static_cast<int>(c.arg(1))) + ", " +
                   std::to_string(static_cast<int>(c.arg(2)));
  // The kernel creates the socket: in the target's network namespace, cgroup and credentials.
}

void SocketCalls::OnBind(PendingCall& c) {
  auto target = OpenTarget(c);
  if (c.tracing()) {
    c.trace().args =
        FdText(c.arg(0)) + ", " + AddrText(target ? &*target : nullptr, c.arg(1), c.arg(2));
  }
  if (target && env_.switcher != nullptr) ReleaseBeforeBind(c, *target);
  // CONTINUE: bind's permission checks (ports below ip_unprivileged_port_start) are made against
  // the caller's credentials, which must be the target's, not the supervisor's.
}

void SocketCalls::OnListen(PendingCall& c) {
  int fd = static_cast<int>(c.arg(0));
  int backlog = static_cast<int>(c.arg(1));
  c.trace().args = FdText(c.arg(0)) + ", " + std::to_string(backlog);
  auto target = OpenTarget(c);
  if (!target) return;
  auto sock = TakeInetSocket(c, fd);
  if (!sock) return;
  auto bound = SocketName(sock->Get(), false);
  bool ours = env_.switcher != nullptr && env_.local.SocketInOurNetns(sock->Get(), c.tid());
  if (ours && bound && bound->port() != 0) {
    // Registered before the kernel starts queueing connections on it: a client connecting the
    // moment it listens already finds it among the supervised listeners. (A socket that then
    // fails to listen is simply never listed by sock_diag as a listener.)
    return RegisterListener(c, fd, std::move(*sock), [this, backlog](PendingCall& call, int l) {
      // The program may have left the call meanwhile (a signal: EINTR, or a restart that
      // listens again): a native listen() interrupted before it ran leaves no listening socket.
      if (!env_.notifier.IdValid(call.id())) return call.Abandon();
      if (ListenOnCopy(call, l, backlog)) call.Return(0);
    });
  }
  if (!ListenOnCopy(c, sock->Get(), backlog)) return;
  if (!ours) return (void)c.Return(0);
  // listen() chose the port.
  RegisterListener(c, fd, std::move(*sock), [](PendingCall& call, int) { call.Return(0); });
}

bool SocketCalls::ListenOnCopy(PendingCall& c, int sock, int backlog) {
  // listen() has no credential checks and acts on the shared socket: run it on the copy.
  if (listen(sock, backlog) == 0) return true;
  if (!IsSupervisorResourceError(errno)) c.Fail(errno);
  return false;
}

void SocketCalls::RegisterListener(PendingCall& c, int fd, UniqueFd sock, ListenerThen then) {
  auto call = std::make_shared<PendingCall>(std::move(c));
  auto listener = std::make_shared<UniqueFd>(std::move(sock));
  env_.switcher->OnListener(
      ProcessOf(*call), fd, listener->Get(),
      [call, listener, then = std::move(then)] { then(*call, listener->Get()); });
}

void SocketCalls::OnGetName(PendingCall& c, bool peer) {
  int fd = static_cast<int>(c.arg(0));
  c.trace().args = FdText(c.arg(0));
  auto target = OpenTarget(c);
  if (!target) return;
  auto sock = TakeSocket(c, fd, /*validate_tcp=*/false);
  if (!sock) return;
  if (!sock->switched) {
    // The kernel's answer is the one to give (CONTINUE): copying it out ourselves took a read and
    // a write of the program's memory (a third of a trapped getsockname's cost).
    if (c.tracing()) {
      if (auto addr = SocketName(sock->tcp(), peer)) c.trace().note = "(" + addr->ToString() + ")";
    }
    return;
  }
  if (peer) env_.switcher->SettlePeerClose(sock->fd.Get(), *sock->switched);
  auto addr = SocketName(sock->tcp(), peer);
  if (!addr) return (void)c.Fail(addr.error().err);
  auto st =
      tracer::CopySockAddrOut(*target, *addr, c.arg(1), c.arg(2), env_.features.addrlen_first);
  if (!st) return (void)c.Fail(st.error().err);
  c.trace().note = "(" + addr->ToString() + ")";
  c.Return(0);
}

void SocketCalls::OnSockopt(PendingCall& c, bool get) {
  int level = static_cast<int>(c.arg(1));
  int name = static_cast<int>(c.arg(2));
  c.trace().args = FdText(c.arg(0)) + ", " + SockoptText(level, name);
  auto target = OpenTarget(c);
  if (!target) return;
  if (!get && static_cast<int>(c.arg(4)) == sizeof(int)) {
    if (auto v = target->ReadInt(c.arg(3))) c.trace().args += ", [" + std::to_string(*v) + "]";
  }
  if (get && level == SLIPSTREAM_SOL && name == SLIPSTREAM_OPT_CLAIM) return OnLateClaim(c);
  if (get && level == SLIPSTREAM_SOL && name == SLIPSTREAM_OPT_NAMES) return OnNames(c, *target);
  if (env_.switcher != nullptr && !get && level == SOL_SOCKET && name == SO_LINGER) {
    return MirrorLinger(c, *target);  // runs the call on a switched socket, else CONTINUE
  }
  if (env_.switcher == nullptr || (level == SOL_SOCKET && !IsIdentityOption(name))) return;
  auto copy = TakeFd(c.tid(), static_cast<int>(c.arg(0)));
  if (!copy || IntSockOpt(copy->Get(), SOL_SOCKET, SO_DOMAIN) != AF_UNIX) return;
  SwitchedSocket* sw = env_.switcher->FindOrAdopt(copy->Get());
  if (sw == nullptr) return;
  if (get) env_.switcher->SettlePeerClose(copy->Get(), *sw);  // TCP_INFO's state, for one
  EmulateSockopt(c, sw->tcp.Get(), get);
}

void SocketCalls::OnNames(PendingCall& c, const TargetAccess& target) {
  c.trace().args = FdText(c.arg(0)) + ", SLIPSTREAM_OPT_NAMES";
  if (env_.switcher == nullptr) return;  // nothing is switched: the kernel's EOPNOTSUPP
  auto len = target.ReadInt(c.arg(4));   // read, then validate (in TakeSocket)
  auto sock = TakeSocket(c, static_cast<int>(c.arg(0)));
  // Any other socket: the kernel's answer for a level no protocol has (EOPNOTSUPP on Linux 6.x,
  // whatever the length), so the length is judged only for a switched one.
  if (!sock || !sock->switched) return;
  if (!len) return (void)c.Fail(EFAULT);
  if (*len < static_cast<int>(sizeof(slipstream_names))) return (void)c.Fail(EINVAL);
  env_.switcher->SettlePeerClose(sock->fd.Get(), *sock->switched);
  auto local = SocketName(sock->tcp(), false);
  if (!local) return (void)c.Fail(local.error().err);
  auto peer = SocketName(sock->tcp(), true);
  if (!peer) return (void)c.Fail(peer.error().err);
  auto names = LibraryNames(*local, *peer);
  if (!names) return (void)c.Fail(names.error().err);
  if (!target.Write(c.arg(3), {reinterpret_cast<const uint8_t*>(&*names), sizeof(*names)}) ||
      !target.WriteInt(c.arg(4), sizeof(*names))) {
    return (void)c.Fail(EFAULT);
  }
  c.trace().note = "(" + local->ToString() + ", " + peer->ToString() + ")";
  c.Return(0);
}

// get/setsockopt on the retained TCP socket with the program's arguments, copying the option in
// and out as the kernel does (EFAULT for unreadable or unwritable memory).
void SocketCalls::EmulateSockopt(PendingCall& c, int tcp, bool get) {
  auto target = OpenTarget(c);
  if (!target) return;
  int level = static_cast<int>(c.arg(1));
  int name = static_cast<int>(c.arg(2));
  uint64_t optval = c.arg(3);
  if (!get) {
    int len = static_cast<int>(c.arg(4));
    if (len < 0) return (void)c.Fail(EINVAL);
    std::vector<uint8_t> value(std::min<size_t>(static_cast<size_t>(len), kMaxOptLen));
    const uint8_t* given = value.data();
    if (!value.empty() && !target->Read(optval, value)) {
      // Not readable whole: the kernel may still refuse the length first (EINVAL for an int
      // option shorter than an int), or read only an int's worth. Its answer comes from a copy
      // of the readable int that ends where unreadable memory begins, as in the program.
      size_t readable = std::min(value.size(), sizeof(int));
      if (!target->Read(optval, {value.data(), readable})) readable = 0;
      given = BeforeAGuardPage({value.data(), readable});
    }
    // Read, then validate: the value came from the caller only if its call is still pending.
    if (!env_.notifier.IdValid(c.id())) return c.Abandon();
    if (setsockopt(tcp, level, name, given, static_cast<socklen_t>(value.size())) < 0) {
      return (void)c.Fail(errno);
    }
    return (void)c.Return(0);
  }
  auto len = target->ReadInt(c.arg(4));
  if (!len) return (void)c.Fail(EFAULT);
  if (*len < 0) return (void)c.Fail(EINVAL);
  std::vector<uint8_t> value(std::min<size_t>(static_cast<size_t>(*len), kMaxOptLen));
  // Some options take input in the buffer too (TCP_INFO does not, TCP_REPAIR_WINDOW does).
  if (!value.empty()) (void)target->Read(optval, value);
  if (!env_.notifier.IdValid(c.id())) return c.Abandon();  // read, then validate
  socklen_t out_len = static_cast<socklen_t>(value.size());
  if (getsockopt(tcp, level, name, value.data(), &out_len) < 0) return (void)c.Fail(errno);
  if (out_len > 0 && !target->Write(optval, {value.data(), out_len})) return (void)c.Fail(EFAULT);
  if (!target->WriteInt(c.arg(4), static_cast<int32_t>(out_len))) return (void)c.Fail(EFAULT);
  c.trace().note = "(from the retained TCP socket)";
  c.Return(0);
}

void SocketCalls::OnShutdown(PendingCall& c) {
  int how = static_cast<int>(c.arg(1));
  c.trace().args = FdText(c.arg(0)) + ", " + ShutdownHowText(how);
  if (env_.switcher == nullptr || how < SHUT_RD || how > SHUT_RDWR) return;
  auto target = OpenTarget(c);
  if (!target) return;
  auto sock = TakeSocket(c, static_cast<int>(c.arg(0)));
  if (!sock || !sock->switched) return;
  // The retained TCP connection follows, so that TCP_INFO tells FIN_WAIT2 here and CLOSE_WAIT
  // at the peer, as the program would see natively; first, so that the peer's FIN has arrived
  // by the time its program reads the EOF. Not while a relay may still need the connection.
  SwitchedSocket& sw = *sock->switched;
  if (!sw.confirmed) env_.switcher->Refresh();  // the verdict may be queued
  if (sw.confirmed) {
    shutdown(sw.tcp.Get(), how);
  } else {
    // Mirrored when the daemon reports the pair claimed (a relay does its own half-close).
    sw.deferred_shutdown |= how == SHUT_RD ? 1u : how == SHUT_WR ? 2u : 3u;
  }
  bool write_shut = sw.write_shut;
  sw.write_shut |= how != SHUT_RD;
  UniqueFd end = std::move(sock->fd);
  if ((how == SHUT_RDWR || (how == SHUT_RD && write_shut)) && !sw.read_shut) {
    // Both directions: the kernel's own shutdown of the AF_UNIX end. It wakes every thread blocked
    // on the socket (the usual way to stop a reader thread; a relay could not, they sleep on the
    // old end), and the peer's writes then fail at once with EPIPE, where TCP fails them from the
    // second write on (docs/differences.md, as after a close).
    if (shutdown(end.Get(), SHUT_RDWR) < 0) return (void)c.Fail(errno);
    return (void)c.Return(0);
  }
  if (how != SHUT_WR && !sw.read_shut) {
    // TCP's SHUT_RD is local: reads return what has arrived, then 0, and the peer may keep
    // sending. AF_UNIX's would also fail the peer's writes with EPIPE (unix_shutdown() shuts the
    // peer's send side), so the program's end is replaced by one we relay (ShutReadSwitched).
    // If that cannot be done, SHUT_RD is left out, as before (docs/differences.md).
    if (auto relayed = ShutReadSwitched(c, end.Get(), write_shut)) {
      end = std::move(*relayed);
    } else if (c.answered()) {
      return;  // the target left the call
    }
  }
  if (how != SHUT_RD && shutdown(end.Get(), SHUT_WR) < 0) return (void)c.Fail(errno);
  c.Return(0);
}

}  // namespace slipstream::supervisor
