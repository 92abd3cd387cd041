// SocketCalls and Switcher through their seams: a fake Notifier records each answer, a fake
// FdInstaller records each placement. The notifications are synthetic, but their target is a real
// child process that holds real sockets and buffers: the handlers take its fds with pidfd_getfd
// and read and write its memory with process_vm_readv/writev, as they do under supervision.
// A child rather than a thread of the test: its memory is another address space, so a value the
// handler wrote can only have come through process_vm_writev, and a read of the wrong address
// space would show.
// The Switcher is never started against a real slipstreamd: bookings are made directly, and the
// two questions FindOrAdopt asks a daemon go to a stand-in at the daemon's socket path.
#include "supervisor/socket_calls.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>

#include "base/socket_info.h"
#include "matcher/listener_table.h"
#include "matcher/paths.h"
#include "matcher/protocol.h"
#include "preload-fallback/preload_abi.h"

namespace slipstream::supervisor {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;
using tracer::Call;

std::string Continued() { return "CONTINUE"; }
std::string Returned(int64_t value) { return "RETURN " + std::to_string(value); }
std::string Failed(int err) { return "FAIL " + std::to_string(err); }

// Each answer as text ("CONTINUE", "RETURN 0", "FAIL 14"), so a test compares it whole.
class FakeNotifier : public tracer::Notifier {
 public:
  Result<tracer::Notification> Receive() override { return Error(ENOSYS, "fake Receive"); }
  Status Continue(uint64_t) override { return Record(Continued()); }
  Status Return(uint64_t, int64_t value) override { return Record(Returned(value)); }
  Status Fail(uint64_t, int err) override { return Record(Failed(err)); }
  Status IdValid(uint64_t id) override {
    ++id_checks;
    if (target_left || left_ids.count(id) != 0) return Error(ENOENT, "fake NOTIF_ID_VALID");
    return {};
  }

  std::vector<std::string> answers;
  int id_checks = 0;
  bool target_left = false;     // IdValid says the target left every call (a signal)
  std::set<uint64_t> left_ids;  // ...or these calls

 private:
  Status Record(std::string answer) {
    answers.push_back(std::move(answer));
    return {};
  }
};

// Records each placement with a copy of the file it would have put in the target; answers with
// the fd number the target would have got.
class FakeInstaller : public fdinject::FdInstaller {
 public:
  static constexpr int kNewFd = 77;
  Result<int> Install(const fdinject::Placement& placement) override {
    if (left.count(placement.id) != 0) return Error(ENOENT, "fake ADDFD: the target left");
    placements.push_back(placement);
    files.emplace_back(fcntl(placement.src_fd, F_DUPFD_CLOEXEC, 0));
    return placement.target_fd >= 0 ? placement.target_fd : kNewFd;
  }
  std::vector<fdinject::Placement> placements;
  std::vector<UniqueFd> files;
  std::set<uint64_t> left;  // notification ids whose call the target left (a signal)
};

// The target's memory that pointer arguments point into. A global so that it has the same address
// in the forked target; the test reads the target's copy back with process_vm_readv.
struct TargetMemory {
  alignas(8) uint8_t buf[128];  // an option value, an address in or out
  socklen_t len;                // its value-result length
};
TargetMemory g_mem;
constexpr uint8_t kUntouched = 0xab;
constexpr uint64_t kUnmapped = 0x10;  // below mmap_min_addr: never mapped

uint64_t Ptr(const void* p) { return reinterpret_cast<uintptr_t>(p); }

struct TcpConnection {
  UniqueFd listener;
  UniqueFd client;
  UniqueFd server;
};

UniqueFd Listener() {
  UniqueFd l(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(bind(l.Get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  EXPECT_EQ(listen(l.Get(), 8), 0);
  return l;
}

UniqueFd ConnectTo(int listener) {
  auto addr = SocketName(listener, false);
  UniqueFd c(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  EXPECT_TRUE(addr.has_value());
  EXPECT_EQ(connect(c.Get(), addr->get(), addr->len()), 0) << strerror(errno);
  return c;
}

TcpConnection Connected() {
  TcpConnection t;
  t.listener = Listener();
  t.client = ConnectTo(t.listener.Get());
  t.server = UniqueFd(accept4(t.listener.Get(), nullptr, nullptr, SOCK_CLOEXEC));
  EXPECT_TRUE(t.server);
  return t;
}

// getpeername()'s errno for `fd`; 0 when it is connected.
int PeerError(int fd) {
  sockaddr_storage a;
  socklen_t len = sizeof(a);
  return getpeername(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0 ? 0 : errno;
}

std::pair<UniqueFd, UniqueFd> UnixPair() {
  int sv[2];
  EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  return {UniqueFd(sv[0]), UniqueFd(sv[1])};
}

// A private runtime directory, so that no Switcher of a test maps the accept gates of a real
// daemon (matcher::RuntimeDir reads SLIPSTREAM_RUNTIME_DIR).
class RuntimeDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/slipstream-unit.XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    ASSERT_EQ(setenv("SLIPSTREAM_RUNTIME_DIR", dir_.c_str(), 1), 0);
  }
  void TearDown() override {
    unsetenv("SLIPSTREAM_RUNTIME_DIR");
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  std::string dir_;
};

// A stand-in for slipstreamd at the daemon's socket path, for what FindOrAdopt asks it: answers
// kAdopt with `adopt_tcp` (found), not found when it is -1, not at all when it is kSilent (a
// stopped daemon), anything else with kError (kHello
// always; the rest only when `answer_others`, else never, as a stopped daemon). Records the inode
// of each kAdopt whose end came along (0 for one without it).
class FakeDaemon {
 public:
  static constexpr int kSilent = -2;
  // How a kClaim is answered besides the above: as the real daemon does when the client's
  // kConnected reached it first (push the end, then answer "pushed to you"), or the push alone.
  enum class Claims { kError, kPushThenReply, kPushOnly };
  FakeDaemon(const std::string& dir, int adopt_tcp, bool answer_others = true,
             Claims claims = Claims::kError)
      : adopt_tcp_(adopt_tcp), answer_others_(answer_others), claims_(claims) {
    listener_ = UniqueFd(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    matcher::SocketPath(dir).copy(addr.sun_path, sizeof(addr.sun_path) - 1);
    unlink(addr.sun_path);  // an earlier FakeDaemon's
    EXPECT_EQ(bind(listener_.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(listen(listener_.Get(), 1), 0);
    thread_ = std::thread([this] { Serve(); });
  }
  ~FakeDaemon() {
    shutdown(listener_.Get(), SHUT_RDWR);  // wakes an accept that never got a client
    if (int conn = conn_.load(); conn >= 0) shutdown(conn, SHUT_RDWR);
    thread_.join();
  }
  std::vector<uint64_t> adopted() {
    std::lock_guard lock(mu_);
    return adopted_;
  }
  uint64_t pushed_end_ino() {
    std::lock_guard lock(mu_);
    return pushed_end_ino_;
  }

 private:
  void Serve() {
    UniqueFd conn(accept4(listener_.Get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!conn) return;
    conn_ = conn.Get();
    for (;;) {
      auto m = matcher::ReceiveMessage(conn.Get());
      if (!m && m.error().err == EPROTO) continue;
      if (!m) break;
      if (m->type() == matcher::MsgType::kClaim && claims_ != Claims::kError) {
        PushFor(conn.Get(), *m);
        continue;
      }
      if (m->type() != matcher::MsgType::kAdopt) {
        if (answer_others_ || m->type() == matcher::MsgType::kHello) {
          (void)matcher::SendMessage(conn.Get(), matcher::MsgType::kError, m->header.seq, 0, {});
        }
        continue;
      }
      const auto* body = m->As<matcher::InodeBody>();
      bool with_end =
          body != nullptr && m->fds.size() == 1 && InodeOf(m->fds[0].Get()) == body->inode;
      {
        std::lock_guard lock(mu_);
        adopted_.push_back(with_end ? body->inode : 0);
      }
      if (adopt_tcp_ == kSilent) continue;
      matcher::AdoptReplyBody reply{adopt_tcp_ >= 0, 1};
      std::span<const int> fds;
      if (adopt_tcp_ >= 0) fds = {&adopt_tcp_, 1};
      (void)matcher::SendMessage(conn.Get(), matcher::MsgType::kAdoptReply, m->header.seq, 0,
                                 matcher::Bytes(reply), fds);
    }
    conn_ = -1;
  }
  // Pushes a new end for the claimed connection (addresses as its accepting side sees them).
  void PushFor(int conn, const matcher::Message& claim) {
    if (claim.fds.size() != 1) return;
    auto local = SocketName(claim.fds[0].Get(), false);
    auto remote = SocketName(claim.fds[0].Get(), true);
    int pair[2];
    if (!local || !remote || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0) return;
    UniqueFd end(pair[0]), kept(pair[1]);
    matcher::PushBody body{};
    std::memcpy(&body.local, local->get(), local->len());
    std::memcpy(&body.remote, remote->get(), remote->len());
    body.local_len = local->len();
    body.remote_len = remote->len();
    body.server_end_ino = InodeOf(end.Get());
    {
      std::lock_guard lock(mu_);
      pushed_end_ino_ = body.server_end_ino;
    }
    int fd = end.Get();
    (void)matcher::SendMessage(conn, matcher::MsgType::kPush, 0, 0, matcher::Bytes(body), {&fd, 1});
    if (claims_ != Claims::kPushThenReply) return;
    matcher::ClaimReplyBody reply{static_cast<uint8_t>(matcher::ClaimResult::kPushedToYou)};
    (void)matcher::SendMessage(conn, matcher::MsgType::kClaimReply, claim.header.seq, 0,
                               matcher::Bytes(reply));
  }
  int adopt_tcp_;
  bool answer_others_;
  Claims claims_;
  uint64_t pushed_end_ino_ = 0;
  UniqueFd listener_;
  std::atomic<int> conn_{-1};
  std::mutex mu_;
  std::vector<uint64_t> adopted_;
  std::thread thread_;
};

class SocketCallsTest : public RuntimeDirTest {
 protected:
  SocketCallsTest()
      : table_(std::move(*OutstandingTable::Create())),
        trace_(nullptr),
        sinks_{notifier_, table_, trace_, stats_},
        held_(io_, notifier_, /*killable=*/false) {
    // What CanEmulate() needs; the kernel calls behind them are made for real (Linux 5.14+).
    features_.user_notif = features_.pidfd_getfd = features_.process_vm = true;
    features_.addfd = features_.addfd_send = true;
    memset(g_mem.buf, kUntouched, sizeof(g_mem.buf));
    g_mem.len = sizeof(g_mem.buf);
  }
  void SetUp() override {
    RuntimeDirTest::SetUp();
    switcher_.emplace(io_, stats_);  // never Start()ed: no daemon
  }
  void TearDown() override {
    held_.DropAll();  // their retries name our SocketCalls
    switching_.reset();
    observing_.reset();
    if (target_ > 0) {
      kill(target_, SIGKILL);
      waitpid(target_, nullptr, 0);
    }
    switcher_.reset();
    RuntimeDirTest::TearDown();
  }

  // Forks the target, which holds a copy of every fd the test has open and of g_mem as it is now,
  // and sleeps until killed.
  void StartTarget() {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      for (;;) pause();
    }
    target_ = pid;
  }

  // Handles one call the target "made"; returns the answers sent for it, comma-separated ("" when
  // none was sent: answered by ADDFD SEND, or abandoned).
  // Calls held for later (an accept with nothing queued) stay with the test's SocketCalls, which
  // lives until TearDown; RunHeld() then serves them.
  std::string Handle(Call call, std::array<uint64_t, 6> args, bool observe_only = false) {
    size_t before = notifier_.answers.size();
    SocketCalls& calls = observe_only ? Calls(observing_, nullptr) : Calls(switching_, &*switcher_);
    tracer::Notification n;
    n.id = ++last_id_;
    n.tid = target_;
    n.args = args;
    calls.Handle(PendingCall(sinks_, n, call));
    return AnswersSince(before);
  }
  // Runs what is ready on the event loop (a held call whose fd became ready); returns the answers
  // it sent.
  std::string RunHeld() {
    size_t before = notifier_.answers.size();
    for (int i = 0; i < 20; ++i) {  // the readiness reaches Asio's epoll, then ours
      io_.restart();
      io_.poll();
      if (notifier_.answers.size() != before || !installer_.placements.empty()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return AnswersSince(before);
  }
  std::string AnswersSince(size_t before) const {
    std::string out;
    for (size_t i = before; i < notifier_.answers.size(); ++i) {
      out += (out.empty() ? "" : ", ") + notifier_.answers[i];
    }
    return out;
  }
  SocketCalls& Calls(std::optional<SocketCalls>& calls, Switcher* switcher) {
    if (!calls) {
      calls.emplace(HandlerEnv{features_, notifier_, installer_, held_, local_, stats_, switcher});
    }
    return *calls;
  }

  // The target's copy of g_mem.
  TargetMemory TargetMem() const {
    TargetMemory mem{};
    iovec local{&mem, sizeof(mem)};
    iovec remote{&g_mem, sizeof(mem)};
    EXPECT_EQ(process_vm_readv(target_, &local, 1, &remote, 1, 0),
              static_cast<ssize_t>(sizeof(mem)))
        << strerror(errno);
    return mem;
  }
  bool Untouched(const TargetMemory& mem) const {
    for (uint8_t b : mem.buf) {
      if (b != kUntouched) return false;
    }
    return mem.len == sizeof(mem.buf);
  }
  static int IntAt(const TargetMemory& mem) {
    int v;
    memcpy(&v, mem.buf, sizeof(v));
    return v;
  }

  // Books the connection `tcp` as switched to the AF_UNIX end `end` (as after a connect()).
  void BookSwitched(int end, int tcp, bool connect_unreported = false) {
    switcher_->Book(InodeOf(end), UniqueFd(fcntl(tcp, F_DUPFD_CLOEXEC, 0)), /*client=*/true,
                    connect_unreported);
  }

  tracer::KernelFeatures features_;
  FakeNotifier notifier_;
  FakeInstaller installer_;
  OutstandingTable table_;
  TraceLog trace_;
  Stats stats_;
  CallSinks sinks_;
  boost::asio::io_context io_;
  HeldCalls held_;
  LocalAddresses local_;
  std::optional<Switcher> switcher_;
  std::optional<SocketCalls> switching_, observing_;
  pid_t target_ = -1;
  uint64_t last_id_ = 1000;
};

// --- Calls the kernel answers ----------------------------------------------------------------

TEST_F(SocketCallsTest, GetNameOnTcpSocketIsLeftToTheKernel) {
  TcpConnection tcp = Connected();
  StartTarget();
  int fd = tcp.client.Get();
  EXPECT_EQ(
      Handle(Call::kGetsockname, {static_cast<uint64_t>(fd), Ptr(g_mem.buf), Ptr(&g_mem.len)}),
      Continued());
  EXPECT_EQ(
      Handle(Call::kGetpeername, {static_cast<uint64_t>(fd), Ptr(g_mem.buf), Ptr(&g_mem.len)}),
      Continued());
  EXPECT_EQ(Handle(Call::kGetpeername, {static_cast<uint64_t>(fd), Ptr(g_mem.buf), Ptr(&g_mem.len)},
                   /*observe_only=*/true),
            Continued());
  EXPECT_TRUE(Untouched(TargetMem())) << "the kernel writes the address, not the supervisor";
  EXPECT_EQ(notifier_.id_checks, 0) << "a CONTINUE needs no NOTIF_ID_VALID";
  EXPECT_TRUE(installer_.placements.empty());
}

TEST_F(SocketCallsTest, GetNameOnNonSocketOrClosedFdIsLeftToTheKernel) {
  int pipe_fds[2];
  ASSERT_EQ(pipe2(pipe_fds, O_CLOEXEC), 0);
  UniqueFd r(pipe_fds[0]), w(pipe_fds[1]);
  auto [end, peer] = UnixPair();  // an AF_UNIX end nobody switched
  StartTarget();
  for (int fd : {r.Get(), end.Get(), 999}) {
    EXPECT_EQ(
        Handle(Call::kGetpeername, {static_cast<uint64_t>(fd), Ptr(g_mem.buf), Ptr(&g_mem.len)}),
        Continued())
        << "fd " << fd;
  }
  EXPECT_TRUE(Untouched(TargetMem()));
}

TEST_F(SocketCallsTest, ConnectWithoutSwitcherIsLeftToTheKernel) {
  UniqueFd listener = Listener();
  auto dest = SocketName(listener.Get(), false);
  ASSERT_TRUE(dest);
  memcpy(g_mem.buf, dest->get(), dest->len());
  UniqueFd sock(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  StartTarget();
  EXPECT_EQ(Handle(Call::kConnect, {static_cast<uint64_t>(sock.Get()), Ptr(g_mem.buf), dest->len()},
                   /*observe_only=*/true),
            Continued());
  // The supervisor did not connect the program's socket itself: the kernel will.
  EXPECT_EQ(PeerError(sock.Get()), ENOTCONN);
  EXPECT_EQ(stats_.left_on_tcp, 1u);
  pollfd p{listener.Get(), POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 0), 0) << "no connection reached the listener";
}

TEST_F(SocketCallsTest, ConnectToNonLocalAddressWithoutDaemonIsLeftToTheKernel) {
  sockaddr_in dest{};
  dest.sin_family = AF_INET;
  dest.sin_port = htons(9);
  ASSERT_EQ(inet_pton(AF_INET, "192.0.2.1", &dest.sin_addr), 1);  // TEST-NET-1: never local
  memcpy(g_mem.buf, &dest, sizeof(dest));
  UniqueFd sock(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  StartTarget();
  EXPECT_EQ(
      Handle(Call::kConnect, {static_cast<uint64_t>(sock.Get()), Ptr(g_mem.buf), sizeof(dest)}),
      Continued());
  EXPECT_EQ(PeerError(sock.Get()), ENOTCONN) << "no SYN was sent for the program";
  EXPECT_EQ(stats_.connects, 1u);
  EXPECT_EQ(stats_.left_on_tcp, 1u);
  EXPECT_TRUE(installer_.placements.empty());
}

TEST_F(SocketCallsTest, ConnectWithUnreadableAddressIsLeftToTheKernel) {
  UniqueFd sock(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  StartTarget();
  // The kernel's own EFAULT, not one the supervisor makes up.
  EXPECT_EQ(
      Handle(Call::kConnect, {static_cast<uint64_t>(sock.Get()), kUnmapped, sizeof(sockaddr_in)}),
      Continued());
  EXPECT_EQ(stats_.connects, 0u) << "nothing is decided on an address that could not be read";
  EXPECT_EQ(notifier_.id_checks, 0);
}

TEST_F(SocketCallsTest, SockoptOnUnswitchedSocketIsLeftToTheKernel) {
  TcpConnection tcp = Connected();
  auto [end, peer] = UnixPair();
  g_mem.len = sizeof(int);
  StartTarget();
  for (int fd : {tcp.client.Get(), end.Get()}) {
    for (int name : {SO_DOMAIN, SO_PROTOCOL, SO_RCVBUF}) {
      EXPECT_EQ(
          Handle(Call::kGetsockopt, {static_cast<uint64_t>(fd), SOL_SOCKET,
                                     static_cast<uint64_t>(name), Ptr(g_mem.buf), Ptr(&g_mem.len)}),
          Continued())
          << "fd " << fd << " option " << name;
    }
  }
  EXPECT_EQ(Handle(Call::kGetsockopt,
                   {static_cast<uint64_t>(end.Get()), SOL_SOCKET, SO_DOMAIN, Ptr(g_mem.buf),
                    Ptr(&g_mem.len)},
                   /*observe_only=*/true),
            Continued());
  TargetMemory mem = TargetMem();
  EXPECT_EQ(mem.buf[0], kUntouched);
  EXPECT_EQ(mem.len, sizeof(int));
}

TEST_F(SocketCallsTest, AcceptWithBadFlagsOrObserveOnlyIsLeftToTheKernel) {
  TcpConnection tcp = Connected();
  UniqueFd queued = ConnectTo(tcp.listener.Get());  // waits in the listener's queue
  StartTarget();
  uint64_t l = static_cast<uint64_t>(tcp.listener.Get());
  EXPECT_EQ(Handle(Call::kAccept4, {l, Ptr(g_mem.buf), Ptr(&g_mem.len), 1}), Continued())
      << "the kernel's EINVAL for flags other than SOCK_CLOEXEC | SOCK_NONBLOCK";
  EXPECT_EQ(Handle(Call::kAccept, {l, Ptr(g_mem.buf), Ptr(&g_mem.len)}, /*observe_only=*/true),
            Continued());
  pollfd p{tcp.listener.Get(), POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 0), 1) << "the connection is still queued for the kernel's accept";
  EXPECT_TRUE(installer_.placements.empty());
  EXPECT_TRUE(Untouched(TargetMem()));
}

// --- Calls the supervisor runs -----------------------------------------------------------------

// With a switcher (no daemon) an accept runs on the listener copy: the connection stays TCP and
// is placed in the target by ADDFD SEND, the peer address written as accept4() would.
TEST_F(SocketCallsTest, AcceptWithoutDaemonInstallsTheTcpConnection) {
  TcpConnection tcp = Connected();
  UniqueFd queued = ConnectTo(tcp.listener.Get());
  auto client_name = SocketName(queued.Get(), false);
  ASSERT_TRUE(client_name);
  StartTarget();
  EXPECT_EQ(Handle(Call::kAccept4, {static_cast<uint64_t>(tcp.listener.Get()), Ptr(g_mem.buf),
                                    Ptr(&g_mem.len), SOCK_CLOEXEC}),
            "")
      << "answered by the installation itself";
  ASSERT_EQ(installer_.placements.size(), 1u);
  const fdinject::Placement& p = installer_.placements[0];
  EXPECT_EQ(p.id, last_id_);
  EXPECT_EQ(p.target_fd, -1);
  EXPECT_TRUE(p.send);
  EXPECT_TRUE(p.cloexec);
  auto peer = SocketName(installer_.files[0].Get(), true);
  ASSERT_TRUE(peer);
  EXPECT_EQ(*peer, *client_name) << "the installed socket is the queued connection: "
                                 << peer->ToString();
  TargetMemory mem = TargetMem();
  ASSERT_EQ(mem.len, sizeof(sockaddr_in));
  EXPECT_EQ(SockAddr(mem.buf, mem.len), *client_name) << SockAddr(mem.buf, mem.len).ToString();
  EXPECT_EQ(stats_.accepts, 1u);
  EXPECT_EQ(stats_.left_on_tcp, 1u);
}

// With the table there and the port's `switching` gate at zero, a queued connection cannot be a
// switching client's: the kernel runs the accept (CONTINUE), nothing is taken or installed. With
// the gate raised, or nothing queued, the supervisor accepts itself as before.
TEST_F(SocketCallsTest, AcceptWithNothingToPairIsLeftToTheKernel) {
  auto table = matcher::ListenerTable::Open(matcher::ListenerTablePath(dir_));
  ASSERT_TRUE(table) << table.error().ToString();
  TcpConnection tcp = Connected();
  UniqueFd queued = ConnectTo(tcp.listener.Get());
  auto port = SocketName(tcp.listener.Get(), false)->port();
  StartTarget();
  std::array<uint64_t, 6> args{static_cast<uint64_t>(tcp.listener.Get()), Ptr(g_mem.buf),
                               Ptr(&g_mem.len), SOCK_CLOEXEC};
  EXPECT_EQ(Handle(Call::kAccept4, args), Continued());
  EXPECT_TRUE(installer_.placements.empty());
  pollfd p{tcp.listener.Get(), POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 0), 1) << "the connection is still queued, for the kernel's accept";
  EXPECT_EQ(stats_.accepts, 1u);
  EXPECT_EQ(stats_.left_on_tcp, 1u);

  matcher::AcceptGate::Count switching = switcher_->BeginSwitch(port);
  ASSERT_TRUE(switching.raised());
  EXPECT_EQ(Handle(Call::kAccept4, args), "") << "a switch is in flight: the supervisor accepts";
  ASSERT_EQ(installer_.placements.size(), 1u);
  EXPECT_EQ(*SocketName(installer_.files[0].Get(), true), *SocketName(queued.Get(), false));
}

// A blocking accept with nothing queued is held. Held alone, it is let through once a connection
// arrives that no switch is in flight for (the kernel accepts: one trapped call); one of several
// held on the listener is not (one connection wakes them all), and the supervisor accepts.
TEST_F(SocketCallsTest, HeldAcceptAloneIsLetThroughWhenNothingToPair) {
  auto table = matcher::ListenerTable::Open(matcher::ListenerTablePath(dir_));
  ASSERT_TRUE(table) << table.error().ToString();
  UniqueFd listener = Listener();
  StartTarget();
  std::array<uint64_t, 6> args{static_cast<uint64_t>(listener.Get()), 0, 0, SOCK_CLOEXEC};
  EXPECT_EQ(Handle(Call::kAccept4, args), "") << "nothing queued: held";
  EXPECT_EQ(held_.size(), 1u);
  UniqueFd client = ConnectTo(listener.Get());
  EXPECT_EQ(RunHeld(), Continued());
  EXPECT_TRUE(installer_.placements.empty());
  EXPECT_EQ(held_.size(), 0u);
  pollfd p{listener.Get(), POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 0), 1) << "still queued, for the kernel's accept";
}

TEST_F(SocketCallsTest, HeldAcceptsWokenTogetherAreServedBySupervisor) {
  auto table = matcher::ListenerTable::Open(matcher::ListenerTablePath(dir_));
  ASSERT_TRUE(table) << table.error().ToString();
  UniqueFd listener = Listener();
  StartTarget();
  std::array<uint64_t, 6> args{static_cast<uint64_t>(listener.Get()), 0, 0, SOCK_CLOEXEC};
  EXPECT_EQ(Handle(Call::kAccept4, args), "");
  EXPECT_EQ(Handle(Call::kAccept4, args), "");
  EXPECT_EQ(held_.size(), 2u);
  UniqueFd client = ConnectTo(listener.Get());
  EXPECT_EQ(RunHeld(), "") << "installed (ADDFD SEND), not let through";
  ASSERT_EQ(installer_.placements.size(), 1u);
  EXPECT_EQ(*SocketName(installer_.files[0].Get(), true), *SocketName(client.Get(), false));
  EXPECT_EQ(held_.size(), 1u) << "the other waits for the next connection";
}

// An accept withdrawn (a signal) while its claim is out: the connection it took is parked when
// the daemon answers. The restarted accept, non-blocking, found nothing queued meanwhile: it waits
// for the claim's end and takes the parked connection, where failing with EAGAIN would leave the
// connection parked out of sight of an event loop that waits for the listener to be readable.
TEST_F(SocketCallsTest, AcceptRestartedWhileItsClaimIsOutTakesTheParkedConnection) {
  auto table = matcher::ListenerTable::Open(matcher::ListenerTablePath(dir_));
  ASSERT_TRUE(table) << table.error().ToString();
  FakeDaemon daemon(dir_, /*adopt_tcp=*/-1);  // answers the claim with kError: not paired
  switcher_->Start();
  ASSERT_TRUE(switcher_->active());
  UniqueFd listener = Listener();
  ASSERT_TRUE(SetNonBlocking(listener.Get(), true));
  matcher::AcceptGate::Count switching =
      switcher_->BeginSwitch(SocketName(listener.Get(), false)->port());  // so the accept claims
  UniqueFd client = ConnectTo(listener.Get());
  StartTarget();
  std::array<uint64_t, 6> args{static_cast<uint64_t>(listener.Get()), 0, 0,
                               SOCK_CLOEXEC | SOCK_NONBLOCK};
  EXPECT_EQ(Handle(Call::kAccept4, args), "") << "taken; the claim is out";
  installer_.left.insert(last_id_);
  EXPECT_EQ(Handle(Call::kAccept4, args), "") << "nothing queued, a claim out: held, not EAGAIN";
  for (int i = 0; i < 200 && installer_.placements.empty(); ++i) {
    io_.restart();
    io_.run_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(installer_.placements.size(), 1u);
  EXPECT_EQ(installer_.placements[0].id, last_id_) << "the restarted accept got it";
  EXPECT_EQ(*SocketName(installer_.files[0].Get(), true), *SocketName(client.Get(), false));
  EXPECT_EQ(held_.size(), 0u);
}

// A held call is retried when something arrives by another way than its fd (a connection parked
// for the listener): Wake runs the retries of the calls held with that key, posted, and only
// theirs; HeldWith counts them, and counts off those that end.
TEST_F(SocketCallsTest, WakeRetriesOnlyTheMatchingHeldCalls) {
  UniqueFd quiet = Listener(), other = Listener();  // never readable: nothing connects
  auto id_of = [](int fd) { return GetFileId(fd).value(); };
  FileId quiet_id = id_of(quiet.Get()), other_id = id_of(other.Get());
  std::vector<int> retried;
  auto hold = [&](int fd, int tag, std::optional<FileId> key) {
    tracer::Notification n;
    n.id = ++last_id_;
    n.tid = getpid();
    held_.Hold(
        PendingCall(sinks_, n, Call::kAccept), UniqueFd(fcntl(fd, F_DUPFD_CLOEXEC, 0)),
        HeldCalls::Wait::kRead,
        [&retried, tag](PendingCall& call, int) {
          retried.push_back(tag);
          call.Return(0);
          return true;
        },
        nullptr, key);
  };
  hold(quiet.Get(), 1, quiet_id);
  hold(other.Get(), 2, other_id);
  hold(quiet.Get(), 3, std::nullopt);  // the same fd, but held without the key
  EXPECT_EQ(held_.HeldWith(quiet_id), 1);
  EXPECT_EQ(held_.HeldWith(other_id), 1);
  held_.Wake(quiet_id);
  EXPECT_TRUE(retried.empty()) << "posted, never run inside the caller";
  io_.restart();
  io_.poll();
  EXPECT_THAT(retried, ElementsAre(1));
  EXPECT_EQ(held_.size(), 2u) << "the answered call is dropped; the others stay held";
  EXPECT_EQ(held_.HeldWith(quiet_id), 0) << "counted off when it ended";
  held_.DropAll();
  EXPECT_EQ(held_.HeldWith(other_id), 0);
}

// A thread's new call ends the held calls that thread left (withdrawn by a signal), and only
// those: a call of that thread that is still valid, and other threads' calls (lower and higher
// tids), stay held. Each ended call is abandoned (no answer) and counted off its key.
TEST_F(SocketCallsTest, ThreadMovedOnEndsOnlyThatThreadsWithdrawnCalls) {
  UniqueFd quiet = Listener();  // never readable: nothing connects
  FileId key = GetFileId(quiet.Get()).value();
  std::vector<int> ended;  // the tags of the calls ended, in order
  auto hold = [&](pid_t tid, int tag) {
    tracer::Notification n;
    n.id = ++last_id_;
    n.tid = tid;
    held_.Hold(
        PendingCall(sinks_, n, Call::kAccept), UniqueFd(fcntl(quiet.Get(), F_DUPFD_CLOEXEC, 0)),
        HeldCalls::Wait::kRead, [](PendingCall&, int) { return false; },
        [&ended, tag](PendingCall&, int, HeldCalls::End end) {
          EXPECT_EQ(end, HeldCalls::End::kWithdrawn);
          ended.push_back(tag);
        },
        key);
    return n.id;
  };
  uint64_t first = hold(101, 1);
  hold(50, 2);
  hold(202, 3);
  uint64_t second = hold(101, 4);
  hold(101, 5);  // still in its call: valid
  EXPECT_EQ(held_.HeldWith(key), 5);
  held_.ThreadMovedOn(101);
  EXPECT_TRUE(ended.empty()) << "its calls are still valid: a thread's call is not withdrawn";
  notifier_.left_ids = {first, second};
  held_.ThreadMovedOn(303);
  EXPECT_TRUE(ended.empty()) << "a thread with no held call";
  held_.ThreadMovedOn(101);
  EXPECT_THAT(ended, ElementsAre(1, 4)) << "the withdrawn ones, oldest first";
  EXPECT_TRUE(notifier_.answers.empty()) << "abandoned: a withdrawn call gets no answer";
  EXPECT_EQ(held_.size(), 3u);
  EXPECT_EQ(held_.HeldWith(key), 3);
  held_.DropAll();
  EXPECT_EQ(held_.HeldWith(key), 0);
}

// DropAll forgets calls whose file lives on in another fd (the program's socket, passed on or
// dup'ed): the epoll item of such a file outlives our copy of the fd, so without its removal a
// later event would point to a freed call (AddressSanitizer: heap-use-after-free).
TEST_F(SocketCallsTest, DropAllForgetsCallsWhoseFileLivesOnElsewhere) {
  int pair[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  UniqueFd held_end(pair[0]), writer(pair[1]);
  int retried = 0;
  tracer::Notification n;
  n.id = ++last_id_;
  n.tid = getpid();
  held_.Hold(PendingCall(sinks_, n, Call::kAccept),
             UniqueFd(fcntl(held_end.Get(), F_DUPFD_CLOEXEC, 0)), HeldCalls::Wait::kRead,
             [&retried](PendingCall& call, int) {
               ++retried;
               call.Return(0);
               return true;
             });
  ASSERT_EQ(held_.size(), 1u);
  held_.DropAll();
  EXPECT_EQ(notifier_.answers.size(), 1u) << "a dropped call is left to the kernel";
  ASSERT_EQ(write(writer.Get(), "x", 1), 1);  // held_end's file (still open here) turns readable
  io_.restart();
  io_.run_for(std::chrono::milliseconds(50));
  EXPECT_EQ(retried, 0) << "a dropped call is never retried";
  EXPECT_EQ(held_.size(), 0u);
  EXPECT_EQ(notifier_.answers.size(), 1u) << "nor answered again";
}

// An end that reached the program from another supervisor's program (SCM_RIGHTS): the daemon
// hands over its TCP socket, whose address getpeername then answers.
TEST_F(SocketCallsTest, GetNameOnAnEndTheDaemonKnows) {
  TcpConnection tcp = Connected();
  auto remote = SocketName(tcp.client.Get(), true);
  ASSERT_TRUE(remote);
  auto [end, peer] = UnixPair();
  FakeDaemon daemon(dir_, tcp.client.Get());
  switcher_->Start();
  ASSERT_TRUE(switcher_->active());
  StartTarget();
  EXPECT_EQ(Handle(Call::kGetpeername,
                   {static_cast<uint64_t>(end.Get()), Ptr(g_mem.buf), Ptr(&g_mem.len)}),
            Returned(0));
  TargetMemory mem = TargetMem();
  ASSERT_EQ(mem.len, sizeof(sockaddr_in));
  EXPECT_EQ(SockAddr(mem.buf, mem.len), *remote) << SockAddr(mem.buf, mem.len).ToString();
  EXPECT_THAT(daemon.adopted(), ElementsAre(InodeOf(end.Get())));
}

// --- A switched socket: answered from the retained TCP socket ---------------------------------

class SwitchedSocketTest : public SocketCallsTest {
 protected:
  void SetUp() override {
    SocketCallsTest::SetUp();
    tcp_ = Connected();
    std::tie(end_, peer_end_) = UnixPair();
    BookSwitched(end_.Get(), tcp_.client.Get());
  }
  uint64_t end() const { return static_cast<uint64_t>(end_.Get()); }
  std::string GetIntOpt(int level, int name) {
    return Handle(Call::kGetsockopt,
                  {end(), static_cast<uint64_t>(level), static_cast<uint64_t>(name), Ptr(g_mem.buf),
                   Ptr(&g_mem.len)});
  }
  TcpConnection tcp_;
  UniqueFd end_;  // the program's AF_UNIX end, at the same fd number in the target
  UniqueFd peer_end_;
};

TEST_F(SwitchedSocketTest, IdentityOptionsComeFromTheTcpSocket) {
  g_mem.len = sizeof(int);
  StartTarget();
  EXPECT_EQ(GetIntOpt(SOL_SOCKET, SO_DOMAIN), Returned(0));
  TargetMemory mem = TargetMem();
  EXPECT_EQ(IntAt(mem), AF_INET) << "natively the end would say AF_UNIX";
  EXPECT_EQ(mem.len, sizeof(int));
  EXPECT_EQ(GetIntOpt(SOL_SOCKET, SO_PROTOCOL), Returned(0));
  EXPECT_EQ(IntAt(TargetMem()), IPPROTO_TCP);
  EXPECT_EQ(notifier_.id_checks, 2) << "each value was read, then the id validated";
}

TEST_F(SwitchedSocketTest, TcpLevelOptionsComeFromTheTcpSocket) {
  int one = 1;
  ASSERT_EQ(setsockopt(tcp_.client.Get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)), 0);
  g_mem.len = sizeof(int);
  StartTarget();
  EXPECT_EQ(GetIntOpt(IPPROTO_TCP, TCP_NODELAY), Returned(0))
      << "an AF_UNIX socket would fail it with EOPNOTSUPP";
  EXPECT_EQ(IntAt(TargetMem()), 1);
}

TEST_F(SwitchedSocketTest, ByteStreamOptionsAreLeftToTheKernel) {
  g_mem.len = sizeof(int);
  StartTarget();
  // SO_RCVBUF and the like describe the AF_UNIX end the program reads from.
  EXPECT_EQ(GetIntOpt(SOL_SOCKET, SO_RCVBUF), Continued());
  EXPECT_EQ(GetIntOpt(SOL_SOCKET, SO_ERROR), Continued());
  EXPECT_EQ(TargetMem().buf[0], kUntouched);
}

TEST_F(SwitchedSocketTest, GetNamesAreTheTcpSocketsAddresses) {
  auto local = SocketName(tcp_.client.Get(), false);
  auto remote = SocketName(tcp_.client.Get(), true);
  ASSERT_TRUE(local && remote);
  StartTarget();
  EXPECT_EQ(Handle(Call::kGetpeername, {end(), Ptr(g_mem.buf), Ptr(&g_mem.len)}), Returned(0));
  TargetMemory mem = TargetMem();
  ASSERT_EQ(mem.len, sizeof(sockaddr_in));
  EXPECT_EQ(SockAddr(mem.buf, mem.len), *remote) << SockAddr(mem.buf, mem.len).ToString();
  EXPECT_EQ(mem.buf[sizeof(sockaddr_in)], kUntouched) << "nothing beyond the address";

  EXPECT_EQ(Handle(Call::kGetsockname, {end(), Ptr(g_mem.buf), Ptr(&g_mem.len)}), Returned(0));
  mem = TargetMem();
  ASSERT_EQ(mem.len, sizeof(sockaddr_in));
  EXPECT_EQ(SockAddr(mem.buf, mem.len), *local) << SockAddr(mem.buf, mem.len).ToString();
}

TEST_F(SwitchedSocketTest, NamesOptionGivesBothTcpAddresses) {
  auto local = SocketName(tcp_.client.Get(), false);
  auto remote = SocketName(tcp_.client.Get(), true);
  ASSERT_TRUE(local && remote);
  g_mem.len = sizeof(slipstream_names);
  StartTarget();
  EXPECT_EQ(GetIntOpt(SLIPSTREAM_SOL, SLIPSTREAM_OPT_NAMES), Returned(0));
  TargetMemory mem = TargetMem();
  EXPECT_EQ(mem.len, sizeof(slipstream_names));
  slipstream_names names;
  memcpy(&names, mem.buf, sizeof(names));
  ASSERT_EQ(names.local_len, sizeof(sockaddr_in));
  ASSERT_EQ(names.peer_len, sizeof(sockaddr_in));
  EXPECT_EQ(SockAddr(names.local, names.local_len), *local)
      << SockAddr(names.local, names.local_len).ToString();
  EXPECT_EQ(SockAddr(names.peer, names.peer_len), *remote)
      << SockAddr(names.peer, names.peer_len).ToString();
  EXPECT_EQ(mem.buf[sizeof(names)], kUntouched);
}

TEST_F(SwitchedSocketTest, NamesOptionOnATcpSocketIsLeftToTheKernel) {
  g_mem.len = sizeof(slipstream_names);
  StartTarget();
  // The kernel's error (EOPNOTSUPP) tells the library the socket is not switched.
  EXPECT_EQ(Handle(Call::kGetsockopt, {static_cast<uint64_t>(tcp_.client.Get()), SLIPSTREAM_SOL,
                                       SLIPSTREAM_OPT_NAMES, Ptr(g_mem.buf), Ptr(&g_mem.len)}),
            Continued());
  TargetMemory mem = TargetMem();
  EXPECT_EQ(mem.buf[0], kUntouched);
  EXPECT_EQ(mem.len, sizeof(slipstream_names));
}

// The kernel answers a level no protocol has with EOPNOTSUPP whatever the length: so must we on
// any socket that is not switched, even with an unreadable or short length.
TEST_F(SwitchedSocketTest, NamesOptionLengthIsJudgedOnlyOnASwitchedSocket) {
  g_mem.len = 1;
  StartTarget();
  uint64_t tcp = static_cast<uint64_t>(tcp_.client.Get());
  EXPECT_EQ(Handle(Call::kGetsockopt,
                   {tcp, SLIPSTREAM_SOL, SLIPSTREAM_OPT_NAMES, Ptr(g_mem.buf), kUnmapped}),
            Continued());
  EXPECT_EQ(Handle(Call::kGetsockopt,
                   {tcp, SLIPSTREAM_SOL, SLIPSTREAM_OPT_NAMES, Ptr(g_mem.buf), Ptr(&g_mem.len)}),
            Continued());
  EXPECT_EQ(Handle(Call::kGetsockopt,
                   {end(), SLIPSTREAM_SOL, SLIPSTREAM_OPT_NAMES, Ptr(g_mem.buf), Ptr(&g_mem.len)}),
            Failed(EINVAL));
  EXPECT_EQ(Handle(Call::kGetsockopt,
                   {end(), SLIPSTREAM_SOL, SLIPSTREAM_OPT_NAMES, Ptr(g_mem.buf), kUnmapped}),
            Failed(EFAULT));
}

TEST_F(SwitchedSocketTest, GetNameIntoUnwritableBufferFailsWithEfault) {
  StartTarget();
  EXPECT_EQ(Handle(Call::kGetpeername, {end(), kUnmapped, Ptr(&g_mem.len)}), Failed(EFAULT));
  EXPECT_EQ(Handle(Call::kGetsockopt, {end(), SOL_SOCKET, SO_DOMAIN, Ptr(g_mem.buf), kUnmapped}),
            Failed(EFAULT));
}

TEST_F(SwitchedSocketTest, NothingIsWrittenOrAnsweredWhenTheTargetLeftTheCall) {
  g_mem.len = sizeof(int);
  notifier_.target_left = true;
  StartTarget();
  EXPECT_EQ(GetIntOpt(SOL_SOCKET, SO_DOMAIN), "");
  EXPECT_EQ(Handle(Call::kGetpeername, {end(), Ptr(g_mem.buf), Ptr(&g_mem.len)}), "");
  TargetMemory mem = TargetMem();
  EXPECT_EQ(mem.buf[0], kUntouched) << "the memory may belong to another call by now";
  EXPECT_EQ(mem.len, sizeof(int));
  EXPECT_EQ(stats_.interrupted, 2u);
}

TEST_F(SwitchedSocketTest, ConnectAgainAnswersAsAConnectedTcpSocket) {
  auto dest = SocketName(tcp_.listener.Get(), false);
  ASSERT_TRUE(dest);
  memcpy(g_mem.buf, dest->get(), dest->len());
  StartTarget();
  EXPECT_EQ(Handle(Call::kConnect, {end(), Ptr(g_mem.buf), dest->len()}), Failed(EISCONN));
}

TEST_F(SwitchedSocketTest, ConnectAfterEinprogressReportsTheConnectionOnce) {
  switcher_->Find(InodeOf(end_.Get()))->connect_unreported = true;
  auto dest = SocketName(tcp_.listener.Get(), false);
  ASSERT_TRUE(dest);
  memcpy(g_mem.buf, dest->get(), dest->len());
  StartTarget();
  EXPECT_EQ(Handle(Call::kConnect, {end(), Ptr(g_mem.buf), dest->len()}), Returned(0));
  EXPECT_EQ(Handle(Call::kConnect, {end(), Ptr(g_mem.buf), dest->len()}), Failed(EISCONN));
}

TEST_F(SwitchedSocketTest, DisconnectGivesTheTcpSocketBack) {
  sockaddr unspec{};
  unspec.sa_family = AF_UNSPEC;
  memcpy(g_mem.buf, &unspec, sizeof(unspec));
  uint64_t tcp_ino = InodeOf(tcp_.client.Get());
  StartTarget();
  EXPECT_EQ(Handle(Call::kConnect, {end(), Ptr(g_mem.buf), sizeof(unspec)}), Returned(0));
  ASSERT_EQ(installer_.placements.size(), 1u);
  EXPECT_EQ(installer_.placements[0].target_fd, end_.Get()) << "over the program's fd";
  EXPECT_FALSE(installer_.placements[0].send);
  EXPECT_EQ(InodeOf(installer_.files[0].Get()), tcp_ino);
  EXPECT_EQ(switcher_->booked(), 0u);
  EXPECT_EQ(PeerError(tcp_.client.Get()), ENOTCONN) << "disconnected (AF_UNSPEC)";
}

// --- Switcher without a daemon --------------------------------------------------------------

class SwitcherTest : public RuntimeDirTest {
 protected:
  void SetUp() override {
    RuntimeDirTest::SetUp();
    switcher_.emplace(io_, stats_);  // reads the runtime directory: after the base's SetUp
  }
  void TearDown() override {
    switcher_.reset();
    RuntimeDirTest::TearDown();
  }
  // Runs the event loop until `done` or a bound that only catches a hang.
  template <class F>
  bool RunUntil(F done) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      io_.restart();
      io_.run_for(std::chrono::milliseconds(50));
    }
    return done();
  }
  boost::asio::io_context io_;
  Stats stats_;
  std::optional<Switcher> switcher_;
};

// --- MatcherClient's asynchronous requests ---------------------------------------------------

// A request on the notification path does not wait: its answer comes later, posted to the loop.
TEST_F(SwitcherTest, CallAsyncAnswerIsPostedNeverRunInline) {
  FakeDaemon daemon(dir_, /*adopt_tcp=*/-1);
  MatcherClient client(io_, {});
  ASSERT_TRUE(client.Connect(/*spawn=*/false));
  std::optional<Result<matcher::Message>> answer;
  client.CallAsync(matcher::MsgType::kSweep, getpid(), {}, {},
                   [&](Result<matcher::Message> m) { answer = std::move(m); });
  EXPECT_FALSE(answer) << "run before CallAsync returned";
  ASSERT_TRUE(RunUntil([&] { return answer.has_value(); }));
  ASSERT_TRUE(*answer) << answer->error().ToString();
  EXPECT_EQ((*answer)->type(), matcher::MsgType::kError);
}

TEST_F(SwitcherTest, CallAsyncTimesOutWhenTheDaemonDoesNotAnswer) {
  FakeDaemon daemon(dir_, /*adopt_tcp=*/-1, /*answer_others=*/false);
  MatcherClient client(io_, {});
  ASSERT_TRUE(client.Connect(/*spawn=*/false));
  std::optional<Result<matcher::Message>> answer;
  auto start = std::chrono::steady_clock::now();
  client.CallAsync(
      matcher::MsgType::kClaim, getpid(), {}, {},
      [&](Result<matcher::Message> m) { answer = std::move(m); }, /*timeout_ms=*/150);
  ASSERT_TRUE(RunUntil([&] { return answer.has_value(); }));
  auto waited = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(*answer);
  EXPECT_EQ(answer->error().err, ETIMEDOUT);
  EXPECT_GE(waited, std::chrono::milliseconds(150));
  EXPECT_TRUE(client.connected()) << "a slow daemon keeps the session";
}

// The logger is the program's stderr: a slow daemon is reported once per run, not per call.
TEST_F(SwitcherTest, LateAnswersAreWarnedOnce) {
  FakeDaemon daemon(dir_, /*adopt_tcp=*/-1, /*answer_others=*/false);
  auto sink = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(16);
  auto previous = spdlog::default_logger();
  auto logger = std::make_shared<spdlog::logger>("late", sink);
  logger->set_level(spdlog::level::warn);
  spdlog::set_default_logger(logger);
  MatcherClient client(io_, {});
  ASSERT_TRUE(client.Connect(/*spawn=*/false));
  EXPECT_FALSE(client.Call(matcher::MsgType::kSweep, getpid(), {}, {}, /*timeout_ms=*/20));
  int answered = 0;
  for (int i = 0; i < 2; ++i) {
    client.CallAsync(
        matcher::MsgType::kClaim, getpid(), {}, {}, [&](Result<matcher::Message>) { ++answered; },
        /*timeout_ms=*/20);
  }
  bool done = RunUntil([&] { return answered == 2; });
  spdlog::set_default_logger(previous);
  ASSERT_TRUE(done);
  auto lines = sink->last_formatted();
  ASSERT_EQ(lines.size(), 1u) << "three time-outs, one warning";
  EXPECT_NE(lines[0].find("did not answer sweep"), std::string::npos) << lines[0];
}

TEST_F(SwitcherTest, CallAsyncFailsWhenTheDaemonGoes) {
  std::optional<FakeDaemon> daemon(std::in_place, dir_, /*adopt_tcp=*/-1, false);
  bool lost = false;
  MatcherClient::Callbacks callbacks;
  callbacks.on_lost = [&] { lost = true; };
  MatcherClient client(io_, callbacks);
  ASSERT_TRUE(client.Connect(/*spawn=*/false));
  std::optional<Result<matcher::Message>> answer;
  client.CallAsync(matcher::MsgType::kClaim, getpid(), {}, {},
                   [&](Result<matcher::Message> m) { answer = std::move(m); });
  daemon.reset();  // closes its side
  ASSERT_TRUE(RunUntil([&] { return answer.has_value(); }));
  EXPECT_TRUE(lost);
  ASSERT_FALSE(*answer);
  EXPECT_NE(answer->error().err, ETIMEDOUT) << "failed at once, not after the time-out";
}

TEST_F(SwitcherTest, CallAsyncWithoutDaemonFailsPosted) {
  MatcherClient client(io_, {});
  std::optional<Result<matcher::Message>> answer;
  client.CallAsync(matcher::MsgType::kClaim, getpid(), {}, {},
                   [&](Result<matcher::Message> m) { answer = std::move(m); });
  EXPECT_FALSE(answer);
  ASSERT_TRUE(RunUntil([&] { return answer.has_value(); }));
  ASSERT_FALSE(*answer);
  EXPECT_EQ(answer->error().err, ENOTCONN);
}

TEST_F(SwitcherTest, BookFindUnbook) {
  TcpConnection client = Connected();
  TcpConnection server = Connected();
  auto [a, a_peer] = UnixPair();
  auto [b, b_peer] = UnixPair();
  uint64_t client_tcp = InodeOf(client.client.Get());
  uint64_t server_tcp = InodeOf(server.server.Get());
  switcher_->Book(InodeOf(a.Get()), std::move(client.client), /*client=*/true,
                  /*connect_unreported=*/true);
  switcher_->Book(InodeOf(b.Get()), std::move(server.server), /*client=*/false);
  EXPECT_EQ(switcher_->booked(), 2u);
  EXPECT_EQ(stats_.switched, 2u);

  SwitchedSocket* sa = switcher_->Find(InodeOf(a.Get()));
  ASSERT_NE(sa, nullptr);
  EXPECT_EQ(InodeOf(sa->tcp.Get()), client_tcp);
  EXPECT_TRUE(sa->connect_unreported);
  EXPECT_FALSE(sa->confirmed) << "a client's peer end may still need a relay";
  SwitchedSocket* sb = switcher_->Find(InodeOf(b.Get()));
  ASSERT_NE(sb, nullptr);
  EXPECT_EQ(InodeOf(sb->tcp.Get()), server_tcp);
  EXPECT_TRUE(sb->confirmed) << "on the server side the peer end is in a program";
  EXPECT_EQ(switcher_->Find(InodeOf(a_peer.Get())), nullptr);

  UniqueFd back = switcher_->Unbook(InodeOf(a.Get()));
  EXPECT_EQ(InodeOf(back.Get()), client_tcp);
  EXPECT_EQ(switcher_->Find(InodeOf(a.Get())), nullptr);
  EXPECT_EQ(switcher_->booked(), 1u);
  EXPECT_FALSE(switcher_->Unbook(InodeOf(a.Get()))) << "unbooked twice: nothing";
}

TEST_F(SwitcherTest, FindOrAdoptWithoutDaemon) {
  TcpConnection tcp = Connected();
  auto [booked, booked_peer] = UnixPair();
  auto [other, other_peer] = UnixPair();
  switcher_->Book(InodeOf(booked.Get()), std::move(tcp.client), true);
  UniqueFd named(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::string path = dir_ + "/named.sock";
  path.copy(addr.sun_path, sizeof(addr.sun_path) - 1);
  ASSERT_EQ(bind(named.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);

  EXPECT_FALSE(switcher_->active());
  EXPECT_EQ(switcher_->FindOrAdopt(booked.Get()), switcher_->Find(InodeOf(booked.Get())));
  EXPECT_NE(switcher_->FindOrAdopt(booked.Get()), nullptr);
  EXPECT_EQ(switcher_->FindOrAdopt(other.Get()), nullptr);
  EXPECT_EQ(switcher_->FindOrAdopt(named.Get()), nullptr);
  EXPECT_EQ(switcher_->booked(), 1u);
}

// With a daemon, an AF_UNIX end that is not booked may be a switched end another supervisor's
// program sent ours: the daemon is asked, once per end, and only for an unnamed one.
TEST_F(SwitcherTest, FindOrAdoptAsksTheDaemonOnlyAboutUnnamedEnds) {
  FakeDaemon daemon(dir_, /*adopt_tcp=*/-1);
  switcher_->Start();
  ASSERT_TRUE(switcher_->active());
  UniqueFd server(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  (dir_ + "/server.sock").copy(addr.sun_path, sizeof(addr.sun_path) - 1);
  ASSERT_EQ(bind(server.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(server.Get(), 1), 0);
  UniqueFd named_peer(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_EQ(connect(named_peer.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  auto [end, peer] = UnixPair();

  EXPECT_EQ(switcher_->FindOrAdopt(named_peer.Get()), nullptr) << "a server's client: not ours";
  EXPECT_EQ(switcher_->FindOrAdopt(end.Get()), nullptr);
  EXPECT_EQ(switcher_->FindOrAdopt(end.Get()), nullptr);
  // Each Call waits for its reply, so the daemon has seen every request by now.
  EXPECT_THAT(daemon.adopted(), ElementsAre(InodeOf(end.Get())))
      << "one round trip, with the end as proof; the answer is remembered";
  EXPECT_EQ(switcher_->booked(), 0u);
}

// A daemon that does not answer kAdopt (stopped) costs the event loop one bounded wait: no kAdopt
// is sent again until the daemon has been heard from, and the end is not remembered as unswitched.
TEST_F(SwitcherTest, FindOrAdoptWaitsOnceForASilentDaemon) {
  FakeDaemon daemon(dir_, FakeDaemon::kSilent);
  switcher_->Start();
  ASSERT_TRUE(switcher_->active());
  auto [end, peer] = UnixPair();
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(switcher_->FindOrAdopt(end.Get()), nullptr);
  auto first = std::chrono::steady_clock::now() - start;
  EXPECT_GE(first, std::chrono::milliseconds(150)) << "waited for the answer, bounded";
  EXPECT_LT(first, std::chrono::seconds(1));
  start = std::chrono::steady_clock::now();
  EXPECT_EQ(switcher_->FindOrAdopt(end.Get()), nullptr);
  EXPECT_EQ(switcher_->FindOrAdopt(peer.Get()), nullptr);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(100))
      << "not asked again while the daemon is silent";
  EXPECT_EQ(daemon.adopted().size(), 1u);
}

TEST_F(SwitcherTest, FindOrAdoptBooksTheTcpSocketTheDaemonHandsOver) {
  TcpConnection tcp = Connected();
  FakeDaemon daemon(dir_, tcp.client.Get());
  switcher_->Start();
  ASSERT_TRUE(switcher_->active());
  auto [end, peer] = UnixPair();
  SwitchedSocket* sw = switcher_->FindOrAdopt(end.Get());
  ASSERT_NE(sw, nullptr);
  EXPECT_EQ(InodeOf(sw->tcp.Get()), InodeOf(tcp.client.Get()));
  EXPECT_TRUE(sw->confirmed) << "the daemon knew the pair: its peer end is in a program";
  EXPECT_EQ(switcher_->Find(InodeOf(end.Get())), sw);
  EXPECT_EQ(switcher_->FindOrAdopt(end.Get()), sw) << "booked: no second round trip";
  EXPECT_THAT(daemon.adopted(), ElementsAre(InodeOf(end.Get())));
}

// The client's kConnected and our kClaim cross in the daemon: it pushes the end, then answers
// "pushed to you". The push answers the claim; the daemon's answer is not waited for (without it,
// kPushOnly's claim waits for the 3 s time-out and stays TCP) and does not answer it twice.
TEST_F(SwitcherTest, APushAnswersTheClaimThatIsOutForItsConnection) {
  for (auto claims : {FakeDaemon::Claims::kPushThenReply, FakeDaemon::Claims::kPushOnly}) {
    SCOPED_TRACE(claims == FakeDaemon::Claims::kPushOnly ? "push only" : "push, then reply");
    switcher_.emplace(io_, stats_);
    TcpConnection tcp = Connected();
    FakeDaemon daemon(dir_, /*adopt_tcp=*/-1, /*answer_others=*/true, claims);
    switcher_->Start();
    ASSERT_TRUE(switcher_->active());
    auto remote = SocketName(tcp.server.Get(), true);
    ASSERT_TRUE(remote);
    int answers = 0;
    std::optional<UniqueFd> end;
    switcher_->Claim([] { return getpid(); }, tcp.server.Get(), *remote,
                     /*peer_on_this_host=*/true,
                     [&](std::optional<UniqueFd> e, const char*) {
                       ++answers;
                       end = std::move(e);
                     });
    ASSERT_TRUE(RunUntil([&] { return answers > 0; }));
    ASSERT_TRUE(end.has_value()) << "left on TCP";
    EXPECT_EQ(InodeOf(end->Get()), daemon.pushed_end_ino());
    io_.restart();
    io_.run_for(std::chrono::milliseconds(100));  // the daemon's answer, if any, arrives
    EXPECT_EQ(answers, 1);
    switcher_.reset();
  }
}

TEST_F(SwitcherTest, BeginSwitchRaisesAndLowersTheSwitchingGate) {
  constexpr uint16_t kPort = 4321;
  {
    // No table yet (no daemon has run): nothing to raise, and nothing breaks.
    matcher::AcceptGate::Count none = switcher_->BeginSwitch(kPort);
    EXPECT_FALSE(none.raised());
    EXPECT_FALSE(switcher_->gate().Read(matcher::AcceptGate::Kind::kSwitching, kPort).has_value());
  }
  // The daemon creates the table; the file is what the preload library maps.
  auto table = matcher::ListenerTable::Open(matcher::ListenerTablePath(dir_));
  ASSERT_TRUE(table) << table.error().ToString();
  matcher::AcceptGate reader(matcher::ListenerTablePath(dir_));
  using Kind = matcher::AcceptGate::Kind;
  {
    matcher::AcceptGate::Count first = switcher_->BeginSwitch(kPort);
    EXPECT_TRUE(first.raised());
    EXPECT_EQ(reader.Read(Kind::kSwitching, kPort).value_or(99), 1u);
    matcher::AcceptGate::Count second = switcher_->BeginSwitch(kPort);
    EXPECT_EQ(reader.Read(Kind::kSwitching, kPort).value_or(99), 2u);
    EXPECT_EQ(reader.Read(Kind::kSwitching, kPort + 1).value_or(99), 0u) << "one port's gate only";
    EXPECT_EQ(reader.Read(Kind::kParked, kPort).value_or(99), 0u) << "not the parked gate";
    first.Reset();
    EXPECT_EQ(reader.Read(Kind::kSwitching, kPort).value_or(99), 1u);
  }
  EXPECT_EQ(reader.Read(Kind::kSwitching, kPort).value_or(99), 0u)
      << "lowered when the count is dropped";
}

TEST_F(SwitcherTest, SweepReleasesTheTcpSocketOfAClosedEnd) {
  TcpConnection closing = Connected();
  TcpConnection open = Connected();
  auto [closed_end, closed_peer] = UnixPair();
  auto [open_end, open_peer] = UnixPair();
  uint64_t closed_ino = InodeOf(closed_end.Get());
  uint64_t open_ino = InodeOf(open_end.Get());
  switcher_->Book(closed_ino, std::move(closing.client), true);
  switcher_->Book(open_ino, std::move(open.client), true);
  closed_end.Reset();  // the program closed its end: the kernel drops the socket
  ASSERT_TRUE(RunUntil([&] { return switcher_->booked() == 1; }));
  EXPECT_EQ(switcher_->Find(closed_ino), nullptr);
  EXPECT_NE(switcher_->Find(open_ino), nullptr);
  // The retained TCP socket was closed: its peer reads the end of the stream.
  char c;
  EXPECT_EQ(recv(closing.server.Get(), &c, 1, MSG_DONTWAIT), 0);
  ssize_t n = recv(open.server.Get(), &c, 1, MSG_DONTWAIT);
  int err = errno;
  EXPECT_EQ(n, -1);
  EXPECT_EQ(err, EAGAIN) << "still connected";
}

}  // namespace
}  // namespace slipstream::supervisor
