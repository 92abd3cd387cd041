#include "base/sockaddr.h"

#include <arpa/inet.h>
#include <sys/un.h>

#include <algorithm>
#include <cstring>

namespace slipstream {

SockAddr::SockAddr(const void* addr, socklen_t len) {
  len_ = std::min<socklen_t>(len, sizeof(storage_));
  if (len_ > 0) std::memcpy(&storage_, addr, len_);  // an empty span may come with a null pointer
}

std::optional<SockAddr> SockAddr::Parse(const std::string& text) {
  SockAddr out;
  auto colon = text.rfind(':');
  if (colon == std::string::npos) return std::nullopt;
  std::string host = text.substr(0, colon);
  // The port is 1 to 5 decimal digits and nothing else: atoi() took "80x" for 80 and wrapped
  // "4294967376" to 80.
  std::string digits = text.substr(colon + 1);
  if (digits.empty() || digits.size() > 5 ||
      digits.find_first_not_of("0123456789") != std::string::npos) {
    return std::nullopt;
  }
  int port = std::stoi(digits);
  if (port > 65535) return std::nullopt;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    sockaddr_in6 sin6{};
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), &sin6.sin6_addr) != 1) {
      return std::nullopt;
    }
    return SockAddr(&sin6, sizeof(sin6));
  }
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &sin.sin_addr) != 1) return std::nullopt;
  return SockAddr(&sin, sizeof(sin));
}

bool SockAddr::IsInet() const {
  return (family() == AF_INET && len_ >= sizeof(sockaddr_in)) ||
         (family() == AF_INET6 && len_ >= sizeof(sockaddr_in6));
}

uint16_t SockAddr::port() const {
  if (!IsInet()) return 0;
  if (family() == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
  return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
}

std::optional<in_addr> SockAddr::MappedV4() const {
  if (family() != AF_INET6 || len_ < sizeof(sockaddr_in6)) return std::nullopt;
  const auto& a6 = reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr;
  if (!IN6_IS_ADDR_V4MAPPED(&a6)) return std::nullopt;
  in_addr v4;
  std::memcpy(&v4, &a6.s6_addr[12], sizeof(v4));
  return v4;
}

bool SockAddr::IsLoopback() const {
  if (!IsInet()) return false;
  if (family() == AF_INET) {
    return (ntohl(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr.s_addr) >> 24) == 127;
  }
  if (auto v4 = MappedV4()) return (ntohl(v4->s_addr) >> 24) == 127;
  return IN6_IS_ADDR_LOOPBACK(&reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr);
}

bool SockAddr::IsAny() const {
  if (!IsInet()) return false;
  if (family() == AF_INET) {
    return reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr.s_addr == INADDR_ANY;
  }
  if (auto v4 = MappedV4()) return v4->s_addr == INADDR_ANY;
  return IN6_IS_ADDR_UNSPECIFIED(&reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr);
}

std::string SockAddr::ToString() const {
  char host[INET6_ADDRSTRLEN] = "?";
  switch (family()) {
    case AF_INET:
      if (len_ < sizeof(sockaddr_in)) break;
      inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr, host,
                sizeof(host));
      return std::string(host) + ":" + std::to_string(port());
    case AF_INET6:
      if (len_ < sizeof(sockaddr_in6)) break;
      inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr, host,
                sizeof(host));
      return "[" + std::string(host) + "]:" + std::to_string(port());
    case AF_UNIX: {
      const auto* sun = reinterpret_cast<const sockaddr_un*>(&storage_);
      size_t path_len =
          len_ > offsetof(sockaddr_un, sun_path) ? len_ - offsetof(sockaddr_un, sun_path) : 0;
      if (path_len == 0) return "unix:(unnamed)";
      if (sun->sun_path[0] == '\0') return "unix:@" + std::string(sun->sun_path + 1, path_len - 1);
      return "unix:" + std::string(sun->sun_path, strnlen(sun->sun_path, path_len));
    }
    default:
      break;
  }
  return std::string(FamilyName(family())) + "(len " + std::to_string(len_) + ")";
}

bool operator==(const SockAddr& a, const SockAddr& b) {
  return a.len() == b.len() && std::memcmp(a.get(), b.get(), a.len()) == 0;
}

bool SameEndpoint(const SockAddr& a, const SockAddr& b) {
  if (a.family() != b.family()) return false;
  switch (a.family()) {
    case AF_INET: {
      if (a.len() < sizeof(sockaddr_in) || b.len() < sizeof(sockaddr_in)) break;
      const auto* x = reinterpret_cast<const sockaddr_in*>(a.get());
      const auto* y = reinterpret_cast<const sockaddr_in*>(b.get());
      return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    case AF_INET6: {
      if (a.len() < sizeof(sockaddr_in6) || b.len() < sizeof(sockaddr_in6)) break;
      const auto* x = reinterpret_cast<const sockaddr_in6*>(a.get());
      const auto* y = reinterpret_cast<const sockaddr_in6*>(b.get());
      return x->sin6_port == y->sin6_port &&
             std::memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(in6_addr)) == 0;
    }
    default:
      break;
  }
  return a.ToString() == b.ToString();
}

const char* FamilyName(int family) {
  switch (family) {
    case AF_UNSPEC:
      return "AF_UNSPEC";
    case AF_UNIX:
      return "AF_UNIX";
    case AF_INET:
      return "AF_INET";
    case AF_INET6:
      return "AF_INET6";
    case AF_NETLINK:
      return "AF_NETLINK";
    case AF_PACKET:
      return "AF_PACKET";
    default:
      return "AF_?";
  }
}

}  // namespace slipstream
