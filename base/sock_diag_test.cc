#include "base/sock_diag.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "base/socket_info.h"

namespace slipstream {
namespace {

UniqueFd Listen6(bool v6only, uint16_t* port) {
  UniqueFd fd(socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int on = v6only;
  setsockopt(fd.Get(), IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_any;
  EXPECT_EQ(bind(fd.Get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  EXPECT_EQ(listen(fd.Get(), 4), 0);
  *port = SocketName(fd.Get(), false)->port();
  return fd;
}

TEST(SockDiag, ListsListenersWithInodeAndV6Only) {
  auto diag = SockDiag::Open();
  ASSERT_TRUE(diag);
  for (bool v6only : {false, true}) {
    uint16_t port = 0;
    UniqueFd l = Listen6(v6only, &port);
    auto listeners = diag->TcpListeners(port);
    ASSERT_TRUE(listeners);
    ASSERT_EQ(listeners->size(), 1u);
    EXPECT_EQ((*listeners)[0].inode, InodeOf(l.Get()));
    EXPECT_EQ((*listeners)[0].v6only, v6only);
    EXPECT_TRUE((*listeners)[0].local.IsAny());
  }
}

TEST(SockDiag, LooksUpBothEndsOfAConnection) {
  auto diag = SockDiag::Open();
  ASSERT_TRUE(diag);
  UniqueFd l(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(l.Get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(listen(l.Get(), 4), 0);
  auto addr = *SocketName(l.Get(), false);
  UniqueFd c(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_EQ(connect(c.Get(), addr.get(), addr.len()), 0);
  auto local = *SocketName(c.Get(), false);
  // Still in the accept queue: the server side exists, without an inode yet.
  auto queued = diag->LookupTcp(addr, local);
  ASSERT_TRUE(queued) << queued.error().ToString();
  EXPECT_EQ(queued->inode, 0u);
  UniqueFd s(accept4(l.Get(), nullptr, nullptr, SOCK_CLOEXEC));
  auto server = diag->LookupTcp(addr, local);
  ASSERT_TRUE(server);
  EXPECT_EQ(server->inode, InodeOf(s.Get()));
  auto client = diag->LookupTcp(local, addr);
  ASSERT_TRUE(client);
  EXPECT_EQ(client->inode, InodeOf(c.Get()));
  // Gone once both ends are closed and the connection reset.
  linger hard{1, 0};
  setsockopt(c.Get(), SOL_SOCKET, SO_LINGER, &hard, sizeof(hard));
  c.Reset();
  s.Reset();
  auto gone = diag->LookupTcp(local, addr);
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().err, ENOENT);
}

TEST(SockDiag, UnixInodesIncludeASocketpair) {
  auto diag = SockDiag::Open();
  ASSERT_TRUE(diag);
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd a(sv[0]), b(sv[1]);
  auto inodes = diag->UnixInodes();
  ASSERT_TRUE(inodes);
  EXPECT_TRUE(inodes->count(InodeOf(a.Get())));
  uint64_t gone = InodeOf(b.Get());
  b.Reset();
  inodes = diag->UnixInodes();
  ASSERT_TRUE(inodes);
  EXPECT_FALSE(inodes->count(gone));
}

TEST(SockDiag, UnixPeerNamesTheOtherEnd) {
  auto diag = SockDiag::Open();
  ASSERT_TRUE(diag);
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd a(sv[0]), b(sv[1]);
  auto peer = diag->UnixPeer(InodeOf(a.Get()));
  ASSERT_TRUE(peer);
  EXPECT_EQ(*peer, InodeOf(b.Get()));
  uint64_t gone = InodeOf(a.Get());
  a.Reset();
  EXPECT_FALSE(diag->UnixPeer(gone));  // no such socket any more
}

// diag_parse (issue #12): lengths in a reply never make the parser read past what it covers.
TEST(SockDiagParse, ShortMessagesAreNotRead) {
  struct {
    nlmsghdr h;
    uint8_t payload[8];
  } msg{};
  msg.h.nlmsg_len = sizeof(msg);  // a header and 8 bytes: too short for any diag message
  msg.h.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  msg.h.nlmsg_seq = 5;
  EXPECT_FALSE(diag_parse::ParseInet(&msg.h));
  EXPECT_FALSE(diag_parse::ParseUnixInode(&msg.h));
  EXPECT_FALSE(diag_parse::ParseUnixPeer(&msg.h));
  int seen = 0;
  auto done = diag_parse::WalkReplies({reinterpret_cast<const uint8_t*>(&msg), sizeof(msg)}, 5,
                                      false, [&](const nlmsghdr*) { ++seen; });
  ASSERT_TRUE(done);
  EXPECT_TRUE(*done);
  EXPECT_EQ(seen, 1);
  // An error message too short for its nlmsgerr.
  msg.h.nlmsg_type = NLMSG_ERROR;
  msg.h.nlmsg_len = NLMSG_LENGTH(2);
  done = diag_parse::WalkReplies({reinterpret_cast<const uint8_t*>(&msg), sizeof(msg)}, 5, true,
                                 [&](const nlmsghdr*) { ++seen; });
  ASSERT_FALSE(done);
  EXPECT_EQ(done.error().err, EPROTO);
  // Found by fuzz/sock_diag_fuzz.cc (fuzz/corpus/sock_diag_fuzz/crash-int-min-error): an error
  // of INT_MIN was negated (signed overflow, UBSan).
  struct {
    nlmsghdr h;
    nlmsgerr e;
  } error{};
  error.h.nlmsg_len = sizeof(error);
  error.h.nlmsg_type = NLMSG_ERROR;
  error.h.nlmsg_seq = 5;
  error.e.error = INT32_MIN;
  done = diag_parse::WalkReplies({reinterpret_cast<const uint8_t*>(&error), sizeof(error)}, 5, true,
                                 [&](const nlmsghdr*) { ++seen; });
  ASSERT_FALSE(done);
  EXPECT_EQ(done.error().err, EPROTO);
  error.e.error = -ENOENT;
  done = diag_parse::WalkReplies({reinterpret_cast<const uint8_t*>(&error), sizeof(error)}, 5, true,
                                 [&](const nlmsghdr*) { ++seen; });
  ASSERT_FALSE(done);
  EXPECT_EQ(done.error().err, ENOENT);
  // A length beyond the datagram: not a message.
  msg.h.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  msg.h.nlmsg_len = 4096;
  done = diag_parse::WalkReplies({reinterpret_cast<const uint8_t*>(&msg), sizeof(msg)}, 5, true,
                                 [&](const nlmsghdr*) { ++seen; });
  ASSERT_TRUE(done);
  EXPECT_FALSE(*done);
  EXPECT_EQ(seen, 1);
}

}  // namespace
}  // namespace slipstream
