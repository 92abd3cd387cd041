// Small questions about an fd that several components ask: its inode, its addresses, what kind of
// socket it is. Each answers "unknown" (0, -1, false) on failure, except SocketName, whose errno
// decides the answer a program gets.
#ifndef SLIPSTREAM_BASE_SOCKET_INFO_H_
#define SLIPSTREAM_BASE_SOCKET_INFO_H_

#include <cstdint>
#include <optional>
#include <string>

#include "base/result.h"
#include "base/sockaddr.h"

namespace slipstream {

uint64_t InodeOf(int fd);
uint64_t PathInode(const std::string& path);
int IntSockOpt(int fd, int level, int name);
// getsockname() (peer = false) or getpeername() (peer = true); the error carries its errno
// (ENOTCONN for the peer of an unconnected or reset socket).
Result<SockAddr> SocketName(int fd, bool peer);
bool IsTcpSocket(int fd);  // AF_INET/AF_INET6, IPPROTO_TCP
bool IsUnixStreamSocket(int fd);

}  // namespace slipstream

#endif  // SLIPSTREAM_BASE_SOCKET_INFO_H_
