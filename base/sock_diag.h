// sock_diag (NETLINK_SOCK_DIAG) queries: the kernel's own view of sockets, in the caller's network
// namespace. Unprivileged callers may use all of these (inodes and uids of other users' sockets
// are visible, as in ss(8)).
#ifndef SLIPSTREAM_BASE_SOCK_DIAG_H_
#define SLIPSTREAM_BASE_SOCK_DIAG_H_

#include <linux/netlink.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <unordered_set>
#include <vector>

#include "base/result.h"
#include "base/sockaddr.h"
#include "base/unique_fd.h"

namespace slipstream {

struct TcpSocketInfo {
  SockAddr local;
  SockAddr remote;
  uint64_t inode = 0;  // 0 for a connection still in a listener's accept queue
  uint8_t state = 0;   // TCP_ESTABLISHED, TCP_LISTEN, ...
  bool v6only = false;
  uint32_t uid = 0;
};

// The parsing of replies, apart from the socket, so that any bytes can be fed to it (tests,
// fuzz/sock_diag_fuzz.cc). Every length in a reply is checked before what it covers is read.
namespace diag_parse {
// Walks the netlink messages of one received datagram, calling `on_msg` for each
// SOCK_DIAG_BY_FAMILY answer to request `seq` (others are late answers to earlier requests).
// true: the answer is complete (NLMSG_DONE, an acknowledgement, or the one answer of a lookup);
// false: more datagrams follow; an error for NLMSG_ERROR.
Result<bool> WalkReplies(std::span<const uint8_t> datagram, uint32_t seq, bool dump,
                         const std::function<void(const nlmsghdr*)>& on_msg);
// An inet_diag_msg with its attributes; nullopt when the message is too short for one.
std::optional<TcpSocketInfo> ParseInet(const nlmsghdr* h);
// A unix_diag_msg's inode, and its UNIX_DIAG_PEER attribute (0: none); nullopt when too short.
std::optional<uint64_t> ParseUnixInode(const nlmsghdr* h);
std::optional<uint64_t> ParseUnixPeer(const nlmsghdr* h);
}  // namespace diag_parse

class SockDiag {
 public:
  static Result<SockDiag> Open();
  // A NETLINK_SOCK_DIAG socket opened by someone else: it answers for the network namespace it
  // was created in (a supervisor in another namespace hands one to slipstreamd).
  static SockDiag FromFd(UniqueFd fd) { return SockDiag(std::move(fd)); }
  int fd() const { return fd_.Get(); }

  // Every TCP listener on `port`, IPv4 and IPv6 (ss -ltn sport = :port).
  Result<std::vector<TcpSocketInfo>> TcpListeners(uint16_t port);
  // The TCP socket whose local/remote tuple is exactly this (ENOENT if none). v4-mapped addresses
  // are looked up in the IPv4 tables, where the kernel hashes such connections.
  Result<TcpSocketInfo> LookupTcp(const SockAddr& local, const SockAddr& remote);
  // Inodes of every AF_UNIX socket.
  Result<std::unordered_set<uint64_t>> UnixInodes();
  // The inode of the peer of the connected AF_UNIX socket `inode` (ENOENT: none, or no socket).
  Result<uint64_t> UnixPeer(uint64_t inode);

 private:
  explicit SockDiag(UniqueFd fd) : fd_(std::move(fd)) {}
  Status Send(const void* req, size_t len);
  // Reads replies until NLMSG_DONE (dumps) or one message (lookups), calling `on_msg` for each
  // SOCK_DIAG_BY_FAMILY payload.
  template <class F>
  Status Receive(bool dump, F on_msg);
  UniqueFd fd_;
  uint32_t seq_ = 0;
};

}  // namespace slipstream

#endif  // SLIPSTREAM_BASE_SOCK_DIAG_H_
