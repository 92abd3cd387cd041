// accept() and accept4(): run on the listener copy; the connection is paired when it can be.
#include "supervisor/socket_calls.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <string>

#include "base/socket_info.h"
#include "fdinject/installer.h"
#include "preload-fallback/preload_abi.h"
#include "supervisor/blocking_guard.h"
#include "supervisor/socket_calls_util.h"

namespace slipstream::supervisor {

using tracer::TargetAccess;

void SocketCalls::OnAccept(PendingCall c, bool is_accept4) {
  AcceptArgs args{static_cast<int>(c.arg(0)), c.arg(1), c.arg(2),
                  is_accept4 ? static_cast<int>(c.arg(3)) : 0};
  c.trace().args = FdText(c.arg(0));
  if (is_accept4) c.trace().args += ", " + AcceptFlagsText(args.flags);
  if (args.flags & ~(SOCK_CLOEXEC | SOCK_NONBLOCK)) return;  // the kernel's EINVAL
  if (env_.switcher == nullptr) return;  // --no-switch observes only: the kernel accepts
  auto target = OpenTarget(c);
  if (!target) return;
  auto listener = TakeInetSocket(c, args.fd);
  if (!listener) return;
  auto id = GetFileId(listener->Get());
  if (!id) return;
  if (env_.switcher != nullptr && !env_.switcher->KnowsListener(id->ino) &&
      env_.local.SocketInOurNetns(listener->Get(), c.tid())) {
    env_.switcher->OnListener(ProcessOf(c), args.fd, listener->Get());
  }
  if (TryAccept(c, listener->Get(), *id, args, /*first_try=*/true)) return;
  FileId listener_id = *id;
  env_.held.Hold(
      std::move(c), std::move(*listener), HeldCalls::Wait::kRead,
      [this, listener_id, args](PendingCall& call, int l) {
        return TryAccept(call, l, listener_id, args, /*first_try=*/false);
      },
      nullptr, listener_id);
  ++env_.stats.held;
}

bool SocketCalls::TryAccept(PendingCall& c, int listener, const FileId& listener_id,
                            const AcceptArgs& args, bool first_try) {
  // A connection taken for an accept that was withdrawn before it got it comes first.
  if (auto it = parked_.find(listener_id); it != parked_.end() && !it->second.empty()) {
    Parked conn = std::move(it->second.front());
    it->second.pop_front();
    if (it->second.empty()) parked_.erase(it);
    Deliver(c, std::move(conn), listener_id, args);
    return true;
  }
  pollfd p{listener, POLLIN, 0};
  bool queued = poll(&p, 1, 0) == 1 && (p.revents & POLLIN) != 0;
  // A connection taken for an accept whose claim is still out comes back parked if that accept
  // is withdrawn (a signal; this call may be its restart), and in the kernel it would still be
  // queued: with nothing queued, wait for the claim's end (held, blocking or not) rather than
  // answer EAGAIN or wait for the next connection.
  if (!queued && claims_out_.count(listener_id) != 0) return false;
  // Not for one of several accepts held on the listener: one arriving connection wakes them all
  // at once, and each would see it queued and be let through. One held alone (a sequential
  // blocking server's) is, so it costs a wait and nothing more.
  bool alone = first_try || env_.held.HeldWith(listener_id) <= 1;
  if (queued && alone && NothingToPair(listener)) {
    // The kernel's accept takes the oldest queued connection, and none of those can be a
    // switching client's: one trapped call and nothing more. (Expected race: another thread of
    // the program accepts the queued connection first, and ours waits in the kernel for a later
    // one that may be a switching client's: that client's supervisor then relays it, as for an
    // unsupervised acceptor.) Counted as accepted and left on TCP: the kernel's result is not
    // seen.
    ++env_.stats.accepts;
    ++env_.stats.left_on_tcp;
    if (c.tracing()) c.trace().note = "(left on TCP: no switch to this port is in flight)";
    c.Continue();
    return true;
  }
  // The kernel reserves the new fd before it takes a connection from the queue: with a full fd
  // table accept fails with EMFILE and the connection stays queued (the listener stays readable,
  // so the program's retry loop sees it again).
  if (FdTableFull(c.tid())) {
    c.Fail(EMFILE);
    return true;
  }
  auto flags = GetFileFlags(listener);
  bool blocking = flags && !(*flags & O_NONBLOCK);
  if (blocking && !queued && IntSockOpt(listener, SOL_SOCKET, SO_ACCEPTCONN) == 1) {
    return false;  // nothing queued: hold until the listener is readable
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
  auto accepted = std::make_shared<Parked>(Parked{UniqueFd(conn), UniqueFd(), {}});
  ++claims_out_[listener_id];
  auto waited = std::make_shared<bool>(false);  // the claim went to the daemon: answered later
  ClaimFromThisHost(c, conn, SocketName(conn, true),
                    [this, accepted, listener_id, args, waited](PendingCall& call,
                                                                std::optional<UniqueFd> end) {
                      if (end) {
                        (void)SetNonBlocking(end->Get(), (args.flags & SOCK_NONBLOCK) != 0);
                        accepted->unix_end = std::move(*end);
                      } else {
                        ++env_.stats.left_on_tcp;
                      }
                      // After a wait the program may have left the call (a signal) and, with
                      // SA_RESTART, made it again with the same buffers: writing this
                      // connection's address there would give the restarted call's connection
                      // another's peer. Checked before writing anything; the connection goes to
                      // the next accept. (Expected race: a signal after this check, as for any
                      // answer.)
                      if (*waited && !env_.notifier.IdValid(call.id())) {
                        Park(listener_id, std::move(*accepted));
                        call.Abandon();
                      } else {
                        Deliver(call, std::move(*accepted), listener_id, args);
                      }
                      if (auto it = claims_out_.find(listener_id); --it->second == 0) {
                        claims_out_.erase(it);
                        // Accepts held meanwhile for the claim's end (only a claim that waited
                        // lets other calls run): a non-blocking one fails with EAGAIN now if
                        // nothing was parked, a blocking one waits on.
                        if (*waited) WakeHeldAccepts(listener_id);
                      }
                    });
  *waited = true;
  return true;
}

void SocketCalls::Park(const FileId& listener_id, Parked conn) {
  if (!conn.gate.raised()) {
    if (auto local = SocketName(conn.tcp.Get(), false)) {
      conn.gate = env_.switcher->gate().Raise(matcher::AcceptGate::Kind::kParked, local->port());
    }
  }
  parked_[listener_id].push_back(std::move(conn));
  // An accept held on the listener meanwhile (the withdrawn one, restarted while its claim was
  // out) waits for the listener to be readable: it must take this one.
  WakeHeldAccepts(listener_id);
}

void SocketCalls::WakeHeldAccepts(const FileId& listener_id) {
  if (env_.held.HeldWith(listener_id) != 0) env_.held.Wake(listener_id);
}

bool SocketCalls::NothingToPair(int listener) {
  // A supervised client raises its port's `switching` gate before its connect() and keeps it
  // raised until its server end is installed, relayed or given up; an end pushed to us keeps it
  // raised too. Zero now: every connection already queued came from a client that is not
  // switching. Unknown (no table mapped): the accept runs here, and claims.
  auto local = SocketName(listener, false);
  if (!local || local->port() == 0) return false;
  // An end pushed to us may still wait unread in the daemon's socket: its `switching` raise lives
  // in the inbox entry it becomes (the client's and the daemon's own raises may both be gone if
  // they exited meanwhile). Read it first, as a claim would.
  env_.switcher->Refresh();
  auto switching = env_.switcher->gate().Read(matcher::AcceptGate::Kind::kSwitching, local->port());
  return switching && *switching == 0;
}

void SocketCalls::ClaimFromThisHost(PendingCall& c, int conn, const Result<SockAddr>& peer,
                                    ClaimThen then) {
  if (!peer) return then(c, std::nullopt);  // reset meanwhile: nothing to pair
  // Only a connection from this host can have a supervised client: others need no round trip.
  // "This host" includes the addresses of other network namespaces with supervisors.
  bool on_host = env_.local.IsLocal(*peer) || env_.switcher->FromOtherNetns(*peer);
  // The call goes with the claim, which may wait for the daemon's answer.
  auto call = std::make_shared<PendingCall>(std::move(c));
  env_.switcher->Claim([this, call] { return ProcessOf(*call); }, conn, *peer, on_host,
                       [call, then = std::move(then)](std::optional<UniqueFd> end, const char* why) {
                         if (!end && call->tracing()) {
                           call->trace().note += std::string(" (left on TCP: ") + why + ")";
                         }
                         then(*call, std::move(end));
                       });
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
    if (args.addr != 0) {  // as the kernel when getname fails
      if (conn.unix_end) env_.switcher->Disown(std::move(conn.unix_end));
      return (void)c.Fail(ECONNABORTED);
    }
    peer_len = 0;
  }
  peer.set_len(peer_len);
  // Before what the claim noted (why the connection stays TCP).
  if (c.tracing()) c.trace().note.insert(0, "(peer " + peer.ToString() + ")");
  if (args.addr != 0) {
    auto target = OpenTarget(c);
    if (!target) return c.Abandon();
    // As in the kernel, a bad address fails the call after the connection was taken: it is lost.
    auto st = tracer::CopySockAddrOut(*target, peer, args.addr, args.addrlen_ptr,
                                      env_.features.addrlen_first);
    if (!st) {
      if (conn.unix_end) env_.switcher->Disown(std::move(conn.unix_end));
      return (void)c.Fail(st.error().err);
    }
  }
  // The accepted socket inherited the listener's options (SO_RCVTIMEO, SO_LINGER...): so does
  // its end.
  linger linger_opt{};
  if (conn.unix_end) linger_opt = fdinject::CopySocketOptions(conn.tcp.Get(), conn.unix_end.Get());
  int give = conn.unix_end ? conn.unix_end.Get() : conn.tcp.Get();
  auto fd = env_.installer.Install({c.id(), give, -1, (args.flags & SOCK_CLOEXEC) != 0, true});
  if (!fd) {
    Park(listener_id, std::move(conn));
    if (fd.error().TargetGone()) return c.Abandon();
    return (void)c.Fail(fd.error().err);  // EMFILE: the target's fd table is full
  }
  ++env_.stats.accepts;
  if (conn.unix_end) {
    uint64_t end_ino = InodeOf(conn.unix_end.Get());
    c.trace().note += " switched to unix";
    env_.switcher->Installed(ProcessOf(c), end_ino, conn.tcp.Get());
    env_.switcher->Book(end_ino, std::move(conn.tcp), /*client=*/false);
    ArmResetIfAbortive(conn.unix_end.Get(), end_ino, linger_opt);
  }
  c.AnsweredWithFd(*fd);
}

void SocketCalls::OnLateClaim(PendingCall& c) {
  int fd = static_cast<int>(c.arg(0));
  c.trace().args = FdText(c.arg(0)) + ", SLIPSTREAM_OPT_CLAIM";
  if (env_.switcher == nullptr) return;  // the kernel's EOPNOTSUPP: the socket stays TCP
  auto target = OpenTarget(c);
  if (!target) return;
  auto len = target->ReadInt(c.arg(4));
  if (!len) return (void)c.Fail(EFAULT);
  if (*len < static_cast<int>(sizeof(int))) return (void)c.Fail(EINVAL);
  auto sock = TakeSocket(c, fd);
  if (!sock) return;
  auto answer = [&](int32_t claim) {
    if (!target->WriteInt(c.arg(3), claim) || !target->WriteInt(c.arg(4), sizeof(int32_t))) {
      return false;
    }
    return true;
  };
  if (sock->switched != nullptr) {  // claimed twice: nothing new to give
    if (!answer(SLIPSTREAM_CLAIM_SWITCHED)) return (void)c.Fail(EFAULT);
    return (void)c.Return(0);
  }
  // Written before the answer, which the target waits for in the call: if the switch succeeds,
  // the answer is ADDFD's SEND and the call returns the new fd (preload_abi.h).
  if (!answer(SLIPSTREAM_CLAIM_NEW_FD)) return (void)c.Fail(EFAULT);
  ++env_.stats.accepts;
  auto conn = std::make_shared<UniqueFd>(std::move(sock->fd));
  auto peer = SocketName(conn->Get(), true);
  c.trace().note = "(peer " + (peer ? peer->ToString() : std::string("?")) + ")";
  ClaimFromThisHost(c, conn->Get(), peer,
                    [this, conn](PendingCall& call, std::optional<UniqueFd> end) {
                      if (SwitchAccepted(call, conn->Get(), std::move(end)) || call.answered()) {
                        return;
                      }
                      // Left meanwhile (a signal): its restart claims again.
                      if (!env_.notifier.IdValid(call.id())) return call.Abandon();
                      auto program = OpenTarget(call);
                      if (!program) return;  // gone: CONTINUE, whose error leaves it on TCP
                      if (!program->WriteInt(call.arg(3), SLIPSTREAM_CLAIM_TCP)) {
                        return (void)call.Fail(EFAULT);
                      }
                      call.Return(0);
                    });
}

bool SocketCalls::SwitchAccepted(PendingCall& c, int conn, std::optional<UniqueFd> end) {
  if (!end) {
    ++env_.stats.left_on_tcp;
    return false;
  }
  // No scan for other fds naming the socket, unlike a connect's (HasOtherFds): the library makes
  // this claim before its accept returns, so no code of the program has seen the fd number yet.
  // A copy made meanwhile (another thread's fork, or a signal handler's) is one its holder does
  // not know it has, never one it uses as this connection; as for our own accept's socket, the
  // program learns the fd only once it names the AF_UNIX end. The scan cost 15 system calls per
  // switched connection, 39 % of the server's supervisor's time in connrate (BENCHMARKS.md §17).
  auto file_flags = GetFileFlags(conn);
  if (!file_flags || !SetNonBlocking(end->Get(), (*file_flags & O_NONBLOCK) != 0)) {
    env_.switcher->Disown(std::move(*end));
    ++env_.stats.left_on_tcp;
    return false;
  }
  linger linger_opt = fdinject::CopySocketOptions(conn, end->Get());
  // ADDFD with SEND (Linux 5.14) installs the end at a new fd and answers the call in one wake-up
  // of the target; the library moves it over the accepted fd with dup3. (SETFD over the fd, then
  // an answer, would wake the target twice.) The new fd is close-on-exec until then.
  auto installed = env_.installer.Install({c.id(), end->Get(), -1, true, true});
  if (!installed) {
    // The program keeps its TCP socket; the client's supervisor relays.
    env_.switcher->Disown(std::move(*end));
    if (installed.error().TargetGone()) c.Abandon();
    ++env_.stats.left_on_tcp;
    return false;
  }
  c.trace().note += " switched to unix (accepted in-process)";
  c.AnsweredThroughLibrary(*installed, 0);
  uint64_t end_ino = InodeOf(end->Get());
  env_.switcher->Installed(ProcessOf(c), end_ino, conn);
  env_.switcher->Book(end_ino, UniqueFd(fcntl(conn, F_DUPFD_CLOEXEC, 0)), /*client=*/false);
  ArmResetIfAbortive(end->Get(), end_ino, linger_opt);
  return true;
}

}  // namespace slipstream::supervisor
