// slipstreamd in-process: real sockets, real sock_diag, a daemon thread per test.
#include "matcher/daemon.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "base/syscalls.h"
#include "matcher/paths.h"

namespace slipstream::matcher {
namespace {

using namespace std::chrono_literals;

uint64_t Ino(int fd) { return GetFileId(fd)->ino; }

int OpenFds() {
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  while (readdir(d) != nullptr) ++n;
  closedir(d);
  return n;
}

class DaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/slipstream-daemon-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    DaemonConfig config;
    config.dir = dir_;
    config.claim_grace = 100ms;
    config.deferred_claim_limit = 500ms;
    auto d = Daemon::Create(config);
    ASSERT_TRUE(d) << d.error().ToString();
    daemon_ = std::move(*d);
    thread_ = std::thread([this] { daemon_->Run(); });
  }
  void TearDown() override {
    daemon_->Stop();
    thread_.join();
    daemon_.reset();
    std::string cmd = "rm -rf " + dir_;
    ASSERT_EQ(system(cmd.c_str()), 0);
  }

  UniqueFd Session() {
    UniqueFd fd(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    SocketPath(dir_).copy(addr.sun_path, sizeof(addr.sun_path) - 1);
    EXPECT_EQ(connect(fd.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    return fd;
  }

  // Waits up to `ms` for one message.
  static Result<Message> Receive(int fd, int ms = 2000) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, ms) <= 0) return Error(ETIMEDOUT, "test receive");
    return ReceiveMessage(fd);
  }

  static UniqueFd Listener(sockaddr_in* addr) {
    UniqueFd l(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    *addr = sockaddr_in{};
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(*addr);
    EXPECT_EQ(bind(l.Get(), reinterpret_cast<sockaddr*>(addr), sizeof(*addr)), 0);
    EXPECT_EQ(listen(l.Get(), 16), 0);
    EXPECT_EQ(getsockname(l.Get(), reinterpret_cast<sockaddr*>(addr), &len), 0);
    return l;
  }

  static QueryReplyBody Query(int session, int sock, const sockaddr_in& dest) {
    QueryBody q{};
    std::memcpy(&q.dest, &dest, sizeof(dest));
    q.dest_len = sizeof(dest);
    EXPECT_TRUE(SendMessage(session, MsgType::kQuery, 1, getpid(), Bytes(q), {&sock, 1}));
    auto reply = Receive(session);
    EXPECT_TRUE(reply && reply->type() == MsgType::kQueryReply);
    return reply && reply->As<QueryReplyBody>() ? *reply->As<QueryReplyBody>() : QueryReplyBody{0, 99};
  }

  std::string dir_;
  std::unique_ptr<Daemon> daemon_;
  std::thread thread_;
};

TEST_F(DaemonTest, PairsByMirroredTupleAndReleasesTheClientsCopy) {
  UniqueFd server_session = Session(), client_session = Session();
  sockaddr_in addr;
  UniqueFd l = Listener(&addr);
  int lfd = l.Get();
  ASSERT_TRUE(SendMessage(server_session.Get(), MsgType::kRegisterListener, 1, getpid(), {}, {&lfd, 1}));

  UniqueFd c(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  QueryReplyBody q = Query(client_session.Get(), c.Get(), addr);
  EXPECT_EQ(q.do_switch, 1);
  EXPECT_EQ(q.reason, static_cast<uint8_t>(QueryReason::kSupervised));
  ASSERT_EQ(connect(c.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd client_end(sv[0]), server_end(sv[1]);
  InodeBody body{Ino(client_end.Get())};
  int fds[2] = {c.Get(), server_end.Get()};
  ASSERT_TRUE(SendMessage(client_session.Get(), MsgType::kConnected, 2, getpid(), Bytes(body), fds));

  UniqueFd accepted(accept4(l.Get(), nullptr, nullptr, SOCK_CLOEXEC));
  int afd = accepted.Get();
  ASSERT_TRUE(SendMessage(server_session.Get(), MsgType::kClaim, 9, getpid(), {}, {&afd, 1}));
  auto reply = Receive(server_session.Get());
  ASSERT_TRUE(reply);
  ASSERT_EQ(reply->type(), MsgType::kClaimReply);
  EXPECT_EQ(reply->header.seq, 9u);
  ASSERT_EQ(reply->fds.size(), 1u);
  EXPECT_EQ(Ino(reply->fds[0].Get()), Ino(server_end.Get()));  // the very same socket

  auto release = Receive(client_session.Get());
  ASSERT_TRUE(release);
  EXPECT_EQ(release->type(), MsgType::kRelease);
  ASSERT_NE(release->As<InodeBody>(), nullptr);
  EXPECT_EQ(release->As<InodeBody>()->inode, Ino(server_end.Get()));
}

TEST_F(DaemonTest, UnregisteredListenerIsNotSwitched) {
  UniqueFd session = Session();
  sockaddr_in addr;
  UniqueFd l = Listener(&addr);
  UniqueFd c(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  QueryReplyBody q = Query(session.Get(), c.Get(), addr);
  EXPECT_EQ(q.do_switch, 0);
  EXPECT_EQ(q.reason, static_cast<uint8_t>(QueryReason::kUnsupervisedListener));
}

TEST_F(DaemonTest, NoListenerIsNotSwitched) {
  UniqueFd session = Session();
  sockaddr_in addr;
  { UniqueFd l = Listener(&addr); }  // closed: nothing listens there now
  UniqueFd c(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  EXPECT_EQ(Query(session.Get(), c.Get(), addr).reason, static_cast<uint8_t>(QueryReason::kNoListener));
}

TEST_F(DaemonTest, ListenersOfAClosedSessionNoLongerCount) {
  sockaddr_in addr;
  UniqueFd l = Listener(&addr);
  {
    UniqueFd server_session = Session();
    int lfd = l.Get();
    ASSERT_TRUE(SendMessage(server_session.Get(), MsgType::kRegisterListener, 1, getpid(), {}, {&lfd, 1}));
    UniqueFd probe(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    EXPECT_EQ(Query(server_session.Get(), probe.Get(), addr).do_switch, 1);
  }  // the supervisor went away: its program is no longer supervised
  std::this_thread::sleep_for(50ms);
  UniqueFd session = Session();
  UniqueFd c(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  EXPECT_EQ(Query(session.Get(), c.Get(), addr).do_switch, 0);
}

TEST_F(DaemonTest, ClaimFromAnUnsupervisedClientIsAnsweredAtOnce) {
  UniqueFd server_session = Session();
  sockaddr_in addr;
  UniqueFd l = Listener(&addr);
  UniqueFd c(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_EQ(connect(c.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  UniqueFd accepted(accept4(l.Get(), nullptr, nullptr, SOCK_CLOEXEC));
  int afd = accepted.Get();
  auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(SendMessage(server_session.Get(), MsgType::kClaim, 3, getpid(), {}, {&afd, 1}));
  auto reply = Receive(server_session.Get());
  ASSERT_TRUE(reply);
  ASSERT_EQ(reply->type(), MsgType::kClaimReply);
  EXPECT_EQ(reply->As<ClaimReplyBody>()->found, 0);
  EXPECT_TRUE(reply->fds.empty());
  EXPECT_LT(std::chrono::steady_clock::now() - start, 100ms);  // no wait for a client that never comes
}

TEST_F(DaemonTest, ClaimOvertakingConnectedWaitsForIt) {
  UniqueFd server_session = Session(), client_session = Session();
  sockaddr_in addr;
  UniqueFd l = Listener(&addr);
  int lfd = l.Get();
  ASSERT_TRUE(SendMessage(server_session.Get(), MsgType::kRegisterListener, 1, getpid(), {}, {&lfd, 1}));
  UniqueFd c(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_EQ(Query(client_session.Get(), c.Get(), addr).do_switch, 1);
  ASSERT_EQ(connect(c.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  UniqueFd accepted(accept4(l.Get(), nullptr, nullptr, SOCK_CLOEXEC));
  int afd = accepted.Get();
  ASSERT_TRUE(SendMessage(server_session.Get(), MsgType::kClaim, 5, getpid(), {}, {&afd, 1}));
  EXPECT_FALSE(Receive(server_session.Get(), 100));  // deferred: the client is approved
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd client_end(sv[0]), server_end(sv[1]);
  InodeBody body{Ino(client_end.Get())};
  int fds[2] = {c.Get(), server_end.Get()};
  ASSERT_TRUE(SendMessage(client_session.Get(), MsgType::kConnected, 2, getpid(), Bytes(body), fds));
  auto reply = Receive(server_session.Get());
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->header.seq, 5u);
  ASSERT_EQ(reply->fds.size(), 1u);
  EXPECT_EQ(Ino(reply->fds[0].Get()), Ino(server_end.Get()));
}

TEST_F(DaemonTest, AcceptedButNeverClaimedIsHandedBackForRelay) {
  UniqueFd server_session = Session(), client_session = Session();
  sockaddr_in addr;
  UniqueFd l = Listener(&addr);
  int lfd = l.Get();
  ASSERT_TRUE(SendMessage(server_session.Get(), MsgType::kRegisterListener, 1, getpid(), {}, {&lfd, 1}));
  UniqueFd c(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_EQ(Query(client_session.Get(), c.Get(), addr).do_switch, 1);
  ASSERT_EQ(connect(c.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd client_end(sv[0]), server_end(sv[1]);
  InodeBody body{Ino(client_end.Get())};
  int fds[2] = {c.Get(), server_end.Get()};
  ASSERT_TRUE(SendMessage(client_session.Get(), MsgType::kConnected, 2, getpid(), Bytes(body), fds));
  // Someone accepts without claiming (an unsupervised process sharing the listener).
  UniqueFd accepted(accept4(l.Get(), nullptr, nullptr, SOCK_CLOEXEC));
  auto relay = Receive(client_session.Get(), 2000);
  ASSERT_TRUE(relay);
  EXPECT_EQ(relay->type(), MsgType::kRelay);
  EXPECT_EQ(relay->As<InodeBody>()->inode, Ino(server_end.Get()));
}

TEST_F(DaemonTest, ConnectedWithoutApprovalIsRefused) {
  UniqueFd session = Session();
  sockaddr_in addr;
  UniqueFd l = Listener(&addr);
  UniqueFd c(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_EQ(connect(c.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd a(sv[0]), b(sv[1]);
  InodeBody body{Ino(a.Get())};
  int fds[2] = {c.Get(), b.Get()};
  ASSERT_TRUE(SendMessage(session.Get(), MsgType::kConnected, 4, getpid(), Bytes(body), fds));
  auto reply = Receive(session.Get());
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->type(), MsgType::kError);
  EXPECT_EQ(reply->As<ErrorBody>()->err, EPERM);
}

TEST_F(DaemonTest, HostileMessagesGetErrorsAndLeakNothing) {
  // Warm up: the daemon's own fds (sessions, sock_diag) exist before we count.
  UniqueFd session = Session();
  UniqueFd probe_status = Session();
  ASSERT_TRUE(SendMessage(probe_status.Get(), MsgType::kStatus, 1, 0, {}));
  ASSERT_TRUE(Receive(probe_status.Get()));
  int before = OpenFds();
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  UniqueFd r(p[0]), w(p[1]);
  int pipe_fd = r.Get();
  struct Case {
    MsgType type;
    std::vector<uint8_t> body;
    std::vector<int> fds;
  } cases[] = {
      {MsgType::kRegisterListener, {}, {pipe_fd}},           // not a socket
      {MsgType::kRegisterListener, {}, {}},                  // no fd
      {MsgType::kQuery, {1, 2, 3}, {pipe_fd}},               // short body
      {MsgType::kClaim, {}, {pipe_fd}},                      // not a TCP connection
      {MsgType::kConnected, std::vector<uint8_t>(8), {pipe_fd, pipe_fd}},
      {static_cast<MsgType>(999), {}, {pipe_fd}},            // unknown type
      {MsgType::kQueryReply, {}, {}},                        // a reply type, sent to the daemon
  };
  for (const auto& c : cases) {
    ASSERT_TRUE(SendMessage(session.Get(), c.type, 77, 0, c.body, c.fds));
    auto reply = Receive(session.Get());
    ASSERT_TRUE(reply) << "no reply to type " << static_cast<int>(c.type);
    EXPECT_EQ(reply->type(), MsgType::kError) << static_cast<int>(c.type);
    EXPECT_EQ(reply->header.seq, 77u);
  }
  // Bytes that are not a message at all.
  ASSERT_EQ(send(session.Get(), "hello", 5, 0), 5);
  auto reply = Receive(session.Get());
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->type(), MsgType::kError);
  // Still serving, and every fd we sent was closed by the daemon.
  ASSERT_TRUE(SendMessage(probe_status.Get(), MsgType::kStatus, 2, 0, {}));
  auto status = Receive(probe_status.Get());
  ASSERT_TRUE(status);
  EXPECT_EQ(status->type(), MsgType::kStatusReply);
  r.Reset();
  w.Reset();
  EXPECT_EQ(OpenFds(), before);  // the pipe we made is closed again; the daemon kept nothing
}

TEST_F(DaemonTest, OtherUsersAreRefused) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  chmod(dir_.c_str(), 0777);
  chmod(SocketPath(dir_).c_str(), 0777);
  pid_t child = fork();
  if (child == 0) {
    if (setresgid(65534, 65534, 65534) != 0 || setresuid(65534, 65534, 65534) != 0) _exit(3);
    UniqueFd fd(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    SocketPath(dir_).copy(addr.sun_path, sizeof(addr.sun_path) - 1);
    if (connect(fd.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) _exit(4);
    (void)SendMessage(fd.Get(), MsgType::kStatus, 1, 0, {});
    auto reply = Receive(fd.Get(), 2000);
    // The daemon closes the connection of another user without answering.
    _exit(!reply && reply.error().err != ETIMEDOUT ? 0 : 5);
  }
  int status;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace slipstream::matcher
