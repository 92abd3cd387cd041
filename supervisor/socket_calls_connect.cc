// connect(): emulated for local destinations, switched when every listener is supervised.
#include "supervisor/socket_calls.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>

#include <spdlog/spdlog.h>

#include "base/proc_scan.h"
#include "base/socket_info.h"
#include "fdinject/epoll_migrate.h"
#include "supervisor/blocking_guard.h"
#include "supervisor/socket_calls_util.h"

namespace slipstream::supervisor {

using tracer::TargetAccess;

void SocketCalls::OnConnect(PendingCall c) {
  int fd = static_cast<int>(c.arg(0));
  auto target = OpenTarget(c);
  if (!target) {
    c.trace().args = FdText(c.arg(0)) + ", ?";
    return;
  }
  // Copied once: every decision and action uses this copy (docs/design.md, "A rewritten
  // address"), and so does the trace.
  auto dest = tracer::CopySockAddrIn(*target, c.arg(1), static_cast<int64_t>(c.arg(2)));
  if (c.tracing()) c.trace().args = FdText(c.arg(0)) + ", " + AddrText(dest, c.arg(2));
  if (!dest) return;  // the kernel gives EINVAL/EFAULT itself
  if (env_.switcher != nullptr && !dest->IsInet()) {
    // AF_UNSPEC (disconnect) or a bad family on a switched socket must get TCP's answer.
    if (auto s = TakeSocket(c, fd); s && s->switched) ConnectSwitched(c, *dest, *s);
    return;
  }
  if (!dest->IsInet()) return;  // EAFNOSUPPORT and friends from the kernel
  auto taken = TakeSocket(c, fd);
  if (taken && taken->switched) return ConnectSwitched(c, *dest, *taken);
  ++env_.stats.connects;
  // A destination that is not local here may be a supervised server in another network
  // namespace of this host (docs/design.md, "Across network namespaces").
  bool cross = !env_.local.IsLocal(*dest);
  bool daemon = env_.switcher != nullptr && env_.switcher->active();
  if (!taken) return;
  if (!env_.local.SocketInOurNetns(taken->fd.Get(), c.tid()) || (cross && !daemon)) {
    ++env_.stats.left_on_tcp;
    return;
  }
  uint64_t ino = unreported_connects_.empty() ? 0 : InodeOf(taken->fd.Get());
  if (ino != 0 && unreported_connects_.erase(ino) != 0) {
    // The restart of a connect() we completed but could not answer. If this answer is lost too
    // (another signal), the next restart must still get it.
    if (Established(taken->fd.Get())) {
      if (!c.Return(0)) unreported_connects_.insert(ino);
      return;
    }
  }
  // Not ours to switch (--no-switch, no daemon, or a listener we do not supervise): the kernel
  // runs the connect itself, with no cost on the data path. With no listener at all, we connect
  // ourselves (the kernel would refuse just the same): a supervised server may start listening
  // in between, and that connection must be switched, not left on TCP.
  using matcher::QueryReason;
  std::string why;
  auto pid = [&] { return ProcessOf(c); };
  auto reason = !daemon ? QueryReason::kError
                : cross ? env_.switcher->ApproveCross(pid, taken->fd.Get(), *dest, &why)
                        : env_.switcher->Approve(pid, taken->fd.Get(), *dest);
  if (reason == QueryReason::kOtherNamespace) c.trace().note = "(left on TCP: " + why + ")";
  if (reason != QueryReason::kSupervised && reason != QueryReason::kNoListener) {
    ++env_.stats.left_on_tcp;
    return;
  }
  bool approved = reason == QueryReason::kSupervised;
  // Raised before the handshake starts, so that a server accepting in-process sees it once the
  // connection is in its queue; lowered when the switch is over or given up (preload_abi.h).
  auto switching =
      std::make_shared<matcher::AcceptGate::Count>(env_.switcher->BeginSwitch(dest->port()));
  std::optional<UniqueFd> sock = std::move(taken->fd);
  auto prep = std::make_shared<SwitchPrep>();  // made once, kept across a held connect's retries
  if (TryConnect(c, sock->Get(), *dest, approved, *switching, *prep)) return;
  SockAddr copied = *dest;
  env_.held.Hold(std::move(c), std::move(*sock), HeldCalls::Wait::kWrite,
                 [this, copied, approved, switching, prep](PendingCall& call, int s) {
                   return TryConnect(call, s, copied, approved, *switching, *prep);
                 });
  ++env_.stats.held;
}

bool SocketCalls::TryConnect(PendingCall& c, int sock, const SockAddr& dest, bool approved,
                             matcher::AcceptGate::Count& switching, SwitchPrep& prep) {
  auto flags = GetFileFlags(sock);
  if (!flags) return false;
  bool blocking = !(*flags & O_NONBLOCK);
  if (approved && !prep.ready) PrepareSwitch(c, sock, !blocking, prep);
  int rc;
  int err;
  // Killed while this connect() runs, we would die at its return, the connection made, before we
  // could record that: the shepherd then looks at the socket itself (OutstandingTable).
  c.SetConnectProbe(ProcessOf(c), static_cast<int>(c.arg(0)));
  {
    std::optional<BlockingGuard> guard;
    if (blocking) guard.emplace();
    rc = connect(sock, dest.get(), dest.len());
    err = errno;
  }
  if (rc < 0 && err == EINTR && blocking) return false;  // handshake still running: hold
  // The connect is made, on the program's socket. Should we die before answering, the shepherd's
  // CONTINUE would run it again (EISCONN, or EINVAL once the AF_UNIX end is installed): it must
  // answer what the first connect() said instead (found by the chaos soak, tests/soak).
  if (rc == 0) c.SetFallback(OutstandingTable::kReturnZero);
  if (rc < 0 && err == EINPROGRESS) c.SetFallback(-EINPROGRESS);
  if (rc < 0 && err != EINPROGRESS) c.SetFallback(OutstandingTable::kContinue);
  // Switch only a connection that is established; one still in its handshake (a full SYN queue,
  // or TCP_FASTOPEN_CONNECT, whose connect() returns 0 before the SYN) stays TCP rather than
  // making a non-blocking program wait.
  bool connected = (rc == 0 || err == EINPROGRESS) && Established(sock);
  if (connected && !approved) {
    // Nothing listened when we decided, and now something does: decide again.
    approved = env_.switcher->Approve([&] { return ProcessOf(c); }, sock, dest) ==
               matcher::QueryReason::kSupervised;
    if (approved && !prep.ready) PrepareSwitch(c, sock, !blocking, prep);
  }
  bool shared = connected && approved && prep.shared;
  if (shared) c.trace().note = "(left on TCP: the socket has other fds)";
  bool in_handshake = (rc == 0 || err == EINPROGRESS) && !connected;
  if (approved && in_handshake) {
    c.trace().note = "(left on TCP: still in its handshake when connect() returned)";
  }
  bool switched =
      connected && approved && !shared && SwitchConnected(c, sock, prep, rc != 0, switching);
  if (approved && !switched) env_.switcher->Abort(ProcessOf(c), sock);
  // Every connection seen is counted once: switched (in Switcher), or here, whatever kept it on
  // TCP (not approved, other fds, a handshake still running, a switch given up).
  if (!switched) ++env_.stats.left_on_tcp;
  if (!c.answered()) {  // a switch by ADDFD SEND has answered already
    if (IsSupervisorResourceError(err) && rc != 0) {
      c.Continue();
      return true;
    }
    (void)(rc == 0 ? c.Return(0) : c.Fail(err));
  }
  bool delivered = c.delivered();
  if (!delivered && (rc == 0 || err == EINPROGRESS)) {
    // The program left the call after the connection was made (a signal without WAIT_KILLABLE,
    // before or after the switch). Its restarted connect() must report that connection, not
    // EISCONN.
    if (switched) {
      if (SwitchedSocket* sw = env_.switcher->Find(prep.end_ino)) sw->connect_unreported = true;
    } else {
      if (unreported_connects_.size() >= 4096) unreported_connects_.clear();  // stale: bound it
      unreported_connects_.insert(InodeOf(sock));
    }
  }
  return true;
}

void SocketCalls::PrepareSwitch(PendingCall& c, int sock, bool nonblocking, SwitchPrep& prep) {
  // Done before the handshake because the server's supervisor, woken by the handshake, claims the
  // connection and waits until we announce it (kConnected): work done between the handshake and
  // the announcement is the server's wait. The program waits in connect() meanwhile, so what is
  // read here is what the switch would have read after it, but for another thread's dup, fork or
  // new epoll instance during the handshake (expected races, as a dup after the scan was).
  prep.ready = true;
  prep.sock_ino = InodeOf(sock);
  // Only an answer by SEND uses the list of epoll instances (after SETFD they are found again).
  prep.by_send = AnswersBySend(c);
  prep.shared = HasOtherFds(c, sock, prep.sock_ino, prep.by_send ? &prep.epoll_fds : nullptr);
  if (prep.shared) return;
  auto pair = fdinject::MakeStreamPair(nonblocking, false);
  if (!pair) return;  // no end: SwitchConnected leaves the connection on TCP
  prep.end = std::move(pair->first);
  prep.server_end = std::move(pair->second);
  prep.linger_opt = fdinject::CopySocketOptions(sock, prep.end.Get());
  fdinject::CopyAsyncOwner(sock, prep.end.Get());
  prep.end_ino = InodeOf(prep.end.Get());
}

bool SocketCalls::HasOtherFds(PendingCall& c, int sock, uint64_t ino, std::vector<int>* epoll_fds) {
  // A copy of the socket made before connect() (dup, fork, SCM_RIGHTS) would go on naming the TCP
  // socket after the switch: what the program wrote through it would reach the idle TCP
  // connection and be lost without an error. Such a socket stays TCP. The caller and its
  // descendants are scanned (a whole-tree scan cost 12 % more connection set-up time in connrate);
  // not seen: a copy sent to a process outside that subtree, or in flight in an SCM_RIGHTS message.
  // Expected race: a thread that dups the fd after this scan and before the switch. The scan is
  // bounded: a subtree with more fds than kMaxScannedFds stays on TCP (docs/differences.md).
  constexpr int kMaxScannedFds = 1024;
  // `sock` is our copy of it: the fds are compared with it by kcmp, not by readlink.
  SocketFdQuery query{ino,       sock,        static_cast<int>(c.arg(0)), 2, kMaxScannedFds, true,
                      epoll_fds, &proc_files_};
  auto count = SocketFdCount(ProcessOf(c), query);
  return !count || *count > 1;  // cannot tell: do not risk it
}

bool SocketCalls::AnswersBySend(const PendingCall& c) const {
  // Only where a signal cannot take the answer away between the announcement of the switch and
  // the SEND (preload_abi.h): then only the target's death can, and its end goes with it.
  return env_.held.killable() && c.arg(5) == static_cast<uint64_t>(SLIPSTREAM_CONNECT_MARK) &&
         c.arg(4) != 0;
}

bool SocketCalls::InstallOverFd(PendingCall& c, uint64_t sock_ino, int end) {
  int fd = static_cast<int>(c.arg(0));
  auto fd_flags = fdinject::ReadTargetFdFlags(c.tid(), fd);
  if (!fd_flags) return false;
  // Another thread may have closed the fd and reused its number while this connect ran (the
  // kernel's connect holds its own reference): SETFD must not replace an unrelated file.
  if (fd_flags->ino != 0 && fd_flags->ino != sock_ino) return false;
  // SETFD swaps the slot like dup2: epoll registrations made after this point see the AF_UNIX end,
  // and the TCP socket lives on in our copy (no FIN is sent).
  auto installed = env_.installer.Install({c.id(), end, fd, fd_flags->cloexec, false});
  if (!installed) {
    // The target left the call (signal, exit) before the switch: its fd is still the TCP socket,
    // connected, and stays so; nothing was announced, so nobody pairs with it.
    if (installed.error().TargetGone()) c.Abandon();
    return false;
  }
  return true;
}

bool SocketCalls::SwitchConnected(PendingCall& c, int sock, SwitchPrep& prep, bool in_progress,
                                  matcher::AcceptGate::Count& switching) {
  if (!prep.end) return false;
  int fd = static_cast<int>(c.arg(0));
  pid_t pid = ProcessOf(c);
  UniqueFd end = std::move(prep.end);  // our copy, closed when the switch is done
  uint64_t end_ino = prep.end_ino;
  // From the library (preload_abi.h), the end is installed and the call answered at once, after
  // the switch is announced; otherwise the end replaces the program's fd before.
  bool by_send = prep.by_send;
  if (!by_send && !InstallOverFd(c, prep.sock_ino, end.Get())) return false;
  const std::string* by_seq = env_.switcher->BySeq(prep.sock_ino);
  std::string seq_note = by_seq != nullptr ? " (" + *by_seq + ")" : "";
  env_.switcher->ClientSwitched(pid, sock, prep.sock_ino, std::move(prep.server_end), end_ino,
                                std::move(switching), /*commit_follows=*/by_send);
  // epoll registrations made before the connect (register-then-connect: Go, Java NIO, libuv)
  // still name the TCP socket: move them to the AF_UNIX end, before the answer (an EPOLL_CTL_MOD
  // the program makes then must find the end). After SETFD every instance is looked at, and a
  // registration made later names the end already: exact. From the library, whose dup3 comes after
  // the answer, the instances the scan before the handshake listed (none: nothing to read).
  // After SETFD, the instances holding the TCP socket under `fd` by kcmp, one call per fd; where
  // kcmp is refused, MoveEpollRegistrations lists every instance (a readlink per fd).
  std::optional<std::vector<int>> holding;
  if (!by_send) holding = EpollFdsHolding(pid, sock, fd);
  const std::vector<int>* instances = by_send ? &prep.epoll_fds : holding ? &*holding : nullptr;
  if (auto moved =
          fdinject::MoveEpollRegistrations(pid, fd, prep.sock_ino, sock, end.Get(), instances);
      !moved) {
    spdlog::warn("could not move the epoll registrations of fd {} in pid {}: {}", fd, pid,
                 moved.error().ToString());
  }
  slipstream_names names{};  // for the library (preload_abi.h); lengths 0: not known
  if (by_send || c.tracing()) {
    auto local = SocketName(sock, false), remote = SocketName(sock, true);
    if (c.tracing()) {
      c.trace().note = "switched to unix (" + (local ? local->ToString() : "?") + " -> " +
                       (remote ? remote->ToString() : "?") + ")" + seq_note;
    }
    if (local && remote) names = LibraryNames(*local, *remote).value_or(names);
  }
  if (by_send) {
    AnswerWithEnd(c, prep.sock_ino, end.Get(), end_ino, names, in_progress);
    env_.switcher->Committed(pid, end_ino);
  }
  // The rest keeps the program waiting no longer: its next call is handled after this one.
  UniqueFd tcp(fcntl(sock, F_DUPFD_CLOEXEC, 0));
  env_.switcher->Book(end_ino, std::move(tcp), /*client=*/true, in_progress);
  ArmResetIfAbortive(end.Get(), end_ino, prep.linger_opt);
  return true;  // unless answered here, the caller answers with the connect's own result
}

void SocketCalls::AnswerWithEnd(PendingCall& c, uint64_t sock_ino, int end, uint64_t end_ino,
                                const slipstream_names& names, bool in_progress) {
  auto target = OpenTarget(c);
  slipstream_connect_answer answer{SLIPSTREAM_CLAIM_NEW_FD, in_progress ? EINPROGRESS : 0, end_ino,
                                   names};
  const auto* bytes = reinterpret_cast<const uint8_t*>(&answer);
  if (target && target->Write(c.arg(4), {bytes, sizeof(answer)})) {
    auto installed = env_.installer.Install({c.id(), end, -1, true, true});
    if (installed) return c.AnsweredThroughLibrary(*installed, answer.err);
    // Killable: only the target's death takes the call away, and its end closes with it.
    if (installed.error().TargetGone()) return c.Abandon();
    // EMFILE (no room for a new fd): put the end over the socket's fd, then answer as usual.
  }
  if (target) (void)target->WriteInt(c.arg(4), SLIPSTREAM_CLAIM_TCP);
  if (!InstallOverFd(c, sock_ino, end) && !c.answered()) {
    // Announced, but the end is in no fd of the program: it must not use its TCP socket as if
    // nothing happened, and cannot be given the end: fail the connect as a reset connection.
    c.Fail(ECONNRESET);
  }
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
    if (!flags || (flags->ino != 0 && flags->ino != InodeOf(sock.fd.Get()))) return;
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
    sw.connect_unreported = !c.Return(0);  // a lost answer is owed to the next restart
    return;
  }
  c.Fail(EISCONN);
}

}  // namespace slipstream::supervisor
