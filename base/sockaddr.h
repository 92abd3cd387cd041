// SockAddr: a copied socket address (IPv4, IPv6, v4-mapped IPv6, or anything else kept as raw
// bytes).
#ifndef SLIPSTREAM_BASE_SOCKADDR_H_
#define SLIPSTREAM_BASE_SOCKADDR_H_

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>

namespace slipstream {

class SockAddr {
 public:
  SockAddr() = default;
  // Copies `len` bytes (clamped to sizeof(sockaddr_storage)) of `addr`.
  SockAddr(const void* addr, socklen_t len);
  static SockAddr FromBytes(std::span<const uint8_t> bytes) {
    return SockAddr(bytes.data(), static_cast<socklen_t>(bytes.size()));
  }
  static std::optional<SockAddr> Parse(const std::string& text);  // "1.2.3.4:80", "[::1]:80"

  sa_family_t family() const {
    return len_ >= sizeof(sa_family_t) ? storage_.ss_family : AF_UNSPEC;
  }
  socklen_t len() const { return len_; }
  const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage_); }
  sockaddr* mutable_get() { return reinterpret_cast<sockaddr*>(&storage_); }
  void set_len(socklen_t len) { len_ = len; }

  // True for a complete sockaddr_in, or a complete sockaddr_in6.
  bool IsInet() const;
  uint16_t port() const;  // host order; 0 unless IsInet()
  // For v4-mapped IPv6 (::ffff:a.b.c.d), the IPv4 address; otherwise nullopt.
  std::optional<in_addr> MappedV4() const;
  bool IsLoopback() const;  // 127/8, ::1, ::ffff:127/104
  bool IsAny() const;       // 0.0.0.0, ::, ::ffff:0.0.0.0

  // "127.0.0.1:8080", "[::1]:8080", "[::ffff:127.0.0.1]:8080", "unix:/path", "AF_<n>".
  std::string ToString() const;

 private:
  sockaddr_storage storage_{};
  socklen_t len_ = 0;
};

bool operator==(const SockAddr& a, const SockAddr& b);
// Same family, address and port, as ToString() shows them (flowinfo, scope id and padding are not
// compared), without formatting either: the connect decision compares every listener this way.
bool SameEndpoint(const SockAddr& a, const SockAddr& b);

const char* FamilyName(int family);  // "AF_INET", "AF_INET6", "AF_UNIX", ...

}  // namespace slipstream

#endif  // SLIPSTREAM_BASE_SOCKADDR_H_
