#include "matcher/socket_activation.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>

#include "matcher/paths.h"

namespace slipstream::matcher {
namespace {

// A decimal number and nothing else (LISTEN_PID and LISTEN_FDS); -1 otherwise.
long ParseCount(const char* text) {
  if (text == nullptr || *text == '\0') return -1;
  char* end = nullptr;
  errno = 0;
  long v = strtol(text, &end, 10);
  if (errno != 0 || *end != '\0' || v < 0) return -1;
  return v;
}

int SocketOption(int fd, int option) {
  int value = -1;
  socklen_t len = sizeof(value);
  if (getsockopt(fd, SOL_SOCKET, option, &value, &len) < 0) return -1;
  return value;
}

// The directory the socket is bound in, when its name is DIR/matcher.sock (what supervisors
// connect to: matcher/paths.h).
Result<std::string> BoundDir(int fd) {
  sockaddr_un addr{};
  socklen_t len = sizeof(addr);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) < 0) {
    return Errno("getsockname(activated socket)");
  }
  size_t path_len =
      len > offsetof(sockaddr_un, sun_path) ? len - offsetof(sockaddr_un, sun_path) : 0;
  std::string path(addr.sun_path, strnlen(addr.sun_path, path_len));
  size_t slash = path.rfind('/');
  if (path.empty() || path[0] != '/' || slash == std::string::npos) {
    return Error(EINVAL, "activated socket is not bound to an absolute path");
  }
  std::string dir = path.substr(0, slash);
  if (SocketPath(dir) != path) {
    return Error(EINVAL, "activated socket is not named matcher.sock");
  }
  return dir;
}

}  // namespace

Result<std::optional<ActivatedSocket>> TakeActivatedSocket(bool all_users) {
  long pid = ParseCount(getenv("LISTEN_PID"));
  if (pid != static_cast<long>(getpid())) return std::nullopt;
  long count = ParseCount(getenv("LISTEN_FDS"));
  // Taken or refused, the sockets are ours: a later exec must not see them as its own.
  unsetenv("LISTEN_PID");
  unsetenv("LISTEN_FDS");
  unsetenv("LISTEN_FDNAMES");
  if (count != 1) return Error(EINVAL, "LISTEN_FDS: slipstreamd takes exactly one socket");
  UniqueFd fd(kListenFdsStart);
  if (SocketOption(fd.Get(), SO_DOMAIN) != AF_UNIX ||
      SocketOption(fd.Get(), SO_TYPE) != SOCK_SEQPACKET) {
    return Error(EINVAL,
                 "activated socket is not AF_UNIX SOCK_SEQPACKET (ListenSequentialPacket=)");
  }
  if (SocketOption(fd.Get(), SO_ACCEPTCONN) != 1) {
    return Error(EINVAL, "activated socket is not listening");
  }
  int fd_flags = fcntl(fd.Get(), F_GETFD);
  int fl_flags = fcntl(fd.Get(), F_GETFL);
  if (fd_flags < 0 || fl_flags < 0 || fcntl(fd.Get(), F_SETFD, fd_flags | FD_CLOEXEC) < 0 ||
      fcntl(fd.Get(), F_SETFL, fl_flags | O_NONBLOCK) < 0) {
    return Errno("fcntl(activated socket)");
  }
  auto dir = BoundDir(fd.Get());
  if (!dir) return tl::unexpected(dir.error());
  // The runtime directory holds the lock and listeners.table: as with DaemonRuntimeDir(), it must
  // be ours and closed to others (slipstreamd.socket: DirectoryMode=0700), or to writers only
  // when serving every user (DirectoryMode=0755).
  if (auto st = CheckDaemonDir(*dir, all_users); !st) return tl::unexpected(st.error());
  return ActivatedSocket{std::move(fd), std::move(*dir)};
}

}  // namespace slipstream::matcher
