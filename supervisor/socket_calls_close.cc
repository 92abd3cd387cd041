// The close side of a switched connection: TCP's SHUT_RD (a relay, since AF_UNIX's would break
// the peer's writes), SO_LINGER mirrored on the retained TCP socket, and the prompt release of
// ports an abortive close freed. docs/differences.md lists what stays different.
#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <algorithm>

#include <spdlog/spdlog.h>

#include <string>

#include "base/socket_info.h"
#include "fdinject/epoll_migrate.h"
#include "supervisor/socket_calls.h"
#include "supervisor/socket_calls_util.h"

namespace slipstream::supervisor {

std::optional<UniqueFd> SocketCalls::ShutReadSwitched(PendingCall& c, int old_end,
                                                      bool write_shut) {
  int fd = static_cast<int>(c.arg(0));
  uint64_t old_ino = InodeOf(old_end);
  auto fd_flags = fdinject::ReadTargetFdFlags(c.tid(), fd);
  auto file_flags = GetFileFlags(old_end);
  if (!fd_flags || !file_flags || (fd_flags->ino != 0 && fd_flags->ino != old_ino)) {
    return std::nullopt;
  }
  auto pair = fdinject::MakeStreamPair((*file_flags & O_NONBLOCK) != 0, true);
  UniqueFd outer(fcntl(old_end, F_DUPFD_CLOEXEC, 0));
  if (!pair || !outer) return std::nullopt;
  auto& [end, inner] = *pair;
  (void)fdinject::CopySocketOptions(old_end, end.Get());
  fdinject::CopyAsyncOwner(old_end, end.Get());
  auto installed = env_.installer.Install({c.id(), end.Get(), fd, fd_flags->cloexec, false});
  if (!installed) {
    if (installed.error().TargetGone()) c.Abandon();
    return std::nullopt;
  }
  if (auto moved = fdinject::MoveEpollRegistrations(ProcessOf(c), fd, old_ino, old_end, end.Get());
      !moved) {
    spdlog::warn("could not move the epoll registrations of fd {} in pid {}: {}", fd, ProcessOf(c),
                 moved.error().ToString());
  }
  // SHUT_WR before SHUT_RD: the new end is shut likewise (the relay passes the EOF on).
  if (write_shut) shutdown(end.Get(), SHUT_WR);
  // What had arrived before the shutdown: TCP still lets the program read it.
  // Only what is queued now (SIOCINQ): a peer that keeps writing must not keep us here.
  std::string unread;
  int queued = 0;
  if (ioctl(outer.Get(), SIOCINQ, &queued) < 0) queued = 0;
  char buf[65536];
  while (unread.size() < static_cast<size_t>(queued)) {
    size_t want = std::min(sizeof(buf), static_cast<size_t>(queued) - unread.size());
    ssize_t n = recv(outer.Get(), buf, want, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    unread.append(buf, static_cast<size_t>(n));
  }
  env_.switcher->ReadShut(old_ino, InodeOf(end.Get()), std::move(inner), std::move(outer),
                          std::move(unread));
  c.trace().note = "(read side relayed: TCP's SHUT_RD)";
  return std::move(end);
}

void SocketCalls::MirrorLinger(PendingCall& c, const tracer::TargetAccess& target) {
  if (static_cast<int>(c.arg(4)) < static_cast<int>(sizeof(linger))) return;  // the kernel's EINVAL
  linger value{};
  if (!target.Read(c.arg(3), {reinterpret_cast<uint8_t*>(&value), sizeof(value)})) return;
  auto copy = TakeFd(c.tid(), static_cast<int>(c.arg(0)));
  if (!copy || IntSockOpt(copy->Get(), SOL_SOCKET, SO_DOMAIN) != AF_UNIX) return;
  SwitchedSocket* sw = env_.switcher->FindOrAdopt(copy->Get());
  if (sw == nullptr) return;
  if (!env_.notifier.IdValid(c.id())) return c.Abandon();
  // The option is set here, on our copy of the program's end (the same file), with the value we
  // read: were the kernel to run the call (CONTINUE) it would read the program's memory again,
  // and a thread changing the value in between would leave a reset armed against it.
  if (setsockopt(copy->Get(), SOL_SOCKET, SO_LINGER, &value, sizeof(value)) < 0) {
    return (void)c.Fail(errno);
  }
  // The retained connection ends when its program's end is released: with {1, 0} it then sends a
  // reset and frees its port at once (no TIME_WAIT), as the program's close() would over TCP.
  (void)setsockopt(sw->tcp.Get(), SOL_SOCKET, SO_LINGER, &value, sizeof(value));
  sw->abortive = value.l_onoff != 0 && value.l_linger == 0;
  // (Not after SHUT_RD: the peer of the program's end is then the relay's, which keeps no
  // handle for this; such a close reaches the peer as EOF, docs/differences.md.)
  if (sw->abortive && !sw->reset_armed && !sw->read_shut) {
    sw->reset_armed = env_.switcher->ArmReset(copy->Get());
  } else if (!sw->abortive && sw->reset_armed) {
    // {1, 0} taken back: the byte that arms the reset goes, and the close is orderly again.
    char byte;
    (void)recv(copy->Get(), &byte, 1, MSG_OOB | MSG_DONTWAIT);
    sw->reset_armed = false;
  }
  (void)c.Return(0);
}

void SocketCalls::ArmResetIfAbortive(int end, uint64_t end_ino, const linger& value) {
  if (value.l_onoff == 0 || value.l_linger != 0) return;
  SwitchedSocket* sw = env_.switcher->Find(end_ino);
  if (sw == nullptr) return;
  sw->abortive = true;
  if (!sw->reset_armed) sw->reset_armed = env_.switcher->ArmReset(end);
}

void SocketCalls::ReleaseBeforeBind(PendingCall& c, const tracer::TargetAccess& target) {
  auto addr = tracer::CopySockAddrIn(target, c.arg(1), static_cast<int64_t>(c.arg(2)));
  if (!addr || (addr->family() != AF_INET && addr->family() != AF_INET6) || addr->port() == 0) {
    return;
  }
  env_.switcher->ReleaseClosed(addr->port());
}

}  // namespace slipstream::supervisor
