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

#include "base/fd_passing.h"
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

// ---- ShepherdTakeOver against a real notification fd
// --------------------------------------------------------

// Forks a child that installs the Slipstream filter, hands its notification fd to the test over a
// socketpair and exits with `body()`; returns its pid and the notification fd.
template <typename Body>
pid_t StartFilteredChild(Body body, UniqueFd* notify_fd) {
  auto program = tracer::BuildFilter({});
  EXPECT_TRUE(program.has_value());
  int sv[2];
  EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  char byte = 0;
  iovec iov{&byte, 1};
  pid_t pid = fork();
  if (pid == 0) {
    tracer::AllowFilterInstall();
    int l = tracer::InstallFilter(*program, 0);
    if (l < 0) _exit(100);
    int fds[] = {l};
    if (!SendWithFds(sv[1], {&iov, 1}, fds)) _exit(101);
    close(l);
    close(sv[1]);
    _exit(body());
  }
  close(sv[1]);
  auto got = ReceiveWithFds(sv[0], {&iov, 1});
  EXPECT_TRUE(got && got->fds.size() == 1);
  if (got && got->fds.size() == 1) *notify_fd = std::move(got->fds[0]);
  close(sv[0]);
  return pid;
}

// A child under the filter that makes `calls` trapped socket() calls and exits 0 when every one
// returned a real socket.
pid_t StartChild(int calls, UniqueFd* notify_fd) {
  return StartFilteredChild(
      [calls] {
        for (int i = 0; i < calls; ++i) {
          if (socket(AF_INET, SOCK_STREAM, 0) < 0) return 1;  // ENOSYS: not failed open
        }
        return 0;
      },
      notify_fd);
}

tracer::Notification ReceiveOne(int notify_fd) {
  pollfd p{notify_fd, POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 10000), 1);
  tracer::KernelNotifier notifier(notify_fd);
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
    // ShepherdTakeOver returns only when the notification fd hangs up; if it never did, SIGALRM's
    // default action ends this test binary instead of letting it hang.
    alarm(20);
  }
  void TearDown() override { alarm(0); }
};

TEST_F(ShepherdTest, AnswersTheOutstandingCallThenEveryLaterOne) {
  OutstandingTable table = NewTable();
  UniqueFd notify_fd;
  pid_t child = StartChild(3, &notify_fd);
  // The dead supervisor had received the first call and recorded it, but not answered it.
  tracer::Notification n = ReceiveOne(notify_fd.Get());
  table.Add(n.id);
  long answered = ShepherdTakeOver(notify_fd.Get(), table);  // returns once the child is gone
  EXPECT_EQ(WaitExit(child), 0);
  EXPECT_EQ(answered, 3);
}

TEST_F(ShepherdTest, AnswersACallReceivedButNeverRecorded) {
  OutstandingTable table = NewTable();
  UniqueFd notify_fd;
  pid_t child = StartChild(2, &notify_fd);
  tracer::KernelNotifier notifier(notify_fd.Get());
  // The first call was recorded and answered; the supervisor died between receiving the second
  // and recording it. Ids are sequential, so the shepherd finds it above the highest recorded.
  tracer::Notification first = ReceiveOne(notify_fd.Get());
  int slot = table.Add(first.id);
  ASSERT_TRUE(notifier.Continue(first.id).has_value());
  table.Remove(slot);
  tracer::Notification second = ReceiveOne(notify_fd.Get());
  EXPECT_EQ(second.id, first.id + 1);
  long answered = ShepherdTakeOver(notify_fd.Get(), table);
  EXPECT_EQ(WaitExit(child), 0);
  EXPECT_EQ(answered, 1);
}

// A listening loopback server, and a child under the filter whose TCP socket `sock` (made before
// the filter, so that only its connect() is trapped) connects to it, then exits 0 if connected
// (EISCONN, 106, if the connect is run twice).
struct ConnectingChild {
  UniqueFd server, notify_fd;
  sockaddr_in addr{};
  int sock = -1;
  pid_t pid = -1;

  void Start() {
    server.Reset(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    ASSERT_EQ(bind(server.Get(), reinterpret_cast<sockaddr*>(&addr), len), 0);
    ASSERT_EQ(listen(server.Get(), 4), 0);
    ASSERT_EQ(getsockname(server.Get(), reinterpret_cast<sockaddr*>(&addr), &len), 0);
    sock = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(sock, 0);
    const sockaddr_in dest = addr;
    const int s = sock;
    pid = StartFilteredChild(
        [dest, s] {
          if (connect(s, reinterpret_cast<const sockaddr*>(&dest), sizeof(dest)) != 0) return errno;
          sockaddr_in peer{};
          socklen_t peer_len = sizeof(peer);
          return getpeername(s, reinterpret_cast<sockaddr*>(&peer), &peer_len) == 0 ? 0 : 99;
        },
        &notify_fd);
    close(sock);  // the child's own from now on, at the same number
  }

  // What the supervisor does with the program's socket: a copy, by pidfd_getfd.
  UniqueFd Copy() const {
    UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
    return UniqueFd(static_cast<int>(syscall(SYS_pidfd_getfd, pidfd.Get(), sock, 0)));
  }
  int Connect(int fd) const {
    return connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  }
};

// The supervisor died after it had made the program's connect() on its copy of the socket, before
// answering: CONTINUE would make the kernel connect the socket a second time (EISCONN). The
// fallback recorded with the call is answered instead (found by tests/soak/soak.py).
TEST_F(ShepherdTest, AnswersAConnectTheSupervisorMadeWithItsResult) {
  ConnectingChild child;
  ASSERT_NO_FATAL_FAILURE(child.Start());
  OutstandingTable table = NewTable();
  int slot = table.Add(ReceiveOne(child.notify_fd.Get()).id);
  UniqueFd copy = child.Copy();
  ASSERT_TRUE(copy);
  ASSERT_EQ(child.Connect(copy.Get()), 0);
  table.SetFallback(slot, OutstandingTable::kReturnZero);
  copy.Reset();
  long answered = ShepherdTakeOver(child.notify_fd.Get(), table);
  EXPECT_EQ(WaitExit(child.pid), 0) << "the child's connect() failed with that errno";
  EXPECT_EQ(answered, 2);  // the connect, then the child's getpeername (CONTINUE)
}

// Killed during its connect() on the copy, the supervisor dies when that call returns, the
// connection made and nothing more recorded than the probe set before it: the shepherd finds the
// socket connected and answers 0 (the soak's remaining EISCONN, tests/soak/soak.py).
TEST_F(ShepherdTest, AnswersAConnectTheSupervisorWasMakingWhenKilled) {
  ConnectingChild child;
  ASSERT_NO_FATAL_FAILURE(child.Start());
  OutstandingTable table = NewTable();
  int slot = table.Add(ReceiveOne(child.notify_fd.Get()).id);
  UniqueFd copy = child.Copy();
  ASSERT_TRUE(copy);
  table.SetConnectProbe(slot, child.pid, child.sock);
  ASSERT_EQ(child.Connect(copy.Get()), 0);
  copy.Reset();
  long answered = ShepherdTakeOver(child.notify_fd.Get(), table);
  EXPECT_EQ(WaitExit(child.pid), 0) << "the child's connect() failed with that errno";
  EXPECT_EQ(answered, 2);  // the connect, then the child's getpeername (CONTINUE)
}

}  // namespace
}  // namespace slipstream::supervisor
