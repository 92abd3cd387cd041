// LocalAddresses: is a destination on this host, as seen from the supervisor's network namespace?
#ifndef SLIPSTREAM_SUPERVISOR_LOCAL_ADDRS_H_
#define SLIPSTREAM_SUPERVISOR_LOCAL_ADDRS_H_

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <vector>

#include "base/sockaddr.h"

namespace slipstream::supervisor {

// The addresses of our network namespace's interfaces that another namespace could reach:
// loopback and link-local addresses left out.
std::vector<SockAddr> NamespaceAddresses();

class LocalAddresses {
 public:
  LocalAddresses();
  // Loopback, the unspecified address (connect to 0.0.0.0 reaches this host), or an address of
  // one of our interfaces (getifaddrs, refreshed at most once a second).
  bool IsLocal(const SockAddr& addr);
  // Is the socket `sock` (our copy of a program's socket) in the supervisor's network namespace?
  // What a connect reaches, and which connections a listener queues, is decided by the socket's
  // namespace, fixed when it was created, not by the calling thread's (setns() after socket()
  // changes only the latter). One getsockopt (SO_NETNS_COOKIE, Linux 5.14); before that kernel,
  // the thread `tid`'s namespace (/proc/TID/ns/net).
  bool SocketInOurNetns(int sock, pid_t tid) const;
  uint64_t netns_inode() const { return netns_inode_; }

 private:
  bool SameNetns(pid_t tid) const;  // the fallback of SocketInOurNetns
  void Refresh();
  uint64_t netns_inode_ = 0;
  uint64_t netns_cookie_ = 0;  // 0: SO_NETNS_COOKIE unknown to the kernel
  std::vector<SockAddr> addrs_;
  std::chrono::steady_clock::time_point refreshed_{};
};

}  // namespace slipstream::supervisor

#endif  // SLIPSTREAM_SUPERVISOR_LOCAL_ADDRS_H_
