#include "base/sockaddr.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/un.h>

#include <cstring>

namespace slipstream {
namespace {

SockAddr V4(const char* host, uint16_t port) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  EXPECT_EQ(inet_pton(AF_INET, host, &sin.sin_addr), 1);
  return SockAddr(&sin, sizeof(sin));
}

SockAddr V6(const char* host, uint16_t port) {
  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  sin6.sin6_port = htons(port);
  EXPECT_EQ(inet_pton(AF_INET6, host, &sin6.sin6_addr), 1);
  return SockAddr(&sin6, sizeof(sin6));
}

TEST(SockAddrTest, DefaultIsEmptyAndUnspec) {
  SockAddr a;
  EXPECT_EQ(a.len(), 0u);
  EXPECT_EQ(a.family(), AF_UNSPEC);
  EXPECT_FALSE(a.IsInet());
  EXPECT_EQ(a.port(), 0);
}

TEST(SockAddrTest, Ipv4) {
  SockAddr a = V4("127.0.0.1", 8080);
  EXPECT_EQ(a.family(), AF_INET);
  EXPECT_EQ(a.len(), sizeof(sockaddr_in));
  EXPECT_TRUE(a.IsInet());
  EXPECT_EQ(a.port(), 8080);
  EXPECT_TRUE(a.IsLoopback());
  EXPECT_FALSE(a.IsAny());
  EXPECT_FALSE(a.MappedV4().has_value());
  EXPECT_EQ(a.ToString(), "127.0.0.1:8080");
}

TEST(SockAddrTest, SameEndpointComparesWhatToStringShows) {
  EXPECT_TRUE(SameEndpoint(V4("127.0.0.1", 80), V4("127.0.0.1", 80)));
  EXPECT_FALSE(SameEndpoint(V4("127.0.0.1", 80), V4("127.0.0.2", 80)));
  EXPECT_FALSE(SameEndpoint(V4("127.0.0.1", 80), V4("127.0.0.1", 81)));
  EXPECT_FALSE(SameEndpoint(V4("0.0.0.0", 80), V6("::", 80)));  // families differ
  SockAddr a = V6("fe80::1", 80), b = V6("fe80::1", 80);
  reinterpret_cast<sockaddr_in6*>(b.mutable_get())->sin6_flowinfo = 7;
  reinterpret_cast<sockaddr_in6*>(b.mutable_get())->sin6_scope_id = 2;
  EXPECT_TRUE(SameEndpoint(a, b));  // as ToString: flowinfo and scope id are not shown
  EXPECT_EQ(a.ToString(), b.ToString());
  EXPECT_FALSE(a == b);
  EXPECT_FALSE(SameEndpoint(a, V6("fe80::2", 80)));
  sockaddr_in padded{};
  padded.sin_family = AF_INET;
  padded.sin_port = htons(80);
  padded.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::memset(padded.sin_zero, 0xff, sizeof(padded.sin_zero));
  EXPECT_TRUE(SameEndpoint(SockAddr(&padded, sizeof(padded)), V4("127.0.0.1", 80)));
}

TEST(SockAddrTest, LoopbackCoversAll127Slash8) {
  EXPECT_TRUE(V4("127.255.3.4", 1).IsLoopback());
  EXPECT_FALSE(V4("128.0.0.1", 1).IsLoopback());
  EXPECT_FALSE(V4("10.0.0.1", 1).IsLoopback());
}

TEST(SockAddrTest, Any) {
  EXPECT_TRUE(V4("0.0.0.0", 0).IsAny());
  EXPECT_TRUE(V6("::", 0).IsAny());
  EXPECT_FALSE(V6("::1", 0).IsAny());
  EXPECT_TRUE(V6("::ffff:0.0.0.0", 0).IsAny());  // an IPv4 wildcard, as the kernel reads it
  EXPECT_FALSE(V6("::ffff:127.0.0.1", 0).IsAny());
}

TEST(SockAddrTest, Ipv6) {
  SockAddr a = V6("::1", 443);
  EXPECT_EQ(a.family(), AF_INET6);
  EXPECT_TRUE(a.IsInet());
  EXPECT_EQ(a.port(), 443);
  EXPECT_TRUE(a.IsLoopback());
  EXPECT_FALSE(a.MappedV4().has_value());
  EXPECT_EQ(a.ToString(), "[::1]:443");
  EXPECT_FALSE(V6("2001:db8::1", 1).IsLoopback());
}

TEST(SockAddrTest, V4Mapped) {
  SockAddr a = V6("::ffff:127.0.0.1", 9000);
  auto v4 = a.MappedV4();
  ASSERT_TRUE(v4.has_value());
  EXPECT_EQ(ntohl(v4->s_addr), 0x7f000001u);
  EXPECT_TRUE(a.IsLoopback());
  EXPECT_EQ(a.ToString(), "[::ffff:127.0.0.1]:9000");
  EXPECT_FALSE(V6("::ffff:10.1.2.3", 1).IsLoopback());
  EXPECT_EQ(ntohl(V6("::ffff:10.1.2.3", 1).MappedV4()->s_addr), 0x0a010203u);
}

TEST(SockAddrTest, ShortLengthsAreNotInet) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(80);
  SockAddr short_v4(&sin, sizeof(sin) - 1);
  EXPECT_EQ(short_v4.family(), AF_INET);
  EXPECT_FALSE(short_v4.IsInet());
  EXPECT_EQ(short_v4.port(), 0);
  EXPECT_FALSE(short_v4.IsLoopback());
  EXPECT_EQ(short_v4.ToString(), "AF_INET(len 15)");

  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  SockAddr short_v6(&sin6, sizeof(sockaddr_in));  // 16 bytes of a 28-byte address
  EXPECT_FALSE(short_v6.IsInet());
  EXPECT_FALSE(short_v6.MappedV4().has_value());
  EXPECT_EQ(short_v6.ToString(), "AF_INET6(len 16)");

  SockAddr one_byte(&sin, 1);
  EXPECT_EQ(one_byte.family(), AF_UNSPEC);
}

TEST(SockAddrTest, LengthIsClampedToStorage) {
  uint8_t big[sizeof(sockaddr_storage) + 64];
  std::memset(big, 0, sizeof(big));
  reinterpret_cast<sockaddr*>(big)->sa_family = AF_INET;
  SockAddr a(big, sizeof(big));
  EXPECT_EQ(a.len(), sizeof(sockaddr_storage));
  // An AF_INET address longer than sockaddr_in (the kernel accepts up to 128 bytes) is inet.
  EXPECT_TRUE(a.IsInet());
}

TEST(SockAddrTest, FromBytesCopies) {
  SockAddr original = V4("10.0.0.7", 99);
  std::vector<uint8_t> bytes(reinterpret_cast<const uint8_t*>(original.get()),
                             reinterpret_cast<const uint8_t*>(original.get()) + original.len());
  SockAddr copy = SockAddr::FromBytes(bytes);
  bytes.assign(bytes.size(), 0);
  EXPECT_EQ(copy, original);
  EXPECT_EQ(copy.ToString(), "10.0.0.7:99");
}

TEST(SockAddrTest, Unix) {
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  std::strcpy(sun.sun_path, "/run/x.sock");
  socklen_t len = offsetof(sockaddr_un, sun_path) + std::strlen(sun.sun_path) + 1;
  EXPECT_EQ(SockAddr(&sun, len).ToString(), "unix:/run/x.sock");

  sockaddr_un abstract{};
  abstract.sun_family = AF_UNIX;
  std::memcpy(abstract.sun_path, "\0name", 5);
  EXPECT_EQ(SockAddr(&abstract, offsetof(sockaddr_un, sun_path) + 5).ToString(), "unix:@name");

  EXPECT_EQ(SockAddr(&sun, sizeof(sa_family_t)).ToString(), "unix:(unnamed)");
  EXPECT_FALSE(SockAddr(&sun, len).IsInet());
}

TEST(SockAddrTest, ParseIpv4AndIpv6) {
  auto v4 = SockAddr::Parse("1.2.3.4:80");
  ASSERT_TRUE(v4.has_value());
  EXPECT_EQ(*v4, V4("1.2.3.4", 80));
  auto v6 = SockAddr::Parse("[::1]:8080");
  ASSERT_TRUE(v6.has_value());
  EXPECT_EQ(*v6, V6("::1", 8080));
  auto mapped = SockAddr::Parse("[::ffff:127.0.0.1]:1");
  ASSERT_TRUE(mapped.has_value());
  EXPECT_TRUE(mapped->MappedV4().has_value());
}

TEST(SockAddrTest, ParseRejectsGarbage) {
  EXPECT_FALSE(SockAddr::Parse("1.2.3.4").has_value());
  EXPECT_FALSE(SockAddr::Parse("1.2.3:80").has_value());
  EXPECT_FALSE(SockAddr::Parse("[::1:80").has_value());
  EXPECT_FALSE(SockAddr::Parse("[zz::1]:80").has_value());
  EXPECT_FALSE(SockAddr::Parse("1.2.3.4:65536").has_value());
  EXPECT_FALSE(SockAddr::Parse("1.2.3.4:-1").has_value());
}

// Found by fuzz/sockaddr_fuzz.cc (fuzz/corpus/sockaddr_fuzz/crash-port-trailing-garbage):
// atoi() read "[::1]:60553=" as port 60553, and "4294967376" wrapped to 80.
TEST(SockAddrTest, ParseTakesOnlyDecimalPorts) {
  EXPECT_FALSE(SockAddr::Parse("[::1]:60553=").has_value());
  EXPECT_FALSE(SockAddr::Parse("1.2.3.4:80x").has_value());
  EXPECT_FALSE(SockAddr::Parse("1.2.3.4: 80").has_value());
  EXPECT_FALSE(SockAddr::Parse("1.2.3.4:+80").has_value());
  EXPECT_FALSE(SockAddr::Parse("1.2.3.4:4294967376").has_value());
  EXPECT_FALSE(SockAddr::Parse("1.2.3.4:").has_value());
  ASSERT_TRUE(SockAddr::Parse("1.2.3.4:080").has_value());
  EXPECT_EQ(SockAddr::Parse("1.2.3.4:080")->port(), 80);
}

TEST(SockAddrTest, ToStringRoundTripsThroughParse) {
  for (const char* text : {"127.0.0.1:1", "[::1]:65535", "[::ffff:10.0.0.1]:22", "0.0.0.0:0"}) {
    auto a = SockAddr::Parse(text);
    ASSERT_TRUE(a.has_value()) << text;
    EXPECT_EQ(a->ToString(), text);
  }
}

TEST(SockAddrTest, EqualityComparesLengthAndBytes) {
  EXPECT_EQ(V4("1.1.1.1", 1), V4("1.1.1.1", 1));
  EXPECT_FALSE(V4("1.1.1.1", 1) == V4("1.1.1.1", 2));
  SockAddr a = V4("1.1.1.1", 1);
  SockAddr longer(a.get(), 20);
  EXPECT_FALSE(a == longer);
}

TEST(SockAddrTest, FamilyNames) {
  EXPECT_STREQ(FamilyName(AF_INET), "AF_INET");
  EXPECT_STREQ(FamilyName(AF_INET6), "AF_INET6");
  EXPECT_STREQ(FamilyName(AF_UNIX), "AF_UNIX");
  EXPECT_STREQ(FamilyName(AF_UNSPEC), "AF_UNSPEC");
  EXPECT_STREQ(FamilyName(12345), "AF_?");
}

}  // namespace
}  // namespace slipstream
