// The close side of a switched connection: TCP's SHUT_RD (a relay, since AF_UNIX's would break
// the peer's writes), SO_LINGER mirrored on the retained TCP socket, and the prompt release of
// ports an abortive close freed. docs/differences.md lists what stays different.
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>

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
  auto installed = env_.installer.Install({c.id(), end.Get(), fd, fd_flags->cloexec, false});
  if (!installed) {
    if (installed.error().TargetGone()) c.Abandon();
    return std::nullopt;
  }
  if (auto moved =
          fdinject::MoveEpollRegistrations(ProcessOf(c.tid()), fd, old_ino, old_end, end.Get());
      !moved) {
    spdlog::warn("could not move the epoll registrations of fd {} in pid {}: {}", fd,
                 ProcessOf(c.tid()), moved.error().ToString());
  }
  // SHUT_WR before SHUT_RD: the new end is shut likewise (the relay passes the EOF on).
  if (write_shut) shutdown(end.Get(), SHUT_WR);
  // What had arrived before the shutdown: TCP still lets the program read it.
  std::string unread;
  char buf[65536];
  for (;;) {
    ssize_t n = recv(outer.Get(), buf, sizeof(buf), MSG_DONTWAIT);
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
  // The retained connection ends when its program's end is released: with {1, 0} it then sends a
  // reset and frees its port at once (no TIME_WAIT), as the program's close() would over TCP.
  // The call itself runs in the kernel on the AF_UNIX end (CONTINUE), whose answer and later
  // getsockopt(SO_LINGER) are TCP's: both accept any value.
  (void)setsockopt(sw->tcp.Get(), SOL_SOCKET, SO_LINGER, &value, sizeof(value));
  sw->abortive = value.l_onoff != 0 && value.l_linger == 0;
  // (Not after SHUT_RD: the peer of the program's end is then the relay's, which keeps no
  // handle for this; such a close reaches the peer as EOF, docs/differences.md.)
  if (sw->abortive && !sw->reset_armed && !sw->read_shut) {
    sw->reset_armed = env_.switcher->ArmReset(copy->Get());
  }
}

void SocketCalls::ReleaseBeforeBind(PendingCall& c, const tracer::TargetAccess& target) {
  auto addr = tracer::CopySockAddrIn(target, c.arg(1), static_cast<int64_t>(c.arg(2)));
  if (!addr || (addr->family() != AF_INET && addr->family() != AF_INET6) || addr->port() == 0) {
    return;
  }
  env_.switcher->ReleaseClosed(addr->port());
}

}  // namespace slipstream::supervisor
