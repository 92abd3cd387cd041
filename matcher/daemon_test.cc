// slipstreamd in-process: real sockets, real sock_diag, a daemon thread per test.
#include "matcher/daemon.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <thread>
#include <tuple>

#include "base/sock_diag.h"
#include "base/socket_info.h"
#include "base/syscalls.h"
#include "matcher/paths.h"
#include "matcher/status_text.h"

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
    root_ = dir_ = tmpl;
    if (!subdir_.empty()) {
      dir_ += "/" + subdir_;
      ASSERT_EQ(mkdir(dir_.c_str(), 0700), 0);
    }
    DaemonConfig config;
    config.dir = dir_;
    config.claim_grace = 100ms;
    config.deferred_claim_limit = 500ms;
    config.all_users = all_users_;
    auto d = Daemon::Create(config);
    ASSERT_TRUE(d) << d.error().ToString();
    daemon_ = std::move(*d);
    thread_ = std::thread([this] { daemon_->Run(); });
  }
  void TearDown() override {
    if (restore_nofile_) setrlimit(RLIMIT_NOFILE, &saved_nofile_);
    daemon_->Stop();
    thread_.join();
    daemon_.reset();
    std::string cmd = "rm -rf " + root_;
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

  // Reads messages until one of `type` arrives (others, such as kListener broadcasts, are skipped).
  static Result<Message> Expect(int fd, MsgType type, int ms = 2000) {
    for (;;) {
      auto m = Receive(fd, ms);
      if (!m || m->type() == type) return m;
    }
  }

  // How many gate ledgers wait for their supervisor's exit (--status).
  static int WaitingLedgers(int asking) {
    if (!SendMessage(asking, MsgType::kStatus, 9, 0, {})) return -1;
    auto status = Expect(asking, MsgType::kStatusReply);
    if (!status) return -1;
    std::string json(status->body.begin(), status->body.end());
    const std::string key = "\"gate_ledgers_waiting\":";
    size_t at = json.find(key);
    return at == std::string::npos ? -1 : atoi(json.c_str() + at + key.size());
  }

  static bool WaitForWaitingLedgers(int asking, int n) {
    for (int i = 0; i < 200; ++i) {
      if (WaitingLedgers(asking) == n) return true;
      std::this_thread::sleep_for(10ms);
    }
    return false;
  }

  static void Register(int session, int listener) {
    ASSERT_TRUE(SendMessage(session, MsgType::kRegisterListener, 11, getpid(), {}, {&listener, 1}));
    auto reply = Expect(session, MsgType::kRegistered);
    ASSERT_TRUE(reply) << reply.error().ToString();
    EXPECT_EQ(reply->header.seq, 11u);
  }

  // Announces, connects and hands over a fresh pair, as a client's supervisor does.
  struct Client {
    UniqueFd tcp, client_end, server_end;
  };
  static Client Connect(int session, const sockaddr_in& addr, bool commit_follows = false) {
    Client c;
    c.tcp.Reset(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    int fd = c.tcp.Get();
    EXPECT_TRUE(SendMessage(session, MsgType::kIntent, 0, getpid(), {}, {&fd, 1}));
    EXPECT_EQ(connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)), 0);
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    c.client_end.Reset(sv[0]);
    c.server_end.Reset(sv[1]);
    ConnectedBody body{Ino(c.client_end.Get()), 0, commit_follows, {}};
    int fds[2] = {fd, c.server_end.Get()};
    EXPECT_TRUE(SendMessage(session, MsgType::kConnected, 0, getpid(), Bytes(body), fds));
    return c;
  }

  // A status request and its answer: what the session sent before has been handled.
  static void RoundTrip(int session) {
    ASSERT_TRUE(SendMessage(session, MsgType::kStatus, 1, 0, {}));
    ASSERT_TRUE(Expect(session, MsgType::kStatusReply));
  }

  // A pair announced with commit_follows, its connection accepted and claimed (deferred).
  struct Uncommitted {
    Client c;
    UniqueFd accepted;
  };
  static Uncommitted AnnounceUncommitted(int client_session, int server_session, int listener,
                                         const sockaddr_in& addr) {
    Uncommitted u;
    RoundTrip(client_session);  // the daemon has accepted the session: a claim's drain reads it
    u.c = Connect(client_session, addr, /*commit_follows=*/true);
    u.accepted.Reset(accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
    int afd = u.accepted.Get();
    EXPECT_TRUE(SendMessage(server_session, MsgType::kClaim, 5, getpid(), {}, {&afd, 1}));
    RoundTrip(server_session);  // the claim has been handled (deferred) by the status answer
    return u;
  }

  static void Installed(int session, uint64_t ino) {
    InodeBody body{ino};
    ASSERT_TRUE(SendMessage(session, MsgType::kInstalled, 0, getpid(), Bytes(body)));
  }

  // The server's supervisor registers a listener and the client's connects to it; returns the
  // server end's kPush.
  static Result<Message> Pushed(int server_session, int client_session, UniqueFd* listener,
                                Client* c) {
    sockaddr_in addr;
    *listener = Listener(&addr);
    Register(server_session, listener->Get());
    *c = Connect(client_session, addr);
    return Expect(server_session, MsgType::kPush);
  }

  // A live pair: the server's supervisor registers a listener, the client's connects to it, the
  // pushed end is installed and the client's supervisor told so (kRelease).
  // With `accepted`, the server side also accepts the connection and reports that TCP socket with
  // kInstalled (the daemon then holds both sides' TCP sockets), and `server_end` gets the pushed
  // end.
  static void LivePair(int server_session, int client_session, UniqueFd* listener, Client* c,
                       UniqueFd* accepted = nullptr, UniqueFd* server_end = nullptr) {
    auto push = Pushed(server_session, client_session, listener, c);
    ASSERT_TRUE(push) << push.error().ToString();
    InodeBody installed{push->As<PushBody>()->server_end_ino};
    int tcp = -1;
    if (accepted != nullptr) {
      accepted->Reset(accept4(listener->Get(), nullptr, nullptr, SOCK_CLOEXEC));
      ASSERT_TRUE(*accepted);
      tcp = accepted->Get();
    }
    ASSERT_TRUE(SendMessage(server_session, MsgType::kInstalled, 0, getpid(), Bytes(installed),
                            tcp >= 0 ? std::span<const int>(&tcp, 1) : std::span<const int>()));
    if (server_end != nullptr) *server_end = std::move(push->fds[0]);
    ASSERT_TRUE(Expect(client_session, MsgType::kRelease));
  }

  // Raises the soft RLIMIT_NOFILE to the hard limit until TearDown (the test and the daemon share
  // one process). False if the hard limit is below `need`.
  bool RaiseFdLimit(rlim_t need) {
    rlimit raised;
    if (getrlimit(RLIMIT_NOFILE, &saved_nofile_) != 0 || saved_nofile_.rlim_max < need) {
      return false;
    }
    raised = {saved_nofile_.rlim_max, saved_nofile_.rlim_max};
    restore_nofile_ = setrlimit(RLIMIT_NOFILE, &raised) == 0;
    return restore_nofile_;
  }

  // `n` connections to one registered listener, each server end pushed to `server_session`; with
  // `install` each is then reported installed and the client's supervisor told (live pairs),
  // without they are left unreported (pending, held by the server's supervisor).
  static void ManyPairs(int server_session, int client_session, int n, bool install,
                        UniqueFd* listener, std::vector<Client>* clients) {
    sockaddr_in addr;
    *listener = Listener(&addr);
    ASSERT_EQ(listen(listener->Get(), n), 0);
    Register(server_session, listener->Get());
    for (int i = 0; i < n; ++i) {
      clients->push_back(Connect(client_session, addr));
      auto push = Expect(server_session, MsgType::kPush);
      ASSERT_TRUE(push) << push.error().ToString();
      if (!install) continue;
      Installed(server_session, push->As<PushBody>()->server_end_ino);
      ASSERT_TRUE(Expect(client_session, MsgType::kRelease));
    }
  }

  std::string subdir_;      // set by a derived fixture: the runtime directory's own name
  bool all_users_ = false;  // set by a derived fixture: slipstreamd --all-users
  std::string root_;
  std::string dir_;
  std::unique_ptr<Daemon> daemon_;
  std::thread thread_;
  rlimit saved_nofile_{};
  bool restore_nofile_ = false;
};

TEST_F(DaemonTest, RegistrationIsBroadcastToEverySupervisor) {
  UniqueFd early = Session();
  UniqueFd server_session = Session();
  sockaddr_in addr;
  UniqueFd l = Listener(&addr);
  Register(server_session.Get(), l.Get());
  auto seen = Expect(early.Get(), MsgType::kListener);
  ASSERT_TRUE(seen);
  EXPECT_EQ(seen->As<ListenerBody>()->inode, Ino(l.Get()));
  EXPECT_EQ(seen->As<ListenerBody>()->added, 1);
  // A supervisor that connects later is told the current list at once.
  UniqueFd late = Session();
  seen = Expect(late.Get(), MsgType::kListener);
  ASSERT_TRUE(seen);
  EXPECT_EQ(seen->As<ListenerBody>()->inode, Ino(l.Get()));
  // When the registering supervisor goes away, its listeners are no longer supervised.
  server_session.Reset();
  seen = Expect(early.Get(), MsgType::kListener);
  ASSERT_TRUE(seen);
  EXPECT_EQ(seen->As<ListenerBody>()->added, 0);
}

// Hybrid mode: the port is in the shared table by the time kRegistered arrives (so before the
// program's listen() returns), and leaves it with its last listener.
TEST_F(DaemonTest, RegistrationSetsThePortInTheListenerTableBeforeTheReply) {
  int fd = open(ListenerTablePath(dir_).c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  void* p = mmap(nullptr, sizeof(slipstream_listener_table), PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  ASSERT_NE(p, MAP_FAILED);
  const auto* table = static_cast<const slipstream_listener_table*>(p);
  EXPECT_EQ(table->magic, SLIPSTREAM_TABLE_MAGIC);
  UniqueFd server_session = Session();
  sockaddr_in addr;
  UniqueFd l = Listener(&addr);
  uint16_t port = ntohs(addr.sin_port);
  EXPECT_FALSE(slipstream_port_supervised(table, port));
  Register(server_session.Get(), l.Get());
  EXPECT_TRUE(slipstream_port_supervised(table, port));
  EXPECT_FALSE(slipstream_port_supervised(table, static_cast<uint16_t>(port + 1)));
  server_session.Reset();  // its listeners are no longer supervised
  for (int i = 0; i < 200 && slipstream_port_supervised(table, port); ++i) usleep(10000);
  EXPECT_FALSE(slipstream_port_supervised(table, port));
  munmap(p, sizeof(slipstream_listener_table));
}

TEST_F(DaemonTest, PushesTheServerEndAndReleasesTheClientsCopyOnInstall) {
  UniqueFd server_session = Session(), client_session = Session();
  sockaddr_in addr;
  UniqueFd l = Listener(&addr);
  Register(server_session.Get(), l.Get());
  Client c = Connect(client_session.Get(), addr);

  auto push = Expect(server_session.Get(), MsgType::kPush);
  ASSERT_TRUE(push) << push.error().ToString();
  ASSERT_EQ(push->fds.size(), 1u);
  EXPECT_EQ(Ino(push->fds[0].Get()), Ino(c.server_end.Get()));  // the very same socket
  const auto* body = push->As<PushBody>();
  ASSERT_NE(body, nullptr);
  // The key is the mirror of the client's tuple: what the accepting side will see.
  SockAddr local(&body->local, body->local_len), remote(&body->remote, body->remote_len);
  sockaddr_in client_addr;
  socklen_t len = sizeof(client_addr);
  getsockname(c.tcp.Get(), reinterpret_cast<sockaddr*>(&client_addr), &len);
  EXPECT_EQ(local, SockAddr(&addr, sizeof(addr)));
  EXPECT_EQ(remote, SockAddr(&client_addr, sizeof(client_addr)));

  Installed(server_session.Get(), body->server_end_ino);
  auto release = Expect(client_session.Get(), MsgType::kRelease);
  ASSERT_TRUE(release);
  EXPECT_EQ(release->As<InodeBody>()->inode, Ino(c.server_end.Get()));
}

// kPeerGone: once a side's end is closed, the survivor's supervisor has the daemon give that
// side's TCP socket what its program's close would have sent (here an abortive close: RST), so
// the survivor's own retained socket reads as TCP's after it (ENOTCONN, CLOSE). Only the holder
// of an end may ask, and nothing is sent while the peer end exists.
TEST_F(DaemonTest, APeerGoneSendsTheClosedSidesResetToTheSurvivor) {
  UniqueFd server_session = Session(), client_session = Session();
  UniqueFd l, accepted, survivor;  // survivor: the server's end
  Client c;
  ASSERT_NO_FATAL_FAILURE(
      LivePair(server_session.Get(), client_session.Get(), &l, &c, &accepted, &survivor));
  c.server_end.Reset();

  auto peer_gone = [&](int end, uint64_t seq) -> int {
    PeerGoneBody body{0};
    int fds[1] = {end};
    EXPECT_TRUE(SendMessage(server_session.Get(), MsgType::kPeerGone, seq, getpid(), Bytes(body),
                            end >= 0 ? std::span<const int>(fds) : std::span<const int>()));
    auto reply = Expect(server_session.Get(), MsgType::kPeerGoneReply);
    if (!reply || reply->As<PeerGoneReplyBody>() == nullptr) return -1;
    return reply->As<PeerGoneReplyBody>()->result;
  };
  {  // without the end itself: refused
    PeerGoneBody body{1};
    ASSERT_TRUE(SendMessage(server_session.Get(), MsgType::kPeerGone, 30, getpid(), Bytes(body)));
    ASSERT_TRUE(Expect(server_session.Get(), MsgType::kError));
  }
  EXPECT_EQ(peer_gone(survivor.Get(), 31), static_cast<int>(PeerGoneResult::kPeerAlive));
  sockaddr_storage name;
  socklen_t len = sizeof(name);
  EXPECT_EQ(getpeername(accepted.Get(), reinterpret_cast<sockaddr*>(&name), &len), 0);

  // The client's program sets SO_LINGER {1, 0} (its supervisor mirrors it on the retained TCP
  // socket) and closes: its end and every TCP copy but the daemon's are gone.
  linger now{1, 0};
  ASSERT_EQ(setsockopt(c.tcp.Get(), SOL_SOCKET, SO_LINGER, &now, sizeof(now)), 0);
  c.client_end.Reset();
  c.tcp.Reset();
  EXPECT_EQ(getpeername(accepted.Get(), reinterpret_cast<sockaddr*>(&name), &len), 0)
      << "the daemon's copy keeps the connection open";
  EXPECT_EQ(peer_gone(survivor.Get(), 32), static_cast<int>(PeerGoneResult::kSettled));
  len = sizeof(name);
  EXPECT_EQ(getpeername(accepted.Get(), reinterpret_cast<sockaddr*>(&name), &len), -1);
  EXPECT_EQ(errno, ENOTCONN);
  int err = 0;
  len = sizeof(err);
  ASSERT_EQ(getsockopt(accepted.Get(), SOL_SOCKET, SO_ERROR, &err, &len), 0);
  EXPECT_EQ(err, ECONNRESET) << "a reset, not a FIN";
  // Another end (not of a live pair): nothing to settle.
  int pair[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  UniqueFd a(pair[0]), b(pair[1]);
  EXPECT_EQ(peer_gone(a.Get(), 33), static_cast<int>(PeerGoneResult::kUnknown));
}

// kPeerPid names the process on the other side of a live pair (a hint for the reset of an
// abortive close); kSweep closes at once the TCP copies of sides whose end is gone.
TEST_F(DaemonTest, NamesThePeersProcessAndSweepsClosedEndsOnRequest) {
  UniqueFd server_session = Session(), client_session = Session();
  UniqueFd l;
  Client c;
  ASSERT_NO_FATAL_FAILURE(LivePair(server_session.Get(), client_session.Get(), &l, &c));

  auto peer_pid = [&](uint64_t ino) -> int32_t {
    InodeBody body{ino};
    EXPECT_TRUE(SendMessage(client_session.Get(), MsgType::kPeerPid, 21, getpid(), Bytes(body)));
    auto reply = Expect(client_session.Get(), MsgType::kPeerPidReply);
    if (!reply || reply->As<PeerPidBody>() == nullptr) return -1;
    EXPECT_EQ(reply->header.seq, 21u);
    return reply->As<PeerPidBody>()->pid;
  };
  EXPECT_EQ(peer_pid(Ino(c.client_end.Get())), getpid());  // the side that installed the end
  EXPECT_EQ(peer_pid(Ino(c.server_end.Get())), getpid());  // the side that connected
  EXPECT_EQ(peer_pid(1), 0);                               // unknown

  // The client closes its end and its TCP socket: only the daemon's copy keeps the connection.
  auto diag = SockDiag::Open();
  ASSERT_TRUE(diag);
  auto local = SocketName(c.tcp.Get(), false), remote = SocketName(c.tcp.Get(), true);
  ASSERT_TRUE(local && remote);
  c.client_end.Reset();
  c.tcp.Reset();
  auto before = diag->LookupTcp(*local, *remote);
  ASSERT_TRUE(before);
  EXPECT_EQ(before->state, TCP_ESTABLISHED);
  ASSERT_TRUE(SendMessage(client_session.Get(), MsgType::kSweep, 22, getpid(), {}));
  ASSERT_TRUE(Expect(client_session.Get(), MsgType::kSwept));
  auto after = diag->LookupTcp(*local, *remote);  // closed: FIN_WAIT, or gone
  EXPECT_TRUE(!after || after->state != TCP_ESTABLISHED);
}

TEST_F(DaemonTest, ListenersOfSeveralSupervisorsAreClaimed) {
  // Two supervisors each hold a member of a SO_REUSEPORT group: either may accept, so nothing is
  // pushed and the one that accepts claims.
  UniqueFd a = Session(), b = Session(), client_session = Session();
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  UniqueFd l1(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)),
      l2(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int one = 1;
  setsockopt(l1.Get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  setsockopt(l2.Get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  ASSERT_EQ(bind(l1.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  getsockname(l1.Get(), reinterpret_cast<sockaddr*>(&addr), &len);
  ASSERT_EQ(bind(l2.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(l1.Get(), 16), 0);
  ASSERT_EQ(listen(l2.Get(), 16), 0);
  Register(a.Get(), l1.Get());
  Register(b.Get(), l2.Get());
  Client c = Connect(client_session.Get(), addr);
  pollfd p[2] = {{l1.Get(), POLLIN, 0}, {l2.Get(), POLLIN, 0}};
  ASSERT_EQ(poll(p, 2, 2000), 1);
  int which = (p[0].revents & POLLIN) ? 0 : 1;
  int session = which == 0 ? a.Get() : b.Get();
  UniqueFd accepted(accept4(which == 0 ? l1.Get() : l2.Get(), nullptr, nullptr, SOCK_CLOEXEC));
  int afd = accepted.Get();
  ASSERT_TRUE(SendMessage(session, MsgType::kClaim, 21, getpid(), {}, {&afd, 1}));
  auto reply = Expect(session, MsgType::kClaimReply);
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->header.seq, 21u);
  EXPECT_EQ(reply->As<ClaimReplyBody>()->found, static_cast<uint8_t>(ClaimResult::kHere));
  ASSERT_EQ(reply->fds.size(), 1u);
  EXPECT_EQ(Ino(reply->fds[0].Get()), Ino(c.server_end.Get()));
}

TEST_F(DaemonTest, UnsupervisedListenerMeansRelay) {
  UniqueFd client_session = Session();
  sockaddr_in addr;
  UniqueFd l = Listener(&addr);  // nobody registered it
  Client c = Connect(client_session.Get(), addr);
  auto relay = Expect(client_session.Get(), MsgType::kRelay);
  ASSERT_TRUE(relay);
  EXPECT_EQ(relay->As<InodeBody>()->inode, Ino(c.server_end.Get()));
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
  auto reply = Expect(server_session.Get(), MsgType::kClaimReply);
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->As<ClaimReplyBody>()->found, static_cast<uint8_t>(ClaimResult::kNo));
  EXPECT_TRUE(reply->fds.empty());
  EXPECT_LT(std::chrono::steady_clock::now() - start,
            100ms);  // no wait for a client that never comes
}

TEST_F(DaemonTest, ClaimOvertakingConnectedWaitsForIt) {
  UniqueFd server_session = Session(), client_session = Session();
  sockaddr_in addr;
  UniqueFd l = Listener(&addr);
  Register(server_session.Get(), l.Get());
  UniqueFd c(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int cfd = c.Get();
  ASSERT_TRUE(SendMessage(client_session.Get(), MsgType::kIntent, 0, getpid(), {}, {&cfd, 1}));
  ASSERT_EQ(connect(cfd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  UniqueFd accepted(accept4(l.Get(), nullptr, nullptr, SOCK_CLOEXEC));
  int afd = accepted.Get();
  ASSERT_TRUE(SendMessage(server_session.Get(), MsgType::kClaim, 5, getpid(), {}, {&afd, 1}));
  EXPECT_FALSE(Expect(server_session.Get(), MsgType::kClaimReply, 100));  // deferred
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd client_end(sv[0]), server_end(sv[1]);
  ConnectedBody body{Ino(client_end.Get()), 0, 0, {}};
  int fds[2] = {cfd, server_end.Get()};
  ASSERT_TRUE(
      SendMessage(client_session.Get(), MsgType::kConnected, 0, getpid(), Bytes(body), fds));
  auto reply = Expect(server_session.Get(), MsgType::kClaimReply);
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->header.seq, 5u);
  EXPECT_EQ(reply->As<ClaimReplyBody>()->found, static_cast<uint8_t>(ClaimResult::kHere));
  ASSERT_EQ(reply->fds.size(), 1u);
  EXPECT_EQ(Ino(reply->fds[0].Get()), Ino(server_end.Get()));
}

// A connect answered by ADDFD SEND (the preload library's) is announced before its end reaches
// the program (kConnected with commit_follows), so that a supervisor killed in between leaves no
// end without a peer; the server end then waits for kCommitted: no push, claims deferred.
TEST_F(DaemonTest, AnEndAnsweredBySendIsHandedOverOnlyAfterTheCommit) {
  UniqueFd server_session = Session(), client_session = Session();
  sockaddr_in addr;
  UniqueFd l = Listener(&addr);
  Register(server_session.Get(), l.Get());
  Uncommitted u = AnnounceUncommitted(client_session.Get(), server_session.Get(), l.Get(), addr);
  // Neither pushed nor answered while the client's supervisor has not answered its program.
  auto early = Receive(server_session.Get(), 200);
  EXPECT_FALSE(early) << "type " << static_cast<int>(early->type());
  InodeBody committed{Ino(u.c.client_end.Get())};
  ASSERT_TRUE(
      SendMessage(client_session.Get(), MsgType::kCommitted, 0, getpid(), Bytes(committed)));
  auto reply = Expect(server_session.Get(), MsgType::kClaimReply);
  ASSERT_TRUE(reply) << reply.error().ToString();
  EXPECT_EQ(reply->header.seq, 5u);
  EXPECT_EQ(reply->As<ClaimReplyBody>()->found, static_cast<uint8_t>(ClaimResult::kHere));
  ASSERT_EQ(reply->fds.size(), 1u);
  EXPECT_EQ(Ino(reply->fds[0].Get()), Ino(u.c.server_end.Get()));
}

// The client's supervisor dies between the announcement and the commit. Its program either got
// the end (the SEND was made: the pair stands) or kept its TCP socket (the shepherd answered the
// connect): then the server must keep TCP too (claim answered no), or the client's bytes, sent
// over TCP, would reach a server reading an AF_UNIX end, and the connection would be reset.
TEST_F(DaemonTest, AnUncommittedPairOfADeadSupervisorStandsOnlyIfItsProgramHasTheEnd) {
  UniqueFd server_session = Session();
  sockaddr_in addr;
  UniqueFd l = Listener(&addr);
  Register(server_session.Get(), l.Get());
  {
    UniqueFd client_session = Session();
    Uncommitted u = AnnounceUncommitted(client_session.Get(), server_session.Get(), l.Get(), addr);
    EXPECT_FALSE(Expect(server_session.Get(), MsgType::kClaimReply, 100));  // waits for the commit
    u.c.client_end.Reset();                                                 // in no program
    client_session.Reset();
    auto reply = Expect(server_session.Get(), MsgType::kClaimReply);
    ASSERT_TRUE(reply) << reply.error().ToString();
    EXPECT_EQ(reply->As<ClaimReplyBody>()->found, static_cast<uint8_t>(ClaimResult::kNo));
  }
  {
    UniqueFd client_session = Session();
    Uncommitted u = AnnounceUncommitted(client_session.Get(), server_session.Get(), l.Get(), addr);
    // The "program": another process holding the client's end when the supervisor's session ends.
    int go[2];
    ASSERT_EQ(pipe2(go, O_CLOEXEC), 0);
    int session_fd = client_session.Get();
    pid_t program = fork();
    if (program == 0) {
      char byte;
      close(session_fd);  // the supervisor's, not the program's: its session must end
      close(go[1]);
      _exit(read(go[0], &byte, 1) >= 0 ? 0 : 1);
    }
    close(go[0]);
    UniqueFd release_program(go[1]);
    u.c.client_end.Reset();  // ours: only the program's copy is left
    client_session.Reset();
    auto reply = Expect(server_session.Get(), MsgType::kClaimReply);
    release_program.Reset();
    int status = 0;
    ASSERT_EQ(waitpid(program, &status, 0), program);
    ASSERT_TRUE(reply) << reply.error().ToString();
    EXPECT_EQ(reply->As<ClaimReplyBody>()->found, static_cast<uint8_t>(ClaimResult::kHere));
    ASSERT_EQ(reply->fds.size(), 1u);
    EXPECT_EQ(Ino(reply->fds[0].Get()), Ino(u.c.server_end.Get()));
  }
}

// Pairing by TCP sequence numbers (what connections across network namespaces use), exercised in
// one namespace: the kernel evidence is the same. Needs CAP_NET_ADMIN over our namespace (root);
// without it the daemon cannot read them and must relay instead.
class SeqPairing {
 public:
  static void Intent(int session, int fd) {
    IntentBody body{};
    body.by_seq = 1;
    EXPECT_TRUE(SendMessage(session, MsgType::kIntent, 0, getpid(), Bytes(body), {&fd, 1}));
  }
  static void Connected(int session, int fd, int client_end, int server_end) {
    ConnectedBody body{Ino(client_end), 1, 0, {}};
    int fds[2] = {fd, server_end};
    EXPECT_TRUE(SendMessage(session, MsgType::kConnected, 0, getpid(), Bytes(body), fds));
  }
  static bool Privileged() { return geteuid() == 0; }
};

TEST_F(DaemonTest, PairsBySequenceNumbersWhenAsked) {
  UniqueFd server_session = Session(), client_session = Session();
  sockaddr_in addr;
  UniqueFd l = Listener(&addr);
  // Two connections to the same listener: each claim must get its own connection's end.
  UniqueFd c1(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  UniqueFd c2(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int sv1[2], sv2[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv1), 0);
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv2), 0);
  UniqueFd e1(sv1[0]), s1(sv1[1]), e2(sv2[0]), s2(sv2[1]);
  for (auto [c, e, s] :
       {std::tuple{c1.Get(), e1.Get(), s1.Get()}, std::tuple{c2.Get(), e2.Get(), s2.Get()}}) {
    SeqPairing::Intent(client_session.Get(), c);
    ASSERT_EQ(connect(c, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    SeqPairing::Connected(client_session.Get(), c, e, s);
  }
  if (!SeqPairing::Privileged()) {
    EXPECT_TRUE(Expect(client_session.Get(), MsgType::kRelay));
    return;
  }
  UniqueFd a1(accept4(l.Get(), nullptr, nullptr, SOCK_CLOEXEC));
  UniqueFd a2(accept4(l.Get(), nullptr, nullptr, SOCK_CLOEXEC));
  // Claimed in the opposite order, so that order cannot be what pairs them.
  for (auto [accepted, end, seq] :
       {std::tuple{a2.Get(), s2.Get(), 7u}, std::tuple{a1.Get(), s1.Get(), 8u}}) {
    ASSERT_TRUE(
        SendMessage(server_session.Get(), MsgType::kClaim, seq, getpid(), {}, {&accepted, 1}));
    auto reply = Expect(server_session.Get(), MsgType::kClaimReply);
    ASSERT_TRUE(reply);
    EXPECT_EQ(reply->header.seq, seq);
    EXPECT_EQ(reply->As<ClaimReplyBody>()->found, static_cast<uint8_t>(ClaimResult::kHere));
    ASSERT_EQ(reply->fds.size(), 1u);
    EXPECT_EQ(Ino(reply->fds[0].Get()), Ino(end));
  }
  // The reads left both connections working (no byte lost, no probe answered as data).
  ASSERT_EQ(write(c1.Get(), "one", 3), 3);
  ASSERT_EQ(write(a1.Get(), "uno", 3), 3);
  char buf[8] = {};
  EXPECT_EQ(read(a1.Get(), buf, sizeof(buf)), 3);
  EXPECT_EQ(std::string(buf, 3), "one");
  EXPECT_EQ(read(c1.Get(), buf, sizeof(buf)), 3);
  EXPECT_EQ(std::string(buf, 3), "uno");
}

TEST_F(DaemonTest, ClaimBySequenceNumbersWaitsForConnected) {
  if (!SeqPairing::Privileged()) GTEST_SKIP() << "needs CAP_NET_ADMIN";
  UniqueFd server_session = Session(), client_session = Session();
  sockaddr_in addr;
  UniqueFd l = Listener(&addr);
  UniqueFd c(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  SeqPairing::Intent(client_session.Get(), c.Get());
  ASSERT_EQ(connect(c.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  UniqueFd accepted(accept4(l.Get(), nullptr, nullptr, SOCK_CLOEXEC));
  int afd = accepted.Get();
  ASSERT_TRUE(SendMessage(server_session.Get(), MsgType::kClaim, 5, getpid(), {}, {&afd, 1}));
  EXPECT_FALSE(Expect(server_session.Get(), MsgType::kClaimReply, 100));  // deferred
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd client_end(sv[0]), server_end(sv[1]);
  SeqPairing::Connected(client_session.Get(), c.Get(), client_end.Get(), server_end.Get());
  auto reply = Expect(server_session.Get(), MsgType::kClaimReply);
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->As<ClaimReplyBody>()->found, static_cast<uint8_t>(ClaimResult::kHere));
  ASSERT_EQ(reply->fds.size(), 1u);
  EXPECT_EQ(Ino(reply->fds[0].Get()), Ino(server_end.Get()));
}

TEST_F(DaemonTest, UnclaimedConnectionBySequenceNumbersIsRelayed) {
  if (!SeqPairing::Privileged()) GTEST_SKIP() << "needs CAP_NET_ADMIN";
  UniqueFd client_session = Session();
  sockaddr_in addr;
  UniqueFd l = Listener(&addr);
  UniqueFd c(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  SeqPairing::Intent(client_session.Get(), c.Get());
  ASSERT_EQ(connect(c.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd client_end(sv[0]), server_end(sv[1]);
  SeqPairing::Connected(client_session.Get(), c.Get(), client_end.Get(), server_end.Get());
  // Still in the accept queue: no verdict.
  EXPECT_FALSE(Expect(client_session.Get(), MsgType::kRelay, 300));
  // Taken by someone who does not claim it: relayed after the grace.
  UniqueFd accepted(accept4(l.Get(), nullptr, nullptr, SOCK_CLOEXEC));
  auto relay = Expect(client_session.Get(), MsgType::kRelay);
  ASSERT_TRUE(relay);
  EXPECT_EQ(relay->As<InodeBody>()->inode, Ino(server_end.Get()));
}

TEST_F(DaemonTest, DisownedEndIsRelayed) {
  UniqueFd server_session = Session(), client_session = Session();
  sockaddr_in addr;
  UniqueFd l = Listener(&addr);
  Register(server_session.Get(), l.Get());
  Client c = Connect(client_session.Get(), addr);
  auto push = Expect(server_session.Get(), MsgType::kPush);
  ASSERT_TRUE(push);
  InodeBody body{push->As<PushBody>()->server_end_ino};
  ASSERT_TRUE(SendMessage(server_session.Get(), MsgType::kDisown, 0, getpid(), Bytes(body)));
  auto relay = Expect(client_session.Get(), MsgType::kRelay);
  ASSERT_TRUE(relay);
  EXPECT_EQ(relay->As<InodeBody>()->inode, Ino(c.server_end.Get()));
}

TEST_F(DaemonTest, AnEndHeldByADeadSupervisorIsResolvedFromProc) {
  UniqueFd client_session = Session();
  sockaddr_in addr;
  UniqueFd l = Listener(&addr);
  // Case 1: the supervisor that received the end dies before placing it anywhere -> relay.
  {
    UniqueFd server_session = Session();
    Register(server_session.Get(), l.Get());
    Client c = Connect(client_session.Get(), addr);
    ASSERT_TRUE(Expect(server_session.Get(), MsgType::kPush));
    server_session.Reset();
    auto verdict = Expect(client_session.Get(), MsgType::kRelay);
    ASSERT_TRUE(verdict);
    EXPECT_EQ(verdict->As<InodeBody>()->inode, Ino(c.server_end.Get()));
  }
  // Case 2: it placed the end in a program (here: a child holding it) and died before saying so.
  UniqueFd server_session = Session();
  Register(server_session.Get(), l.Get());
  Client c = Connect(client_session.Get(), addr);
  auto push = Expect(server_session.Get(), MsgType::kPush);
  ASSERT_TRUE(push);
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  int held = push->fds[0].Get();
  pid_t holder = fork();
  if (holder == 0) {
    // Keep only the end (and the pipe): a copy of the session socket would keep it open.
    for (int fd = 3; fd < 1024; ++fd) {
      if (fd != held && fd != ready[1]) close(fd);
    }
    (void)!write(ready[1], "x", 1);
    pause();  // holds push->fds[0], as the program would
    _exit(0);
  }
  close(ready[1]);
  char byte;
  ASSERT_EQ(read(ready[0], &byte, 1), 1);
  close(ready[0]);
  push->fds.clear();
  server_session.Reset();
  auto verdict = Expect(client_session.Get(), MsgType::kRelease);
  kill(holder, SIGKILL);
  waitpid(holder, nullptr, 0);
  ASSERT_TRUE(verdict);
  EXPECT_EQ(verdict->As<InodeBody>()->inode, Ino(c.server_end.Get()));
}

// The TCP fd is the proof of possession; an intent only lets an early claim wait. A connection
// no registered listener can take is handed back for relaying.
TEST_F(DaemonTest, ConnectedWithoutIntentNobodyCanTakeIsRelayed) {
  UniqueFd session = Session();
  sockaddr_in addr;
  UniqueFd l = Listener(&addr);
  UniqueFd c(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_EQ(connect(c.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd a(sv[0]), b(sv[1]);
  ConnectedBody body{Ino(a.Get()), 0, 0, {}};
  int fds[2] = {c.Get(), b.Get()};
  ASSERT_TRUE(SendMessage(session.Get(), MsgType::kConnected, 4, getpid(), Bytes(body), fds));
  auto reply = Expect(session.Get(), MsgType::kRelay);
  ASSERT_TRUE(reply);
  ASSERT_NE(reply->As<InodeBody>(), nullptr);
  EXPECT_EQ(reply->As<InodeBody>()->inode, Ino(b.Get()));
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
      {MsgType::kRegisterListener, {}, {pipe_fd}},  // not a socket
      {MsgType::kRegisterListener, {}, {}},         // no fd
      {MsgType::kIntent, {}, {pipe_fd}},            // not a TCP socket
      {MsgType::kClaim, {}, {pipe_fd}},             // not a TCP connection
      {MsgType::kConnected, std::vector<uint8_t>(8), {pipe_fd, pipe_fd}},
      {static_cast<MsgType>(999), {}, {pipe_fd}},  // unknown type
      {MsgType::kClaimReply, {}, {}},              // a reply type, sent to the daemon
      {MsgType::kInstalled, {1, 2}, {}},           // short body
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

// A server end passed on (SCM_RIGHTS) before its supervisor's kInstalled is read: "in flight",
// not "no", which the adopting supervisor would remember for good; once installed, its TCP socket.
TEST_F(DaemonTest, AServerEndAdoptedBeforeItsInstallIsInFlightThenFound) {
  UniqueFd server_session = Session(), client_session = Session(), worker = Session();
  UniqueFd l;
  Client c;
  auto push = Pushed(server_session.Get(), client_session.Get(), &l, &c);
  ASSERT_TRUE(push) << push.error().ToString();
  UniqueFd server_end = std::move(push->fds[0]);
  auto adopt = [&](uint64_t seq) {
    InodeBody body{Ino(server_end.Get())};
    int end = server_end.Get();
    EXPECT_TRUE(SendMessage(worker.Get(), MsgType::kAdopt, seq, getpid(), Bytes(body), {&end, 1}));
    for (;;) {  // past the kListener broadcasts every session gets
      auto reply = Expect(worker.Get(), MsgType::kAdoptReply);
      if (!reply || reply->header.seq == seq) return reply;
    }
  };
  auto reply = adopt(40);
  ASSERT_TRUE(reply) << reply.error().ToString();
  EXPECT_EQ(reply->As<AdoptReplyBody>()->found, static_cast<uint8_t>(AdoptResult::kInFlight));
  EXPECT_TRUE(reply->fds.empty());

  UniqueFd accepted(accept4(l.Get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(accepted);
  InodeBody installed{Ino(server_end.Get())};
  int tcp = accepted.Get();
  ASSERT_TRUE(SendMessage(server_session.Get(), MsgType::kInstalled, 0, getpid(), Bytes(installed),
                          {&tcp, 1}));
  ASSERT_TRUE(Expect(client_session.Get(), MsgType::kRelease));
  reply = adopt(41);
  ASSERT_TRUE(reply) << reply.error().ToString();
  EXPECT_EQ(reply->As<AdoptReplyBody>()->found, static_cast<uint8_t>(AdoptResult::kFound));
  EXPECT_EQ(reply->As<AdoptReplyBody>()->client, 0);
  ASSERT_EQ(reply->fds.size(), 1u);
  EXPECT_EQ(Ino(reply->fds[0].Get()), Ino(accepted.Get()));
}

// Issue #12 (hostile client): kAdopt hands out a live pair's retained TCP socket. A session that
// only knows the end's inode (slipstreamd --status lists it) gets an error and no fd; the holder of
// the end gets its TCP socket.
TEST_F(DaemonTest, AdoptNeedsTheEndItself) {
  UniqueFd server_session = Session(), client_session = Session(), hostile = Session();
  UniqueFd l;
  Client c;
  ASSERT_NO_FATAL_FAILURE(LivePair(server_session.Get(), client_session.Get(), &l, &c));

  // The answer to a kAdopt, past the kListener broadcasts every session gets.
  auto answer = [](int fd) {
    auto m = Receive(fd);
    while (m && m->type() == MsgType::kListener) m = Receive(fd);
    return m;
  };
  for (uint64_t ino : {Ino(c.client_end.Get()), Ino(c.server_end.Get())}) {
    InodeBody body{ino};
    ASSERT_TRUE(SendMessage(hostile.Get(), MsgType::kAdopt, 31, getpid(), Bytes(body)));
    auto reply = answer(hostile.Get());
    ASSERT_TRUE(reply) << reply.error().ToString();
    EXPECT_EQ(reply->type(), MsgType::kError);
    EXPECT_TRUE(reply->fds.empty()) << "a socket of another pair was handed out";
    // Another AF_UNIX end (the hostile session's own) with the inode of the pair's end.
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    UniqueFd mine(sv[0]), other(sv[1]);
    int fd = mine.Get();
    ASSERT_TRUE(SendMessage(hostile.Get(), MsgType::kAdopt, 32, getpid(), Bytes(body), {&fd, 1}));
    reply = answer(hostile.Get());
    ASSERT_TRUE(reply);
    EXPECT_EQ(reply->type(), MsgType::kError);
    EXPECT_TRUE(reply->fds.empty());
  }
  // The holder of the client's end gets the client's TCP socket.
  InodeBody body{Ino(c.client_end.Get())};
  int end = c.client_end.Get();
  ASSERT_TRUE(
      SendMessage(client_session.Get(), MsgType::kAdopt, 33, getpid(), Bytes(body), {&end, 1}));
  auto reply = Expect(client_session.Get(), MsgType::kAdoptReply);
  ASSERT_TRUE(reply) << reply.error().ToString();
  ASSERT_NE(reply->As<AdoptReplyBody>(), nullptr);
  EXPECT_EQ(reply->As<AdoptReplyBody>()->found, 1);
  EXPECT_EQ(reply->As<AdoptReplyBody>()->client, 1);
  ASSERT_EQ(reply->fds.size(), 1u);
  EXPECT_EQ(Ino(reply->fds[0].Get()), Ino(c.tcp.Get()));
}

// Issue #12 (hostile client): the socket attached to kHello is taken as the namespace's sock_diag
// socket only when it is one. A socketpair end would let its sender write the "kernel's" answers to
// the daemon's queries, or block the daemon in recv() by never answering.
TEST_F(DaemonTest, HelloTakesOnlyASockDiagSocket) {
  UniqueFd hostile = Session();
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd fake(sv[0]), writer(sv[1]);
  NetnsAddrs addrs{};
  int fd = fake.Get();
  ASSERT_TRUE(SendMessage(hostile.Get(), MsgType::kHello, 41, getpid(), Bytes(addrs), {&fd, 1}));
  auto reply = Expect(hostile.Get(), MsgType::kHelloReply);
  ASSERT_TRUE(reply) << reply.error().ToString();
  ASSERT_NE(reply->As<HelloReplyBody>(), nullptr);
  EXPECT_EQ(reply->As<HelloReplyBody>()->your_netns, 0u) << "a socketpair end was adopted";
  // A real NETLINK_SOCK_DIAG socket is.
  UniqueFd good = Session();
  auto diag = SockDiag::Open();
  ASSERT_TRUE(diag);
  fd = diag->fd();
  ASSERT_TRUE(SendMessage(good.Get(), MsgType::kHello, 42, getpid(), Bytes(addrs), {&fd, 1}));
  reply = Expect(good.Get(), MsgType::kHelloReply);
  ASSERT_TRUE(reply) << reply.error().ToString();
  ASSERT_NE(reply->As<HelloReplyBody>(), nullptr);
  EXPECT_NE(reply->As<HelloReplyBody>()->your_netns, 0u);
}

// Issue #12 (hostile client): a session that sends requests and never reads the answers is closed
// once 16384 answers wait for it, rather than growing the daemon without bound; others are served.
TEST_F(DaemonTest, ASessionThatReadsNothingIsClosedAtTheQueueLimit) {
  UniqueFd flood = Session(), other = Session();
  InodeBody body{1};
  int sent = 0;
  for (; sent < 40000; ++sent) {
    if (!SendMessage(flood.Get(), MsgType::kPeerPid, sent, 0, Bytes(body))) break;
  }
  EXPECT_GT(sent, 16384);
  // What reaches us is what fit in our socket before the queue filled, then EOF.
  int replies = 0;
  for (;;) {
    auto m = Receive(flood.Get(), 5000);
    if (!m) {
      EXPECT_NE(m.error().err, ETIMEDOUT) << "the session was not closed";
      break;
    }
    ++replies;
  }
  EXPECT_LT(replies, sent);
  ASSERT_TRUE(SendMessage(other.Get(), MsgType::kStatus, 3, 0, {}));
  auto status = Expect(other.Get(), MsgType::kStatusReply);
  ASSERT_TRUE(status) << status.error().ToString();
}

// A session that sends as fast as the daemon reads (and reads its answers, so the queue limit
// above never closes it) must not starve the others: each wake-up reads a bounded batch.
TEST_F(DaemonTest, AFloodingSessionDoesNotStarveTheOthers) {
  UniqueFd flood = Session(), other = Session();
  std::atomic<bool> stop{false};
  std::atomic<int> sent{0};
  std::thread reader([&] {
    while (!stop) (void)Receive(flood.Get(), 100);
  });
  auto write = [&] {
    InodeBody body{1};
    auto until = std::chrono::steady_clock::now() + 8s;
    while (!stop && std::chrono::steady_clock::now() < until) {
      if (!SendMessage(flood.Get(), MsgType::kPeerPid, 1, 0, Bytes(body))) break;
      ++sent;
    }
  };
  std::thread writers[3] = {std::thread(write), std::thread(write), std::thread(write)};
  while (sent < 1000) std::this_thread::sleep_for(1ms);  // the flood is under way
  ASSERT_TRUE(SendMessage(other.Get(), MsgType::kStatus, 3, 0, {}));
  auto status = Expect(other.Get(), MsgType::kStatusReply, 4000);
  int sent_at_reply = sent;
  for (int i = 0; i < 200 && sent == sent_at_reply; ++i) std::this_thread::sleep_for(10ms);
  bool flood_went_on = sent > sent_at_reply;  // the reply did not wait for the flood to end
  stop = true;
  for (auto& w : writers) w.join();
  reader.join();
  ASSERT_TRUE(status) << status.error().ToString() << " after " << sent << " flood messages";
  EXPECT_TRUE(flood_went_on) << "the flood ended before the reply (" << sent << " sent)";
}

// 520 live connections and 5000 supervisors: the full lists (500 connections, every supervisor)
// would exceed what one SEQPACKET message can carry (EMSGSIZE: the reply was dropped and
// `slipstreamd --status` waited in vain). The lists are shortened until it fits.
TEST_F(DaemonTest, StatusOfABusyDaemonFitsInOneMessage) {
  constexpr int kPairs = 520, kSupervisors = 5000;
  if (!RaiseFdLimit(14000)) GTEST_SKIP() << "needs 14000 fds";
  UniqueFd server_session = Session(), client_session = Session(), asking = Session();
  UniqueFd listener;
  std::vector<Client> clients;
  ManyPairs(server_session.Get(), client_session.Get(), kPairs, /*install=*/true, &listener,
            &clients);
  if (HasFatalFailure()) return;
  std::vector<UniqueFd> supervisors;
  for (int i = 0; i < kSupervisors; ++i) supervisors.push_back(Session());
  // The daemon has accepted them all once it answers on the last one.
  ASSERT_TRUE(SendMessage(supervisors.back().Get(), MsgType::kSweep, 1, 0, {}));
  ASSERT_TRUE(Expect(supervisors.back().Get(), MsgType::kSwept, 10000));

  ASSERT_TRUE(SendMessage(asking.Get(), MsgType::kStatus, 5, 0, {}));
  auto status = Expect(asking.Get(), MsgType::kStatusReply);
  ASSERT_TRUE(status) << status.error().ToString();
  std::string json(status->body.begin(), status->body.end());
  EXPECT_TRUE(StatusText(json).has_value()) << json.substr(0, 200);
  EXPECT_NE(json.find("\"connections_total\":520"), std::string::npos);
  size_t listed = 0;  // shortened, not emptied
  for (size_t at = 0; (at = json.find("client_pid", at)) != std::string::npos; ++at) ++listed;
  EXPECT_GE(listed, 100u);
}

// A runtime directory is a path of bytes, not of UTF-8 text (here Latin-1 "é"). Its name is in the
// status reply; the JSON writer threw on it in the event loop and std::terminate took the daemon
// (and this test) down. The byte now reads as U+FFFD, and the daemon goes on answering.
class DaemonInALatin1DirectoryTest : public DaemonTest {
 protected:
  DaemonInALatin1DirectoryTest() { subdir_ = "caf\xe9"; }
};

TEST_F(DaemonInALatin1DirectoryTest, StatusReplacesBytesThatAreNotUtf8) {
  UniqueFd asking = Session();
  for (uint64_t seq : {1, 2}) {  // a second request: the daemon is still there
    ASSERT_TRUE(SendMessage(asking.Get(), MsgType::kStatus, seq, 0, {}));
    auto status = Expect(asking.Get(), MsgType::kStatusReply);
    ASSERT_TRUE(status) << status.error().ToString();
    std::string json(status->body.begin(), status->body.end());
    EXPECT_TRUE(StatusText(json).has_value()) << json;
    EXPECT_NE(json.find("caf\xef\xbf\xbd/"), std::string::npos) << json;
  }
}

// A server's supervisor that dies holding many ends it had not reported on: the daemon looks up
// where each end went (/proc/*/fd). A process holding 8000 fds makes each pass cost; with one pass
// per end the daemon kept everyone else waiting for seconds (567 ms for 400 ends even without it).
// Ends another process holds are claimed (kRelease), the others relayed (kRelay).
TEST_F(DaemonTest, ASupervisorDyingWithManyEndsDoesNotHoldUpTheDaemon) {
  constexpr int kPairs = 400, kExtraFds = 8000;
  if (!RaiseFdLimit(12000)) GTEST_SKIP() << "needs 12000 fds";
  UniqueFd server_session = Session(), client_session = Session(), other = Session();
  UniqueFd listener;
  std::vector<Client> clients;
  ManyPairs(server_session.Get(), client_session.Get(), kPairs, /*install=*/false, &listener,
            &clients);
  if (HasFatalFailure()) return;
  // Another process holds the even-numbered ends, and many other fds.
  int ready[2], done[2];
  ASSERT_EQ(pipe(ready), 0);
  ASSERT_EQ(pipe(done), 0);
  // Only those: a copy of a session socket would keep that session open.
  rlimit nofile;
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &nofile), 0);
  std::vector<bool> keep(static_cast<size_t>(nofile.rlim_cur), false);
  for (int i = 0; i < kPairs; i += 2) keep[clients[i].server_end.Get()] = true;
  keep[ready[1]] = keep[done[0]] = true;
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {  // async-signal-safe calls only (the daemon's thread is in the parent)
    for (int fd = 3; fd < static_cast<int>(keep.size()); ++fd) {
      if (!keep[fd]) close(fd);
    }
    for (int i = 0; i < kExtraFds; ++i) {
      if (open("/dev/null", O_RDONLY) < 0) _exit(1);
    }
    (void)!write(ready[1], "r", 1);
    char c;
    (void)!read(done[0], &c, 1);
    _exit(0);
  }
  char c;
  ASSERT_EQ(read(ready[0], &c, 1), 1);

  server_session.Reset();
  auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(SendMessage(other.Get(), MsgType::kStatus, 7, 0, {}));
  auto status = Expect(other.Get(), MsgType::kStatusReply, 60000);
  auto waited = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(status) << status.error().ToString();
  EXPECT_LT(waited, 3s) << "the daemon answered after "
                        << std::chrono::duration_cast<std::chrono::milliseconds>(waited).count()
                        << " ms";
  std::map<uint64_t, MsgType> verdicts;
  while (verdicts.size() < kPairs) {
    auto m = Receive(client_session.Get(), 5000);
    ASSERT_TRUE(m) << m.error().ToString() << " after " << verdicts.size() << " verdicts";
    if (m->type() == MsgType::kRelease || m->type() == MsgType::kRelay) {
      verdicts[m->As<InodeBody>()->inode] = m->type();
    }
  }
  for (int i = 0; i < kPairs; ++i) {
    EXPECT_EQ(verdicts[Ino(clients[i].server_end.Get())],
              i % 2 == 0 ? MsgType::kRelease : MsgType::kRelay)
        << "end " << i;
  }
  (void)!write(done[1], "d", 1);
  waitpid(child, nullptr, 0);
  for (int fd : {ready[0], ready[1], done[0], done[1]}) close(fd);
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
    (void)SendMessage(fd.Get(), MsgType::kStatus, 1, 0, {});  // may fail: closed already
    // The daemon says why (kError naming --all-users), answers nothing else, and closes. Closed
    // with our kStatus unread, it resets the connection: the first read may report ECONNRESET
    // (the socket's error goes before its queue), and the kError is read after it.
    auto refusal = Receive(fd.Get(), 2000);
    if (!refusal && refusal.error().err == ECONNRESET) refusal = Receive(fd.Get(), 2000);
    if (!refusal || refusal->type() != MsgType::kError) _exit(5);
    const auto* body = refusal->As<ErrorBody>();
    if (body == nullptr || body->err != EACCES || !strstr(body->text, "--all-users")) _exit(6);
    auto after = Receive(fd.Get(), 2000);
    _exit(!after && after.error().err != ETIMEDOUT ? 0 : 7);
  }
  int status;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// A supervisor that cannot write the table (a system-wide daemon's) has the daemon raise the
// `switching` gate of the port it connects to, answered once raised; the raise lasts as long as
// the intent (here: until kAbort).
TEST_F(DaemonTest, IntentRaisesTheGateForASupervisorThatCannotWriteTheTable) {
  UniqueFd session = Session();
  constexpr uint16_t kPort = 40123;
  UniqueFd tcp(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int fd = tcp.Get();
  IntentBody body{};
  body.raise_gate = 1;
  body.port = kPort;
  ASSERT_TRUE(SendMessage(session.Get(), MsgType::kIntent, 5, getpid(), Bytes(body), {&fd, 1}));
  auto reply = Expect(session.Get(), MsgType::kIntentReply);
  ASSERT_TRUE(reply) << reply.error().ToString();
  EXPECT_EQ(reply->header.seq, 5u);
  AcceptGate reader(ListenerTablePath(dir_));
  EXPECT_EQ(reader.Read(AcceptGate::Kind::kSwitching, kPort), std::optional<uint32_t>(1));

  InodeBody abort{Ino(fd)};
  ASSERT_TRUE(SendMessage(session.Get(), MsgType::kAbort, 0, getpid(), Bytes(abort)));
  ASSERT_TRUE(SendMessage(session.Get(), MsgType::kStatus, 6, 0, {}));  // after the abort
  ASSERT_TRUE(Expect(session.Get(), MsgType::kStatusReply));
  EXPECT_EQ(reader.Read(AcceptGate::Kind::kSwitching, kPort), std::optional<uint32_t>(0));
}

// A session can end while its supervisor still runs (the daemon closed it at the queue limit, the
// supervisor gave it up after a send timed out): the counts in its ledger are still needed (a
// parked connection; a switch whose server end a program holds), so they are lowered only once
// that process has exited, and a new session that sends the same ledger takes it over. Draining
// at the session's end dropped the raise below at once.
TEST_F(DaemonTest, ALiveSupervisorsLedgerIsDrainedOnlyWhenItExits) {
  constexpr uint16_t kPort = 40124;
  const auto kSwitching = AcceptGate::Kind::kSwitching;
  UniqueFd asking = Session();
  AcceptGate gate(ListenerTablePath(dir_), /*with_ledger=*/true);
  AcceptGate::Count raised = gate.Raise(kSwitching, kPort);
  ASSERT_TRUE(raised.raised());
  int ledger = gate.ledger_fd();
  ASSERT_GE(ledger, 0);
  auto send_ledger = [&](int session) {
    ASSERT_TRUE(SendMessage(session, MsgType::kGateLedger, 1, getpid(), {}, {&ledger, 1}));
    ASSERT_TRUE(SendMessage(session, MsgType::kStatus, 2, 0, {}));  // handled in order
    ASSERT_TRUE(Expect(session, MsgType::kStatusReply));
  };
  {
    UniqueFd first = Session();
    send_ledger(first.Get());
  }  // its session ends; we live on
  ASSERT_TRUE(WaitForWaitingLedgers(asking.Get(), 1));
  EXPECT_EQ(gate.Read(kSwitching, kPort), std::optional<uint32_t>(1));
  UniqueFd second = Session();
  send_ledger(second.Get());  // we reconnected: ours again
  EXPECT_EQ(WaitingLedgers(asking.Get()), 0);
  second.Reset();
  ASSERT_TRUE(WaitForWaitingLedgers(asking.Get(), 1));
  EXPECT_EQ(gate.Read(kSwitching, kPort), std::optional<uint32_t>(1));

  // Now a child takes the ledger over, ends its session and exits: then the count is lowered.
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  SocketPath(dir_).copy(addr.sun_path, sizeof(addr.sun_path) - 1);
  int go[2], ready[2];
  ASSERT_EQ(pipe2(go, O_CLOEXEC), 0);
  ASSERT_EQ(pipe2(ready, O_CLOEXEC), 0);
  pid_t child = fork();
  if (child == 0) {  // only system calls and SendMessage: the daemon's thread is not copied
    char byte;
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0) _exit(101);
    if (!SendMessage(fd, MsgType::kGateLedger, 1, getpid(), {}, {&ledger, 1})) _exit(102);
    if (!SendMessage(fd, MsgType::kStatus, 2, 0, {})) _exit(103);
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 5000) != 1) _exit(104);  // the ledger was handled before the status
    if (write(ready[1], "r", 1) != 1 || read(go[0], &byte, 1) != 1) _exit(105);
    close(fd);
    _exit(read(go[0], &byte, 1) == 1 ? 0 : 106);
  }
  close(go[0]);
  close(ready[1]);
  UniqueFd go_write(go[1]), ready_read(ready[0]);
  char byte;
  ASSERT_EQ(read(ready_read.Get(), &byte, 1), 1);
  EXPECT_EQ(WaitingLedgers(asking.Get()), 0);   // the child's session holds it
  ASSERT_EQ(write(go_write.Get(), "c", 1), 1);  // the child ends its session and lives on
  ASSERT_TRUE(WaitForWaitingLedgers(asking.Get(), 1));
  EXPECT_EQ(gate.Read(kSwitching, kPort), std::optional<uint32_t>(1));
  ASSERT_EQ(write(go_write.Get(), "x", 1), 1);  // the child exits
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);
  ASSERT_TRUE(WaitForWaitingLedgers(asking.Get(), 0));
  EXPECT_EQ(gate.Read(kSwitching, kPort), std::optional<uint32_t>(0));
  raised.Reset();  // finds its ledger entry taken: the table stays at 0
  EXPECT_EQ(gate.Read(kSwitching, kPort), std::optional<uint32_t>(0));
}

// What a process of another uid (nobody) reads first from the daemon's socket: the kError's errno,
// or a negative errno of the child's own calls. Only raw system calls after fork(): the daemon's
// thread may hold locks the child would inherit.
int FirstWordAsNobody(const std::string& dir, int wait_ms = 5000) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  SocketPath(dir).copy(addr.sun_path, sizeof(addr.sun_path) - 1);
  pid_t child = fork();
  if (child == 0) {
    if (setresgid(65534, 65534, 65534) < 0 || setresuid(65534, 65534, 65534) < 0) _exit(101);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0) _exit(102);
    alignas(8) char buf[sizeof(Header) + sizeof(ErrorBody)];
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, wait_ms) != 1) _exit(103);
    if (recv(fd, buf, sizeof(buf), 0) != static_cast<ssize_t>(sizeof(buf))) _exit(104);
    Header h;
    ErrorBody e;
    memcpy(&h, buf, sizeof(h));
    memcpy(&e, buf + sizeof(h), sizeof(e));
    if (h.type != static_cast<uint16_t>(MsgType::kError) || h.seq != 0) _exit(105);
    // Then the daemon closes the session.
    _exit(recv(fd, buf, sizeof(buf), 0) == 0 ? e.err : 106);
  }
  int status = 0;
  waitpid(child, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST_F(DaemonTest, ASessionOfAnotherUserIsToldWhyBeforeTheClose) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to connect as another user";
  // Opened up, as an administrator might: the daemon still serves its own user only.
  ASSERT_EQ(chmod(root_.c_str(), 0755), 0);
  ASSERT_EQ(chmod(SocketPath(dir_).c_str(), 0666), 0);
  EXPECT_EQ(FirstWordAsNobody(dir_), EACCES);
}

class AllUsersDaemonTest : public DaemonTest {
 protected:
  AllUsersDaemonTest() { all_users_ = true; }
};

TEST_F(AllUsersDaemonTest, SocketAndTableAreOpenToEveryUser) {
  struct stat st;
  ASSERT_EQ(stat(SocketPath(dir_).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0666u);
  ASSERT_EQ(stat(ListenerTablePath(dir_).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);
}

TEST_F(AllUsersDaemonTest, ASessionOfAnotherUserIsServed) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to connect as another user";
  ASSERT_EQ(chmod(root_.c_str(), 0755), 0);
  // Served: nothing to read until it asks (the child times out waiting for a word).
  EXPECT_EQ(FirstWordAsNobody(dir_, /*wait_ms=*/300), 103);
}

}  // namespace
}  // namespace slipstream::matcher
