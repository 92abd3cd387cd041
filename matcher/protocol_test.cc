#include "matcher/protocol.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <dirent.h>

#include <cstdio>
#include <cstring>
#include <vector>

namespace slipstream::matcher {
namespace {

int OpenFds() {
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  while (readdir(d) != nullptr) ++n;
  closedir(d);
  return n;
}

class ProtocolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    a_.Reset(sv[0]);
    b_.Reset(sv[1]);
  }
  UniqueFd a_, b_;
};

TEST_F(ProtocolTest, RoundTripWithFds) {
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  UniqueFd r(p[0]), w(p[1]);
  InodeBody body{1234};
  int fds[2] = {r.Get(), w.Get()};
  ASSERT_TRUE(SendMessage(a_.Get(), MsgType::kConnected, 7, 42, Bytes(body), fds));
  auto m = ReceiveMessage(b_.Get());
  ASSERT_TRUE(m) << m.error().ToString();
  EXPECT_EQ(m->type(), MsgType::kConnected);
  EXPECT_EQ(m->header.seq, 7u);
  EXPECT_EQ(m->header.pid, 42);
  ASSERT_NE(m->As<InodeBody>(), nullptr);
  EXPECT_EQ(m->As<InodeBody>()->inode, 1234u);
  ASSERT_EQ(m->fds.size(), 2u);
  // The received fds are the same pipe: what is written to one end is read from the other.
  ASSERT_EQ(write(m->fds[1].Get(), "z", 1), 1);
  char c = 0;
  ASSERT_EQ(read(r.Get(), &c, 1), 1);
  EXPECT_EQ(c, 'z');
  EXPECT_EQ(fcntl(m->fds[0].Get(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
}

TEST_F(ProtocolTest, WrongBodySizeIsNotReadAsTheStruct) {
  uint8_t three[3] = {1, 2, 3};
  ASSERT_TRUE(SendMessage(a_.Get(), MsgType::kAbort, 1, 0, three));
  auto m = ReceiveMessage(b_.Get());
  ASSERT_TRUE(m);
  EXPECT_EQ(m->As<InodeBody>(), nullptr);
}

TEST_F(ProtocolTest, GarbageIsRejectedAndItsFdsClosed) {
  int before = OpenFds();
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  // Raw bytes that are not a header, with three fds attached (more than kMaxFds).
  char junk[5] = "junk";
  iovec iov{junk, sizeof(junk)};
  alignas(cmsghdr) char control[CMSG_SPACE(3 * sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(3 * sizeof(int));
  int three[3] = {p[0], p[1], p[0]};
  memcpy(CMSG_DATA(cmsg), three, sizeof(three));
  ASSERT_GT(sendmsg(a_.Get(), &msg, 0), 0);
  close(p[0]);
  close(p[1]);
  auto m = ReceiveMessage(b_.Get());
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().err, EPROTO);
  EXPECT_EQ(OpenFds(), before);
}

TEST_F(ProtocolTest, BadMagicAndLengthMismatch) {
  Header h;
  h.magic = 0xdeadbeef;
  ASSERT_EQ(send(a_.Get(), &h, sizeof(h), 0), static_cast<ssize_t>(sizeof(h)));
  auto m = ReceiveMessage(b_.Get());
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().err, EPROTO);

  Header lying;
  lying.body_len = 100;  // but nothing follows
  ASSERT_EQ(send(a_.Get(), &lying, sizeof(lying), 0), static_cast<ssize_t>(sizeof(lying)));
  m = ReceiveMessage(b_.Get());
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().err, EPROTO);
}

TEST_F(ProtocolTest, OrderlyCloseIsEof) {
  a_.Reset();
  auto m = ReceiveMessage(b_.Get());
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().err, 0);
}

// Found by fuzz/daemon_fuzz.cc (fuzz/corpus/daemon_fuzz/crash-empty-datagram): an empty datagram
// was taken for EOF, and the daemon closed the session of whoever sent it.
TEST_F(ProtocolTest, EmptyDatagramIsMalformedNotEof) {
  ASSERT_EQ(send(a_.Get(), "", 0, 0), 0);
  ASSERT_TRUE(SendMessage(a_.Get(), MsgType::kStatus, 9, 0, {}));
  auto m = ReceiveMessage(b_.Get());
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().err, EPROTO);
  m = ReceiveMessage(b_.Get());
  ASSERT_TRUE(m) << m.error().ToString();
  EXPECT_EQ(m->header.seq, 9u);
  // An empty datagram and then the close: EOF.
  ASSERT_EQ(send(a_.Get(), "", 0, 0), 0);
  a_.Reset();
  m = ReceiveMessage(b_.Get());
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().err, 0);
}

TEST_F(ProtocolTest, SendRefusesOversizedMessages) {
  std::vector<uint8_t> big(kMaxBody + 1);
  EXPECT_FALSE(SendMessage(a_.Get(), MsgType::kStatusReply, 1, 0, big));
  int three[3] = {0, 1, 2};
  EXPECT_FALSE(SendMessage(a_.Get(), MsgType::kConnected, 1, 0, {}, three));
}

// The body readers (issue #12): every length and count a peer writes is checked.
TEST(ProtocolBodies, ErrorTextWithoutNulStopsAtTheField) {
  ErrorBody body;
  body.err = EPROTO;
  std::memset(body.text, 'x', sizeof(body.text));  // no terminating NUL
  EXPECT_EQ(ErrorText(body), std::string(sizeof(body.text), 'x'));
  std::snprintf(body.text, sizeof(body.text), "bad");
  EXPECT_EQ(ErrorText(body), "bad");
}

TEST(ProtocolBodies, NetnsAddrListIgnoresACountBeyondTheArray) {
  NetnsAddrs body{};
  body.count = 0xffffffff;
  EXPECT_EQ(NetnsAddrList(body).size(), kMaxNetnsAddrs);
  body.count = 1;
  body.addrs[0] = in6addr_loopback;
  auto list = NetnsAddrList(body);
  ASSERT_EQ(list.size(), 1u);
  EXPECT_TRUE(list[0].IsLoopback());
}

TEST(ProtocolBodies, AddressLengthsBeyondSockaddrStorageAreRefused) {
  PushBody push{};
  push.local_len = sizeof(sockaddr_storage) + 1;
  push.remote_len = 16;
  SockAddr local, remote;
  EXPECT_FALSE(PushAddrs(push, &local, &remote));
  push.local_len = 16;
  push.local.ss_family = AF_INET;
  EXPECT_TRUE(PushAddrs(push, &local, &remote));
  EXPECT_EQ(local.len(), 16u);
  RemoteListenerBody listener{};
  listener.addr_len = 4096;
  EXPECT_FALSE(RemoteListenerAddr(listener));
  listener.addr_len = sizeof(sockaddr_in6);
  ASSERT_TRUE(RemoteListenerAddr(listener));
  EXPECT_EQ(RemoteListenerAddr(listener)->len(), sizeof(sockaddr_in6));
}

// 253 fds (SCM_MAX_FD) on one message: rejected, and none of them stays open here.
TEST_F(ProtocolTest, ScmMaxFdsAreRejectedAndClosed) {
  int before = OpenFds();
  int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(null, 0);
  std::vector<int> fds(253, null);
  Header header;
  header.type = static_cast<uint16_t>(MsgType::kStatus);
  iovec iov{&header, sizeof(header)};
  std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
  std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  ASSERT_EQ(sendmsg(a_.Get(), &msg, 0), static_cast<ssize_t>(sizeof(header)));
  close(null);
  auto m = ReceiveMessage(b_.Get());
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().err, EPROTO);
  EXPECT_EQ(OpenFds(), before);
}

}  // namespace
}  // namespace slipstream::matcher
