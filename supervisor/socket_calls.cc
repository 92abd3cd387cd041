#include "supervisor/socket_calls.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <string>
#include <vector>

#include "base/socket_info.h"
#include "supervisor/blocking_guard.h"

namespace slipstream::supervisor {

using tracer::Call;
using tracer::TargetAccess;

bool IsSupervisorResourceError(int err) {
  return err == EMFILE || err == ENFILE || err == ENOMEM || err == ENOBUFS;
}

namespace {

// Largest option value copied between the program and the retained TCP socket.
constexpr size_t kMaxOptLen = 4096;

std::string FdText(uint64_t fd) { return std::to_string(static_cast<int>(fd)); }

// Best effort, for --trace only: the address a connect/bind call names.
std::string AddrText(const TargetAccess* target, uint64_t ptr, uint64_t len) {
  if (target == nullptr) return "?";
  auto addr = tracer::CopySockAddrIn(*target, ptr, static_cast<int64_t>(len));
  if (!addr) {
    return addr.error().err == EFAULT ? "<bad address>"
                                      : "<addrlen " + std::to_string(static_cast<int>(len)) + ">";
  }
  return addr->ToString();
}

bool Established(int sock) {
  tcp_info info{};
  socklen_t len = sizeof(info);
  return getsockopt(sock, IPPROTO_TCP, TCP_INFO, &info, &len) == 0 &&
         info.tcpi_state == TCP_ESTABLISHED;
}

// SOL_SOCKET options that describe the TCP connection rather than the byte stream: on a switched
// socket they are answered from the retained TCP socket. The rest (buffers, timeouts, SO_ERROR,
// SO_KEEPALIVE...) act on the AF_UNIX end the program holds.
bool IsIdentityOption(int name) {
  switch (name) {
    case SO_DOMAIN:
    case SO_PROTOCOL:
    case SO_PEERCRED:
    case SO_PEERNAME:
    case SO_COOKIE:
    case SO_BINDTODEVICE:
    case SO_MARK:
    case SO_INCOMING_CPU:
    case SO_PEERSEC:
    case SO_PEERGROUPS:
      return true;
    default:
      return false;
  }
}

// Is the fd table of `tid` full (RLIMIT_NOFILE reached)? stat() of /proc/PID/fd reports the
// number of open fds since Linux 6.2; on older kernels (size 0) this says no, and a full table is
// found out at ADDFD time instead (the connection is then parked for the next accept).
bool FdTableFull(pid_t tid) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/fd", tid);
  struct stat st;
  if (stat(path, &st) != 0 || st.st_size <= 0) return false;
  rlimit limit{};
  if (prlimit(tid, RLIMIT_NOFILE, nullptr, &limit) != 0) return false;
  return static_cast<rlim_t>(st.st_size) >= limit.rlim_cur;
}

}  // namespace

size_t SocketCalls::parked() const {
  size_t n = 0;
  for (const auto& [id, queue] : parked_) n += queue.size();
  return n;
}

void SocketCalls::Handle(PendingCall call) {
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
    case Call::kEpollCtl:
      return OnEpollCtl(call);
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

std::optional<SocketCalls::Sock> SocketCalls::TakeSocket(PendingCall& c, const TargetAccess& target,
                                                         int fd) {
  (void)target;
  auto copy = TakeFd(c.tid(), fd);
  if (!copy) return std::nullopt;  // EBADF and friends: the kernel says it exactly
  Sock sock{std::move(*copy)};
  // IPPROTO_TCP is only ever the protocol of an AF_INET/AF_INET6 stream socket (MPTCP reports
  // IPPROTO_MPTCP); AF_UNIX sockets report 0. One getsockopt classifies the fd.
  int protocol = IntSockOpt(sock.fd.Get(), SOL_SOCKET, SO_PROTOCOL);
  if (protocol != IPPROTO_TCP) {
    if (protocol != 0 || env_.switcher == nullptr) return std::nullopt;
    sock.switched = env_.switcher->Find(InodeOf(sock.fd.Get()));  // a non-socket has no switch
    if (sock.switched == nullptr) return std::nullopt;
  }
  if (!env_.notifier.IdValid(c.id())) {
    c.Abandon();
    return std::nullopt;
  }
  return sock;
}

std::optional<UniqueFd> SocketCalls::TakeInetSocket(PendingCall& c, const TargetAccess& target,
                                                    int fd) {
  auto sock = TakeSocket(c, target, fd);
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
  c.trace().args =
      FdText(c.arg(0)) + ", " + AddrText(target ? &*target : nullptr, c.arg(1), c.arg(2));
  // CONTINUE: bind's permission checks (ports below ip_unprivileged_port_start) are made against
  // the caller's credentials, which must be the target's, not the supervisor's.
}

void SocketCalls::OnListen(PendingCall& c) {
  int fd = static_cast<int>(c.arg(0));
  int backlog = static_cast<int>(c.arg(1));
  c.trace().args = FdText(c.arg(0)) + ", " + std::to_string(backlog);
  auto target = OpenTarget(c);
  if (!target) return;
  auto sock = TakeInetSocket(c, *target, fd);
  if (!sock) return;
  // listen() has no credential checks and acts on the shared socket: run it on the copy.
  if (listen(sock->Get(), backlog) < 0) {
    if (IsSupervisorResourceError(errno)) return;
    return (void)c.Fail(errno);
  }
  if (env_.switcher != nullptr && env_.local.SameNetns(c.tid())) {
    if (auto tgid = ThreadGroupOf(c.tid())) env_.switcher->OnListener(*tgid, fd, sock->Get());
  }
  c.Return(0);
}

void SocketCalls::OnConnect(PendingCall c) {
  int fd = static_cast<int>(c.arg(0));
  auto target = OpenTarget(c);
  if (!target) {
    c.trace().args = FdText(c.arg(0)) + ", ?";
    return;
  }
  auto dest = tracer::CopySockAddrIn(*target, c.arg(1), static_cast<int64_t>(c.arg(2)));
  c.trace().args = FdText(c.arg(0)) + ", " + AddrText(&*target, c.arg(1), c.arg(2));
  if (!dest) return;  // the kernel gives EINVAL/EFAULT itself
  if (env_.switcher != nullptr && !dest->IsInet()) {
    // AF_UNSPEC (disconnect) or a bad family on a switched socket must get TCP's answer.
    if (auto s = TakeSocket(c, *target, fd); s && s->switched) ConnectSwitched(c, *dest, *s);
    return;
  }
  if (!dest->IsInet()) return;  // EAFNOSUPPORT and friends from the kernel
  auto taken = TakeSocket(c, *target, fd);
  if (taken && taken->switched) return ConnectSwitched(c, *dest, *taken);
  ++env_.stats.connects;
  if (!env_.local.SameNetns(c.tid()) || !env_.local.IsLocal(*dest)) {
    ++env_.stats.left_on_tcp;
    return;
  }
  if (!taken) return;
  if (unreported_connects_.erase(InodeOf(taken->fd.Get())) != 0) {
    // The restart of a connect() we completed but could not answer.
    if (Established(taken->fd.Get())) return (void)c.Return(0);
  }
  std::optional<UniqueFd> sock = std::move(taken->fd);
  bool approved = false;
  if (env_.switcher != nullptr && env_.switcher->active()) {
    approved = env_.switcher->Approve(c.tid(), sock->Get(), *dest);
    if (!approved) {
      // Not ours to switch: the kernel runs the connect, with no cost on the data path.
      ++env_.stats.left_on_tcp;
      return;
    }
  }
  if (TryConnect(c, sock->Get(), *dest, approved)) return;
  SockAddr copied = *dest;
  env_.held.Hold(std::move(c), std::move(*sock), HeldCalls::Wait::kWrite,
                 [this, copied, approved](PendingCall& call, int s) {
                   return TryConnect(call, s, copied, approved);
                 });
  ++env_.stats.held;
}

bool SocketCalls::TryConnect(PendingCall& c, int sock, const SockAddr& dest, bool approved) {
  auto flags = GetFileFlags(sock);
  bool blocking = flags && !(*flags & O_NONBLOCK);
  int rc;
  int err;
  {
    std::optional<BlockingGuard> guard;
    if (blocking) guard.emplace();
    rc = connect(sock, dest.get(), dest.len());
    err = errno;
  }
  if (rc < 0 && err == EINTR && blocking) return false;  // handshake still running: hold
  bool connected = rc == 0 || (err == EINPROGRESS && Established(sock));
  bool switched = false;
  if (approved) {
    // Switch only a connection that is established; one still in its handshake (a full SYN
    // queue) stays TCP rather than making a non-blocking program wait.
    switched = connected && SwitchConnected(c, sock, rc != 0);
    if (!switched) env_.switcher->Abort(c.tid(), sock);
    if (c.answered()) return true;
  }
  if (IsSupervisorResourceError(err) && rc != 0) {
    c.Continue();
    return true;
  }
  bool delivered = rc == 0 ? c.Return(0) : c.Fail(err);
  if (!delivered && (rc == 0 || err == EINPROGRESS)) {
    // The program left the call after the connection was made (a signal without WAIT_KILLABLE).
    // Its restarted connect() must report that connection, not EISCONN.
    if (switched) {
      if (SwitchedSocket* sw = env_.switcher->Find(switched_end_ino_))
        sw->connect_unreported = true;
    } else {
      unreported_connects_.insert(InodeOf(sock));
    }
  }
  return true;
}

bool SocketCalls::SwitchConnected(PendingCall& c, int sock, bool in_progress) {
  int fd = static_cast<int>(c.arg(0));
  auto fd_flags = fdinject::ReadTargetFdFlags(c.tid(), fd);
  auto file_flags = GetFileFlags(sock);
  if (!fd_flags || !file_flags) return false;
  auto pair = fdinject::MakeStreamPair((*file_flags & O_NONBLOCK) != 0, false);
  if (!pair) return false;
  auto& [end, server_end] = *pair;
  uint64_t end_ino = InodeOf(end.Get());
  // SETFD swaps the slot like dup2: epoll registrations made after this point see the AF_UNIX end,
  // and the TCP socket lives on in our copy (no FIN is sent).
  auto installed = env_.installer.Install({c.id(), end.Get(), fd, fd_flags->cloexec, false});
  if (!installed) {
    // The target left the call (signal, exit) before the switch: its fd is still the TCP socket,
    // connected, and stays so; nothing was announced, so nobody pairs with it.
    if (installed.error().TargetGone()) c.Abandon();
    return false;
  }
  env_.switcher->ClientSwitched(c.tid(), sock, std::move(server_end), end_ino);
  UniqueFd tcp(fcntl(sock, F_DUPFD_CLOEXEC, 0));
  auto local = SocketName(sock, false), remote = SocketName(sock, true);
  c.trace().note = "switched to unix (" + (local ? local->ToString() : "?") + " -> " +
                   (remote ? remote->ToString() : "?") + ")";
  env_.switcher->MigrateEpoll(InodeOf(sock), sock, end.Get());
  env_.switcher->Book(end_ino, std::move(tcp), /*client=*/true, in_progress);
  switched_end_ino_ = end_ino;
  return true;  // the caller answers with the connect's own result
}

void SocketCalls::ConnectSwitched(PendingCall& c, const SockAddr& dest, Sock& sock) {
  SwitchedSocket& sw = *sock.switched;
  // __inet_stream_connect() on an established socket.
  if (dest.len() < sizeof(sa_family_t)) return (void)c.Fail(EINVAL);
  if (dest.family() == AF_UNSPEC) {
    // A disconnect: give the program its TCP socket back, then disconnect that (the peer sees the
    // AF_UNIX end close), so the socket can be connected again, as with TCP.
    int fd = static_cast<int>(c.arg(0));
    auto flags = fdinject::ReadTargetFdFlags(c.tid(), fd);
    if (!flags) return;
    auto st = env_.installer.Install({c.id(), sw.tcp.Get(), fd, flags->cloexec, false});
    if (!st) {
      if (st.error().TargetGone()) c.Abandon();
      return;
    }
    UniqueFd tcp = env_.switcher->Unbook(InodeOf(sock.fd.Get()));
    if (connect(tcp.Get(), dest.get(), dest.len()) < 0) return (void)c.Fail(errno);
    c.trace().note = "(switched socket returned to TCP and disconnected)";
    return (void)c.Return(0);
  }
  if (sw.connect_unreported) {
    sw.connect_unreported = false;
    return (void)c.Return(0);
  }
  c.Fail(EISCONN);
}

void SocketCalls::OnAccept(PendingCall c, bool is_accept4) {
  AcceptArgs args{static_cast<int>(c.arg(0)), c.arg(1), c.arg(2),
                  is_accept4 ? static_cast<int>(c.arg(3)) : 0};
  c.trace().args = FdText(c.arg(0));
  if (is_accept4) c.trace().args += ", " + AcceptFlagsText(args.flags);
  if (args.flags & ~(SOCK_CLOEXEC | SOCK_NONBLOCK)) return;  // the kernel's EINVAL
  auto target = OpenTarget(c);
  if (!target) return;
  auto listener = TakeInetSocket(c, *target, args.fd);
  if (!listener) return;
  auto id = GetFileId(listener->Get());
  if (!id) return;
  if (env_.switcher != nullptr && !env_.switcher->KnowsListener(id->ino) &&
      env_.local.SameNetns(c.tid())) {
    if (auto tgid = ThreadGroupOf(c.tid())) {
      env_.switcher->OnListener(*tgid, args.fd, listener->Get());
    }
  }
  if (auto it = parked_.find(*id); it != parked_.end() && !it->second.empty()) {
    Parked conn = std::move(it->second.front());
    it->second.pop_front();
    if (it->second.empty()) parked_.erase(it);
    return Deliver(c, std::move(conn), *id, args);
  }
  if (TryAccept(c, listener->Get(), *id, args)) return;
  FileId listener_id = *id;
  env_.held.Hold(std::move(c), std::move(*listener), HeldCalls::Wait::kRead,
                 [this, listener_id, args](PendingCall& call, int l) {
                   return TryAccept(call, l, listener_id, args);
                 });
  ++env_.stats.held;
}

bool SocketCalls::TryAccept(PendingCall& c, int listener, const FileId& listener_id,
                            const AcceptArgs& args) {
  // The kernel reserves the new fd before it takes a connection from the queue: with a full fd
  // table accept fails with EMFILE and the connection stays queued (the listener stays readable,
  // so the program's retry loop sees it again).
  if (FdTableFull(c.tid())) {
    c.Fail(EMFILE);
    return true;
  }
  auto flags = GetFileFlags(listener);
  bool blocking = flags && !(*flags & O_NONBLOCK);
  if (blocking && IntSockOpt(listener, SOL_SOCKET, SO_ACCEPTCONN) == 1) {
    pollfd p{listener, POLLIN, 0};
    if (poll(&p, 1, 0) == 0) return false;  // nothing queued: hold until the listener is readable
  }
  int conn;
  int err;
  {
    std::optional<BlockingGuard> guard;
    if (blocking) guard.emplace();
    conn = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC | (args.flags & SOCK_NONBLOCK));
    err = errno;
  }
  if (conn < 0 && err == EINTR && blocking) return false;  // taken by someone else meanwhile
  if (conn < 0) {
    if (IsSupervisorResourceError(err)) {
      c.Continue();
    } else {
      c.Fail(err);
    }
    return true;
  }
  Parked accepted{UniqueFd(conn), UniqueFd()};
  if (env_.switcher != nullptr) {
    if (auto end = env_.switcher->Claim(c.tid(), conn)) {
      (void)SetNonBlocking(end->Get(), (args.flags & SOCK_NONBLOCK) != 0);
      accepted.unix_end = std::move(*end);
    } else {
      ++env_.stats.left_on_tcp;
    }
  }
  Deliver(c, std::move(accepted), listener_id, args);
  return true;
}

void SocketCalls::Deliver(PendingCall& c, Parked conn, const FileId& listener_id,
                          const AcceptArgs& args) {
  // accept() asks for the peer with getname(peer=2), which answers even for a connection that was
  // reset while queued; getpeername() would fail then. SO_PEERNAME is the same getname(peer=2).
  // SO_PEERNAME wants a buffer no larger than the address: size it from our own address's family.
  SockAddr peer;
  auto self = SocketName(conn.tcp.Get(), false);
  socklen_t peer_len =
      self && self->family() == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
  if (getsockopt(conn.tcp.Get(), SOL_SOCKET, SO_PEERNAME, peer.mutable_get(), &peer_len) < 0) {
    if (args.addr != 0) return (void)c.Fail(ECONNABORTED);  // as the kernel when getname fails
    peer_len = 0;
  }
  peer.set_len(peer_len);
  c.trace().note = "(peer " + peer.ToString() + ")";
  if (args.addr != 0) {
    auto target = OpenTarget(c);
    if (!target) return c.Abandon();
    // As in the kernel, a bad address fails the call after the connection was taken: it is lost.
    auto st = tracer::CopySockAddrOut(*target, peer, args.addr, args.addrlen_ptr,
                                      env_.features.addrlen_first);
    if (!st) return (void)c.Fail(st.error().err);
  }
  int give = conn.unix_end ? conn.unix_end.Get() : conn.tcp.Get();
  auto fd = env_.installer.Install({c.id(), give, -1, (args.flags & SOCK_CLOEXEC) != 0, true});
  if (!fd) {
    parked_[listener_id].push_back(std::move(conn));
    if (fd.error().TargetGone()) return c.Abandon();
    return (void)c.Fail(fd.error().err);  // EMFILE: the target's fd table is full
  }
  ++env_.stats.accepts;
  if (conn.unix_end) {
    uint64_t end_ino = InodeOf(conn.unix_end.Get());
    c.trace().note += " switched to unix";
    env_.switcher->Installed(c.tid(), end_ino);
    env_.switcher->Book(end_ino, std::move(conn.tcp), /*client=*/false);
  }
  c.AnsweredWithFd(*fd);
}

void SocketCalls::OnGetName(PendingCall& c, bool peer) {
  int fd = static_cast<int>(c.arg(0));
  c.trace().args = FdText(c.arg(0));
  auto target = OpenTarget(c);
  if (!target) return;
  auto sock = TakeSocket(c, *target, fd);
  if (!sock) return;
  auto addr = SocketName(sock->tcp(), peer);
  if (!addr) {
    if (!sock->switched) return;  // ENOTCONN and friends: the kernel says it exactly
    return (void)c.Fail(errno);
  }
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
  if (env_.switcher == nullptr || (level == SOL_SOCKET && !IsIdentityOption(name))) return;
  auto copy = TakeFd(c.tid(), static_cast<int>(c.arg(0)));
  if (!copy || IntSockOpt(copy->Get(), SOL_SOCKET, SO_DOMAIN) != AF_UNIX) return;
  const SwitchedSocket* sw = env_.switcher->Find(InodeOf(copy->Get()));
  if (sw == nullptr) return;
  if (!env_.notifier.IdValid(c.id())) return c.Abandon();
  EmulateSockopt(c, sw->tcp.Get(), get);
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
    if (!value.empty() && !target->Read(optval, value)) return (void)c.Fail(EFAULT);
    if (setsockopt(tcp, level, name, value.data(), static_cast<socklen_t>(value.size())) < 0) {
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
  if (env_.switcher == nullptr || (how != SHUT_RD && how != SHUT_RDWR)) return;
  auto target = OpenTarget(c);
  if (!target) return;
  auto sock = TakeSocket(c, *target, static_cast<int>(c.arg(0)));
  if (!sock || !sock->switched) return;
  // TCP's SHUT_RD is local: the peer may keep sending. On AF_UNIX it would also make the peer's
  // writes fail with EPIPE, so the read side is left open (docs/differences.md).
  if (how == SHUT_RD) return (void)c.Return(0);
  if (shutdown(sock->fd.Get(), SHUT_WR) < 0) return (void)c.Fail(errno);
  c.Return(0);
}

}  // namespace slipstream::supervisor

namespace slipstream::supervisor {

void SocketCalls::OnEpollCtl(PendingCall& c) {
  int epfd = static_cast<int>(c.arg(0));
  int fd = static_cast<int>(c.arg(2));
  c.trace().args = FdText(c.arg(0)) + ", EPOLL_CTL_ADD, " + FdText(c.arg(2));
  if (env_.switcher == nullptr) return;
  auto target = OpenTarget(c);
  if (!target) return;
  auto copy = TakeFd(c.tid(), fd);
  if (!copy) return;
  int domain = IntSockOpt(copy->Get(), SOL_SOCKET, SO_DOMAIN);
  if (domain != AF_INET && domain != AF_INET6) return;
  // Only a TCP socket that is neither connected nor listening can still be switched later.
  if (IntSockOpt(copy->Get(), SOL_SOCKET, SO_ACCEPTCONN) != 0 || SocketName(copy->Get(), true)) return;
  if (IntSockOpt(copy->Get(), SOL_SOCKET, SO_TYPE) != SOCK_STREAM) return;
  if (auto tgid = ThreadGroupOf(c.tid())) {
    env_.switcher->NoteEpollRegistration(InodeOf(copy->Get()), *tgid, epfd, fd);
  }
  // CONTINUE: the kernel registers the TCP socket; the switch moves the item later.
}

}  // namespace slipstream::supervisor
