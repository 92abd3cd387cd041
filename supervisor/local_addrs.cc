#include "supervisor/local_addrs.h"

#include "base/netns.h"
#include "base/socket_info.h"
#include "base/unique_fd.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cstring>
#include <string>

namespace slipstream::supervisor {
namespace {

// Same host address, ignoring port and v4-mapped spelling.
bool SameHost(const SockAddr& a, const SockAddr& b) {
  auto v4 = [](const SockAddr& s) -> std::optional<in_addr> {
    if (s.family() == AF_INET) return reinterpret_cast<const sockaddr_in*>(s.get())->sin_addr;
    return s.MappedV4();
  };
  auto a4 = v4(a), b4 = v4(b);
  if (a4 || b4) return a4 && b4 && a4->s_addr == b4->s_addr;
  if (a.family() != AF_INET6 || b.family() != AF_INET6) return false;
  return std::memcmp(&reinterpret_cast<const sockaddr_in6*>(a.get())->sin6_addr,
                     &reinterpret_cast<const sockaddr_in6*>(b.get())->sin6_addr,
                     sizeof(in6_addr)) == 0;
}

}  // namespace

std::vector<SockAddr> NamespaceAddresses() {
  std::vector<SockAddr> out;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) < 0) return out;
  for (ifaddrs* it = list; it != nullptr; it = it->ifa_next) {
    if (it->ifa_addr == nullptr) continue;
    int family = it->ifa_addr->sa_family;
    if (family != AF_INET && family != AF_INET6) continue;
    SockAddr a(it->ifa_addr, family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6));
    if (a.IsLoopback() || a.IsAny()) continue;
    if (family == AF_INET6 &&
        IN6_IS_ADDR_LINKLOCAL(&reinterpret_cast<const sockaddr_in6*>(a.get())->sin6_addr)) {
      continue;
    }
    out.push_back(a);
  }
  freeifaddrs(list);
  return out;
}

LocalAddresses::LocalAddresses() : netns_inode_(PathInode("/proc/self/ns/net")) {
  UniqueFd probe(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (auto cookie = probe ? NetnsCookie(probe.Get()) : Result<uint64_t>(0)) netns_cookie_ = *cookie;
}

bool LocalAddresses::SocketInOurNetns(int sock, pid_t tid) const {
  if (netns_cookie_ == 0) return SameNetns(tid);
  auto cookie = NetnsCookie(sock);
  return cookie && *cookie == netns_cookie_;
}

bool LocalAddresses::SameNetns(pid_t tid) const {
  uint64_t ino = PathInode("/proc/" + std::to_string(tid) + "/ns/net");
  return ino != 0 && ino == netns_inode_;
}

void LocalAddresses::Refresh() {
  auto now = std::chrono::steady_clock::now();
  if (now - refreshed_ < std::chrono::seconds(1)) return;
  refreshed_ = now;
  addrs_.clear();
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) < 0) return;
  for (ifaddrs* it = list; it != nullptr; it = it->ifa_next) {
    if (it->ifa_addr == nullptr) continue;
    if (it->ifa_addr->sa_family == AF_INET) {
      addrs_.emplace_back(it->ifa_addr, sizeof(sockaddr_in));
    } else if (it->ifa_addr->sa_family == AF_INET6) {
      addrs_.emplace_back(it->ifa_addr, sizeof(sockaddr_in6));
    }
  }
  freeifaddrs(list);
}

bool LocalAddresses::IsLocal(const SockAddr& addr) {
  if (!addr.IsInet()) return false;
  if (addr.IsLoopback() || addr.IsAny()) return true;
  Refresh();
  for (const auto& own : addrs_) {
    if (SameHost(own, addr)) return true;
  }
  return false;
}

}  // namespace slipstream::supervisor
