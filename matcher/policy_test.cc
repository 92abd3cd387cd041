#include "matcher/policy.h"

#include <gtest/gtest.h>

namespace slipstream::matcher {
namespace {

TcpSocketInfo Listener(const std::string& addr, bool v6only = false, uint64_t inode = 1) {
  TcpSocketInfo info;
  info.local = *SockAddr::Parse(addr);
  info.inode = inode;
  info.v6only = v6only;
  return info;
}

SockAddr A(const std::string& text) { return *SockAddr::Parse(text); }

TEST(ListenerCanReceive, ExactAddressAndPort) {
  EXPECT_TRUE(ListenerCanReceive(Listener("127.0.0.1:80"), A("127.0.0.1:80")));
  EXPECT_FALSE(ListenerCanReceive(Listener("127.0.0.1:80"), A("127.0.0.1:81")));
  EXPECT_FALSE(ListenerCanReceive(Listener("127.0.0.2:80"), A("127.0.0.1:80")));
}

TEST(ListenerCanReceive, Wildcards) {
  EXPECT_TRUE(ListenerCanReceive(Listener("0.0.0.0:80"), A("127.0.0.1:80")));
  EXPECT_FALSE(ListenerCanReceive(Listener("0.0.0.0:80"), A("[::1]:80")));
  EXPECT_TRUE(ListenerCanReceive(Listener("[::]:80"), A("[::1]:80")));
  // A dual-stack IPv6 wildcard takes IPv4 connections too, unless IPV6_V6ONLY.
  EXPECT_TRUE(ListenerCanReceive(Listener("[::]:80"), A("127.0.0.1:80")));
  EXPECT_FALSE(ListenerCanReceive(Listener("[::]:80", /*v6only=*/true), A("127.0.0.1:80")));
}

TEST(ListenerCanReceive, V4MappedIsTheSameAddress) {
  EXPECT_TRUE(ListenerCanReceive(Listener("[::ffff:127.0.0.1]:80"), A("127.0.0.1:80")));
  EXPECT_TRUE(ListenerCanReceive(Listener("127.0.0.1:80"), A("[::ffff:127.0.0.1]:80")));
}

TEST(DecideConnect, EveryCandidateMustBeSupervised) {
  std::vector<TcpSocketInfo> ls = {Listener("127.0.0.1:80", false, 1),
                                   Listener("0.0.0.0:80", false, 2),
                                   Listener("127.0.0.1:81", false, 3)};
  auto only1 = [](uint64_t ino) { return ino == 1; };
  auto one_and_two = [](uint64_t ino) { return ino == 1 || ino == 2; };
  EXPECT_EQ(DecideConnect(ls, A("127.0.0.1:80"), only1), QueryReason::kUnsupervisedListener);
  EXPECT_EQ(DecideConnect(ls, A("127.0.0.1:80"), one_and_two), QueryReason::kSupervised);
  // Listener 3 is on another port: whether it is supervised does not matter.
  EXPECT_EQ(DecideConnect(ls, A("127.0.0.1:81"), one_and_two), QueryReason::kUnsupervisedListener);
}

TEST(DecideConnect, SoReusePortGroupMembersAreSeparateListeners) {
  std::vector<TcpSocketInfo> ls = {Listener("127.0.0.1:80", false, 1),
                                   Listener("127.0.0.1:80", false, 2)};
  EXPECT_EQ(DecideConnect(ls, A("127.0.0.1:80"), [](uint64_t ino) { return ino == 1; }),
            QueryReason::kUnsupervisedListener);
  EXPECT_EQ(DecideConnect(ls, A("127.0.0.1:80"), [](uint64_t) { return true; }),
            QueryReason::kSupervised);
}

TEST(DecideConnect, NoListener) {
  EXPECT_EQ(DecideConnect({}, A("127.0.0.1:80"), [](uint64_t) { return true; }),
            QueryReason::kNoListener);
}

}  // namespace
}  // namespace slipstream::matcher
