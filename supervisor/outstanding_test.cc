#include "supervisor/outstanding.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <set>

#include "base/unique_fd.h"
#include "supervisor/shepherd.h"
#include "tracer/filter.h"
#include "tracer/notifier.h"
#include "tracer/probe.h"

namespace slipstream::supervisor {
namespace {

using ::testing::ElementsAre;
using ::testing::UnorderedElementsAre;

OutstandingTable NewTable() {
  auto t = OutstandingTable::Create();
  EXPECT_TRUE(t.has_value());
  return std::move(*t);
}

TEST(OutstandingTableTest, StartsEmpty) {
  OutstandingTable t = NewTable();
  EXPECT_TRUE(t.Snapshot().empty());
  EXPECT_FALSE(t.any_received());
  EXPECT_EQ(t.highest_id(), 0u);
}

TEST(OutstandingTableTest, AddRemoveSnapshot) {
  OutstandingTable t = NewTable();
  int a = t.Add(100);
  int b = t.Add(101);
  EXPECT_NE(a, b);
  EXPECT_GE(a, 0);
  EXPECT_THAT(t.Snapshot(), UnorderedElementsAre(100u, 101u));
  t.Remove(a);
  EXPECT_THAT(t.Snapshot(), ElementsAre(101u));
  t.Remove(-1);  // "no slot" is a no-op
  EXPECT_THAT(t.Snapshot(), ElementsAre(101u));
  t.Remove(b);
  EXPECT_TRUE(t.Snapshot().empty());
  EXPECT_TRUE(t.any_received());
}

TEST(OutstandingTableTest, HighestIdIsTheMaximumEverAdded) {
  OutstandingTable t = NewTable();
  // Ids start at a random 64-bit value and may wrap; the highest one seen is kept even after the
  // call was answered, for the shepherd's probe of ids a receive in flight may have taken.
  int s = t.Add(0xfffffffffffffff0ull);
  t.Remove(s);
  t.Add(5);
  EXPECT_EQ(t.highest_id(), 0xfffffffffffffff0ull);
  OutstandingTable u = NewTable();
  u.Add(10);
  u.Add(7);
  EXPECT_EQ(u.highest_id(), 10u);
  u.Add(0);
  EXPECT_EQ(u.highest_id(), 10u);
}

TEST(OutstandingTableTest, FullTableReturnsMinusOneAndStillTracksTheHighest) {
  OutstandingTable t = NewTable();
  std::set<int> slots;
  for (int i = 0; i < OutstandingTable::kSlots; ++i) slots.insert(t.Add(1000 + i));
  EXPECT_EQ(slots.size(), static_cast<size_t>(OutstandingTable::kSlots));
  EXPECT_EQ(*slots.begin(), 0);
  EXPECT_EQ(t.Add(999999), -1);
  EXPECT_EQ(t.highest_id(), 999999u);
  t.Remove(*slots.begin());
  EXPECT_EQ(t.Add(5), *slots.begin()) << "a freed slot is reused";
  EXPECT_EQ(t.Snapshot().size(), static_cast<size_t>(OutstandingTable::kSlots));
}

TEST(OutstandingTableTest, MoveKeepsTheSharedPage) {
  OutstandingTable a = NewTable();
  a.Add(77);
  OutstandingTable b(std::move(a));
  EXPECT_THAT(b.Snapshot(), ElementsAre(77u));
  b.Add(78);
  EXPECT_THAT(b.Snapshot(), UnorderedElementsAre(77u, 78u));
}

TEST(OutstandingTableTest, SharedWithAForkedShepherd) {
  OutstandingTable t = NewTable();
  t.Add(500);
  int go[2];
  ASSERT_EQ(pipe(go), 0);
  pid_t child = fork();
  if (child == 0) {
    char c;
    if (read(go[0], &c, 1) != 1) _exit(2);
    // Sees what the parent added after the fork, as the shepherd must.
    auto ids = t.Snapshot();
    bool ok = ids.size() == 2 && t.highest_id() == 501 && t.any_received();
    _exit(ok ? 0 : 1);
  }
  int slot = t.Add(501);
  EXPECT_GE(slot, 0);
  ASSERT_EQ(write(go[1], "x", 1), 1);
  int status;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  close(go[0]);
  close(go[1]);
}

// ---- ShepherdTakeOver against a real listener
// --------------------------------------------------------

int ReceiveFd(int sock) {
  char byte;
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  if (recvmsg(sock, &msg, MSG_CMSG_CLOEXEC) != 1) return -1;
  int fd;
  std::memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&msg)), sizeof(int));
  return fd;
}

// Forks a child under the Slipstream filter that makes `calls` trapped socket() calls and exits 0
// when every one returned a real socket; returns its pid and the listener.
pid_t StartChild(int calls, UniqueFd* listener) {
  auto program = tracer::BuildFilter({});
  EXPECT_TRUE(program.has_value());
  int sv[2];
  EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  pid_t pid = fork();
  if (pid == 0) {
    tracer::AllowFilterInstall();
    int l = tracer::InstallFilter(*program, 0);
    if (l < 0) _exit(100);
    char byte = 0;
    iovec iov{&byte, 1};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(cmsg), &l, sizeof(int));
    (void)!sendmsg(sv[1], &msg, 0);
    close(l);
    close(sv[1]);
    for (int i = 0; i < calls; ++i) {
      if (socket(AF_INET, SOCK_STREAM, 0) < 0) _exit(1);  // ENOSYS would mean: not failed open
    }
    _exit(0);
  }
  close(sv[1]);
  listener->Reset(ReceiveFd(sv[0]));
  close(sv[0]);
  return pid;
}

tracer::Notification ReceiveOne(int listener) {
  pollfd p{listener, POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 10000), 1);
  tracer::KernelNotifier notifier(listener);
  auto n = notifier.Receive();
  EXPECT_TRUE(n.has_value());
  return n.value_or(tracer::Notification{});
}

int WaitExit(pid_t pid) {
  int status;
  EXPECT_EQ(waitpid(pid, &status, 0), pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

class ShepherdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!tracer::ProbeKernel().user_notif) GTEST_SKIP() << "no seccomp user notification";
    // ShepherdTakeOver returns only when the listener hangs up; if it never did, SIGALRM's
    // default action ends this test binary instead of letting it hang.
    alarm(20);
  }
  void TearDown() override { alarm(0); }
};

TEST_F(ShepherdTest, AnswersTheOutstandingCallThenEveryLaterOne) {
  OutstandingTable table = NewTable();
  UniqueFd listener;
  pid_t child = StartChild(3, &listener);
  // The dead supervisor had received the first call and recorded it, but not answered it.
  tracer::Notification n = ReceiveOne(listener.Get());
  table.Add(n.id);
  long answered = ShepherdTakeOver(listener.Get(), table);  // returns once the child is gone
  EXPECT_EQ(WaitExit(child), 0);
  EXPECT_EQ(answered, 3);
}

TEST_F(ShepherdTest, AnswersACallReceivedButNeverRecorded) {
  OutstandingTable table = NewTable();
  UniqueFd listener;
  pid_t child = StartChild(2, &listener);
  tracer::KernelNotifier notifier(listener.Get());
  // The first call was recorded and answered; the supervisor died between receiving the second
  // and recording it. Ids are sequential, so the shepherd finds it above the highest recorded.
  tracer::Notification first = ReceiveOne(listener.Get());
  int slot = table.Add(first.id);
  ASSERT_TRUE(notifier.Continue(first.id).has_value());
  table.Remove(slot);
  tracer::Notification second = ReceiveOne(listener.Get());
  EXPECT_EQ(second.id, first.id + 1);
  long answered = ShepherdTakeOver(listener.Get(), table);
  EXPECT_EQ(WaitExit(child), 0);
  EXPECT_EQ(answered, 1);
}

// The supervisor died after it had made the program's connect() on its copy of the socket, before
// answering: CONTINUE would make the kernel connect the socket a second time (EISCONN). The
// fallback recorded with the call is answered instead (found by tests/soak/soak.py).
TEST_F(ShepherdTest, AnswersAConnectTheSupervisorMadeWithItsResult) {
  UniqueFd server(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(bind(server.Get(), reinterpret_cast<sockaddr*>(&addr), len), 0);
  ASSERT_EQ(listen(server.Get(), 4), 0);
  ASSERT_EQ(getsockname(server.Get(), reinterpret_cast<sockaddr*>(&addr), &len), 0);
  auto program = tracer::BuildFilter({});
  ASSERT_TRUE(program.has_value());
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  pid_t child = fork();
  if (child == 0) {
    int s = socket(AF_INET, SOCK_STREAM, 0);  // before the filter: the test answers only connect
    tracer::AllowFilterInstall();
    int l = tracer::InstallFilter(*program, 0);
    if (l < 0) _exit(100);
    char byte = static_cast<char>(s);
    iovec iov{&byte, 1};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(cmsg), &l, sizeof(int));
    (void)!sendmsg(sv[1], &msg, 0);
    close(l);
    close(sv[1]);
    if (connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) _exit(errno);
    sockaddr_in peer{};
    socklen_t peer_len = sizeof(peer);
    _exit(getpeername(s, reinterpret_cast<sockaddr*>(&peer), &peer_len) == 0 ? 0 : 99);
  }
  close(sv[1]);
  char byte = 0;
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ASSERT_EQ(recvmsg(sv[0], &msg, MSG_CMSG_CLOEXEC), 1);
  int raw_listener;
  std::memcpy(&raw_listener, CMSG_DATA(CMSG_FIRSTHDR(&msg)), sizeof(int));
  UniqueFd listener(raw_listener);
  close(sv[0]);
  int child_sock = static_cast<unsigned char>(byte);
  // What the supervisor does before it dies: receive, record, connect its copy.
  OutstandingTable table = NewTable();
  tracer::Notification n = ReceiveOne(listener.Get());
  int slot = table.Add(n.id);
  UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, child, 0)));
  ASSERT_TRUE(pidfd);
  UniqueFd copy(static_cast<int>(syscall(SYS_pidfd_getfd, pidfd.Get(), child_sock, 0)));
  ASSERT_TRUE(copy);
  ASSERT_EQ(connect(copy.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  table.SetFallback(slot, OutstandingTable::kReturnZero);
  copy.Reset();
  long answered = ShepherdTakeOver(listener.Get(), table);
  EXPECT_EQ(WaitExit(child), 0) << "the child's connect() failed with that errno (EISCONN: 106)";
  EXPECT_EQ(answered, 2);  // the connect, then the child's getpeername (CONTINUE)
}

// Killed during its connect() on the copy, the supervisor dies when that call returns, the
// connection made and nothing more recorded than the probe set before it: the shepherd finds the
// socket connected and answers 0 (the soak's remaining EISCONN, tests/soak/soak.py).
TEST_F(ShepherdTest, AnswersAConnectTheSupervisorWasMakingWhenKilled) {
  UniqueFd server(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(bind(server.Get(), reinterpret_cast<sockaddr*>(&addr), len), 0);
  ASSERT_EQ(listen(server.Get(), 4), 0);
  ASSERT_EQ(getsockname(server.Get(), reinterpret_cast<sockaddr*>(&addr), &len), 0);
  auto program = tracer::BuildFilter({});
  ASSERT_TRUE(program.has_value());
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  pid_t child = fork();
  if (child == 0) {
    int s = socket(AF_INET, SOCK_STREAM, 0);  // before the filter: the test answers only connect
    tracer::AllowFilterInstall();
    int l = tracer::InstallFilter(*program, 0);
    if (l < 0) _exit(100);
    char byte = static_cast<char>(s);
    iovec iov{&byte, 1};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(cmsg), &l, sizeof(int));
    (void)!sendmsg(sv[1], &msg, 0);
    close(l);
    close(sv[1]);
    if (connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) _exit(errno);
    sockaddr_in peer{};
    socklen_t peer_len = sizeof(peer);
    _exit(getpeername(s, reinterpret_cast<sockaddr*>(&peer), &peer_len) == 0 ? 0 : 99);
  }
  close(sv[1]);
  char byte = 0;
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ASSERT_EQ(recvmsg(sv[0], &msg, MSG_CMSG_CLOEXEC), 1);
  int raw_listener;
  std::memcpy(&raw_listener, CMSG_DATA(CMSG_FIRSTHDR(&msg)), sizeof(int));
  UniqueFd listener(raw_listener);
  close(sv[0]);
  int child_sock = static_cast<unsigned char>(byte);
  // What the supervisor does before it dies: receive, record, connect its copy.
  OutstandingTable table = NewTable();
  tracer::Notification n = ReceiveOne(listener.Get());
  int slot = table.Add(n.id);
  UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, child, 0)));
  ASSERT_TRUE(pidfd);
  UniqueFd copy(static_cast<int>(syscall(SYS_pidfd_getfd, pidfd.Get(), child_sock, 0)));
  ASSERT_TRUE(copy);
  table.SetConnectProbe(slot, child, child_sock);
  ASSERT_EQ(connect(copy.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  copy.Reset();
  long answered = ShepherdTakeOver(listener.Get(), table);
  EXPECT_EQ(WaitExit(child), 0) << "the child's connect() failed with that errno (EISCONN: 106)";
  EXPECT_EQ(answered, 2);  // the connect, then the child's getpeername (CONTINUE)
}

}  // namespace
}  // namespace slipstream::supervisor
