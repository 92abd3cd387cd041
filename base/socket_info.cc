#include "base/socket_info.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "base/syscalls.h"

namespace slipstream {

uint64_t InodeOf(int fd) {
  auto id = GetFileId(fd);
  return id ? id->ino : 0;
}

uint64_t PathInode(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

int IntSockOpt(int fd, int level, int name) {
  int value = -1;
  socklen_t len = sizeof(value);
  if (getsockopt(fd, level, name, &value, &len) < 0) return -1;
  return value;
}

Result<SockAddr> SocketName(int fd, bool peer) {
  SockAddr a;
  socklen_t len = sizeof(sockaddr_storage);
  int rc = peer ? getpeername(fd, a.mutable_get(), &len) : getsockname(fd, a.mutable_get(), &len);
  if (rc < 0) return Error(errno, peer ? "getpeername" : "getsockname");
  a.set_len(len);
  return a;
}

bool IsTcpSocket(int fd) {
  int domain = IntSockOpt(fd, SOL_SOCKET, SO_DOMAIN);
  return (domain == AF_INET || domain == AF_INET6) &&
         IntSockOpt(fd, SOL_SOCKET, SO_PROTOCOL) == IPPROTO_TCP;
}

bool IsUnixStreamSocket(int fd) {
  return IntSockOpt(fd, SOL_SOCKET, SO_DOMAIN) == AF_UNIX &&
         IntSockOpt(fd, SOL_SOCKET, SO_TYPE) == SOCK_STREAM;
}

}  // namespace slipstream
