#include "supervisor/socket_calls.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>

#include <string>

#include "supervisor/blocking_guard.h"

namespace slipstream::supervisor {

using tracer::Call;
using tracer::TargetAccess;

bool IsSupervisorResourceError(int err) {
  return err == EMFILE || err == ENFILE || err == ENOMEM || err == ENOBUFS;
}

namespace {

std::string FdText(uint64_t fd) { return std::to_string(static_cast<int>(fd)); }

int SocketOption(int fd, int level, int name) {
  int value = -1;
  socklen_t len = sizeof(value);
  if (getsockopt(fd, level, name, &value, &len) < 0) return -1;
  return value;
}

// Best effort, for --trace only: the address a connect/bind call names.
std::string AddrText(const TargetAccess* target, uint64_t ptr, uint64_t len) {
  if (target == nullptr) return "?";
  auto addr = tracer::CopySockAddrIn(*target, ptr, static_cast<int64_t>(len));
  if (!addr) return addr.error().err == EFAULT ? "<bad address>" : "<addrlen " + std::to_string(static_cast<int>(len)) + ">";
  return addr->ToString();
}

}  // namespace

size_t SocketCalls::parked() const {
  size_t n = 0;
  for (const auto& [id, queue] : parked_) n += queue.size();
  return n;
}

void SocketCalls::Handle(PendingCall call) {
  switch (call.trace().call) {
    case Call::kSocket: return OnSocket(call);
    case Call::kConnect: return OnConnect(std::move(call));
    case Call::kAccept: return OnAccept(std::move(call), false);
    case Call::kAccept4: return OnAccept(std::move(call), true);
    case Call::kBind: return OnBind(call);
    case Call::kListen: return OnListen(call);
    case Call::kGetsockname: return OnGetName(call, false);
    case Call::kGetpeername: return OnGetName(call, true);
    case Call::kGetsockopt: return OnSockopt(call, true);
    case Call::kSetsockopt: return OnSockopt(call, false);
    case Call::kShutdown: return OnShutdown(call);
    case Call::kEpollCtl: return;  // answered CONTINUE by the PendingCall
  }
}

std::optional<TargetAccess> SocketCalls::OpenTarget(PendingCall& c) {
  if (!CanEmulate()) return std::nullopt;
  auto target = TargetAccess::Open(c.tid(), env_.features.pidfd_thread);
  if (!target) return std::nullopt;
  return std::move(*target);
}

std::optional<UniqueFd> SocketCalls::TakeInetSocket(PendingCall& c, const TargetAccess& target,
                                                    int fd) {
  auto copy = target.TakeFd(fd);
  if (!copy) return std::nullopt;  // EBADF and friends: the kernel says it exactly
  int domain = SocketOption(copy->Get(), SOL_SOCKET, SO_DOMAIN);
  if (domain != AF_INET && domain != AF_INET6) return std::nullopt;
  if (SocketOption(copy->Get(), SOL_SOCKET, SO_TYPE) != SOCK_STREAM) return std::nullopt;
  if (!env_.notifier.IdValid(c.id())) {
    c.Abandon();
    return std::nullopt;
  }
  return std::move(*copy);
}

void SocketCalls::OnSocket(PendingCall& c) {
  c.trace().args = std::string(FamilyName(static_cast<int>(c.arg(0)))) + ", " +
                   SocketTypeText(static_cast<int>(c.arg(1))) + ", " +
                   std::to_string(static_cast<int>(c.arg(2)));
  // The kernel creates the socket: in the target's network namespace, cgroup and credentials.
}

void SocketCalls::OnBind(PendingCall& c) {
  auto target = OpenTarget(c);
  c.trace().args = FdText(c.arg(0)) + ", " + AddrText(target ? &*target : nullptr, c.arg(1), c.arg(2));
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
    return c.Fail(errno);
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
  if (!dest || !dest->IsInet()) return;  // the kernel gives EINVAL/EFAULT/EAFNOSUPPORT itself
  ++env_.stats.connects;
  if (!env_.local.SameNetns(c.tid()) || !env_.local.IsLocal(*dest)) return;
  auto sock = TakeInetSocket(c, *target, fd);
  if (!sock) return;
  if (TryConnect(c, sock->Get(), *dest)) return;
  SockAddr copied = *dest;
  env_.held.Hold(std::move(c), std::move(*sock), HeldCalls::Wait::kWrite,
                 [this, copied](PendingCall& call, int s) { return TryConnect(call, s, copied); });
  ++env_.stats.held;
}

bool SocketCalls::TryConnect(PendingCall& c, int sock, const SockAddr& dest) {
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
  if (rc == 0) {
    c.Return(0);
  } else if (IsSupervisorResourceError(err)) {
    c.Continue();
  } else {
    c.Fail(err);
  }
  return true;
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
  if (auto it = parked_.find(*id); it != parked_.end() && !it->second.empty()) {
    UniqueFd conn = std::move(it->second.front());
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
  auto flags = GetFileFlags(listener);
  bool blocking = flags && !(*flags & O_NONBLOCK);
  if (blocking) {
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
  if (conn >= 0) {
    Deliver(c, UniqueFd(conn), listener_id, args);
  } else if (IsSupervisorResourceError(err)) {
    c.Continue();
  } else {
    c.Fail(err);
  }
  return true;
}

void SocketCalls::Deliver(PendingCall& c, UniqueFd conn, const FileId& listener_id,
                          const AcceptArgs& args) {
  SockAddr peer;
  socklen_t len = sizeof(sockaddr_storage);
  if (getpeername(conn.Get(), peer.mutable_get(), &len) < 0) {
    return c.Fail(ECONNABORTED);  // as the kernel's accept does when getname fails
  }
  peer.set_len(len);
  c.trace().note = "(peer " + peer.ToString() + ")";
  if (args.addr != 0) {
    auto target = tracer::TargetAccess::Open(c.tid(), env_.features.pidfd_thread);
    if (!target) return c.Abandon();
    // As in the kernel, a bad address fails the call after the connection was taken: it is lost.
    auto st = tracer::CopySockAddrOut(*target, peer, args.addr, args.addrlen_ptr);
    if (!st) return c.Fail(st.error().err);
  }
  auto fd = env_.installer.Install(
      {c.id(), conn.Get(), -1, (args.flags & SOCK_CLOEXEC) != 0, /*send=*/true});
  if (fd) {
    ++env_.stats.accepts;
    ++env_.stats.left_on_tcp;
    return c.AnsweredWithFd(*fd);
  }
  parked_[listener_id].push_back(std::move(conn));
  if (fd.error().TargetGone()) return c.Abandon();
  c.Fail(fd.error().err);  // EMFILE: the target's fd table is full
}

void SocketCalls::OnGetName(PendingCall& c, bool peer) {
  int fd = static_cast<int>(c.arg(0));
  c.trace().args = FdText(c.arg(0));
  auto target = OpenTarget(c);
  if (!target) return;
  auto sock = TakeInetSocket(c, *target, fd);
  if (!sock) return;
  SockAddr addr;
  socklen_t len = sizeof(sockaddr_storage);
  int rc = peer ? getpeername(sock->Get(), addr.mutable_get(), &len)
                : getsockname(sock->Get(), addr.mutable_get(), &len);
  if (rc < 0) return;  // ENOTCONN and friends: the kernel says it exactly
  addr.set_len(len);
  auto st = tracer::CopySockAddrOut(*target, addr, c.arg(1), c.arg(2));
  if (!st) return c.Fail(st.error().err);
  c.trace().note = "(" + addr.ToString() + ")";
  c.Return(0);
}

void SocketCalls::OnSockopt(PendingCall& c, bool get) {
  int level = static_cast<int>(c.arg(1));
  int name = static_cast<int>(c.arg(2));
  c.trace().args = FdText(c.arg(0)) + ", " + SockoptText(level, name);
  if (!get && static_cast<int>(c.arg(4)) == sizeof(int)) {
    if (auto target = OpenTarget(c)) {
      if (auto v = target->ReadInt(c.arg(3))) c.trace().args += ", [" + std::to_string(*v) + "]";
    }
  }
}

void SocketCalls::OnShutdown(PendingCall& c) {
  c.trace().args = FdText(c.arg(0)) + ", " + ShutdownHowText(static_cast<int>(c.arg(1)));
}

}  // namespace slipstream::supervisor
