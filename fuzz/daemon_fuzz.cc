// slipstreamd's dispatch: any sequence of messages, with any fds attached, from one session of an
// in-process daemon (a thread, real sockets, as matcher/daemon_test.cc runs it). After the input
// the fuzzer asks for the status on the same session: the daemon must answer within 10 s (it
// did not die, hang, or lose its place in the stream), and must never hand this session a socket
// it did not give (only the socketpair ends the daemon makes are AF_UNIX stream sockets; the fuzzer
// sends none of those, so any received AF_UNIX stream socket would be another pair's).
//
// Input: records of [type][fds][len lo][len hi][len bytes]. type < 0xf0 picks a message type from
// kTypes and the bytes are the body of a well-formed header; type >= 0xf0: the bytes are the whole
// datagram (any header). fds: bits 0-2 how many to attach (kMaxFds is 2, at most 7 are sent), bits
// 3-5 which kind (kFdKinds).
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <linux/netlink.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#include "base/fd_passing.h"
#include "base/socket_info.h"
#include "fuzz/fuzz_util.h"
#include "matcher/daemon.h"
#include "matcher/paths.h"
#include "matcher/protocol.h"

namespace slipstream::matcher {
namespace {

using namespace std::chrono_literals;

constexpr MsgType kTypes[] = {MsgType::kRegisterListener,
                              MsgType::kIntent,
                              MsgType::kConnected,
                              MsgType::kAbort,
                              MsgType::kClaim,
                              MsgType::kInstalled,
                              MsgType::kStatus,
                              MsgType::kDisown,
                              MsgType::kHello,
                              MsgType::kAdopt,
                              MsgType::kSweep,
                              MsgType::kPeerPid,
                              MsgType::kClaimReply,
                              MsgType::kPush,
                              MsgType::kError,
                              static_cast<MsgType>(0),
                              static_cast<MsgType>(999)};
constexpr uint64_t kStatusSeq = 0x5757575757575757ULL;

// A daemon that does not answer: print every thread's stack (gdb, installed by scripts/setup;
// libFuzzer owns SIGUSR1, so a signal to the daemon's thread printed nothing), then abort.
// Also whether a new session is answered, and the queues of every AF_UNIX socket here (ss).
[[noreturn]] void DaemonStuck(const std::string& dir);

struct Daemonized {
  std::string dir;
  std::unique_ptr<Daemon> daemon;
  std::thread thread;
  int listener = -1;  // a TCP listener on 127.0.0.1 for the fds the fuzzer attaches
  sockaddr_in listen_addr{};
  Daemonized() {
    signal(SIGPIPE, SIG_IGN);
    spdlog::set_level(spdlog::level::off);
    char tmpl[] = "/tmp/slipstream-daemon-fuzz-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) abort();
    dir = tmpl;
    DaemonConfig config;
    config.dir = dir;
    config.idle_exit = std::chrono::hours(24);
    config.claim_grace = 50ms;
    config.deferred_claim_limit = 100ms;
    auto d = Daemon::Create(config);
    if (!d) abort();
    daemon = std::move(*d);
    thread = std::thread([this] { daemon->Run(); });
    listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    listen_addr.sin_family = AF_INET;
    listen_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(listen_addr);
    if (bind(listener, reinterpret_cast<sockaddr*>(&listen_addr), len) < 0 ||
        listen(listener, 64) < 0 ||
        getsockname(listener, reinterpret_cast<sockaddr*>(&listen_addr), &len) < 0) {
      abort();
    }
  }
  // At exit (libFuzzer ends with exit()): stop and join the daemon's thread, remove its directory.
  ~Daemonized() {
    daemon->Stop();
    thread.join();
    daemon.reset();
    close(listener);
    std::string cmd = "rm -rf " + dir;
    if (system(cmd.c_str()) != 0) fprintf(stderr, "cannot remove %s\n", dir.c_str());
  }
};

UniqueFd Connect(const std::string& dir) {
  UniqueFd fd(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  SocketPath(dir).copy(addr.sun_path, sizeof(addr.sun_path) - 1);
  if (connect(fd.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0) abort();
  return fd;
}

// The fds one input may attach, made on first use and closed with the input.
class FdPool {
 public:
  explicit FdPool(Daemonized& d) : d_(d) {}
  int Get(int kind) {
    switch (kind) {
      case 0:
        return Keep(open("/dev/null", O_RDONLY | O_CLOEXEC));
      case 1:
        return d_.listener;
      case 2:
        Tcp();
        return client_.Get();
      case 3:
        Tcp();
        return server_.Get();
      case 4: {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) return -1;
        Keep(sv[1]);
        return Keep(sv[0]);  // a "sock_diag socket" whose answers the sender would write
      }
      case 5:
        return Keep(socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
      case 6:
        return Keep(socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
      default: {
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0) return -1;
        Keep(p[1]);
        return Keep(p[0]);
      }
    }
  }

 private:
  int Keep(int fd) {
    if (fd >= 0) kept_.emplace_back(fd);
    return fd;
  }
  void Tcp() {
    if (client_) return;
    client_.Reset(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (connect(client_.Get(), reinterpret_cast<sockaddr*>(&d_.listen_addr),
                sizeof(d_.listen_addr)) < 0) {
      abort();
    }
    server_.Reset(accept4(d_.listener, nullptr, nullptr, SOCK_CLOEXEC));
  }
  Daemonized& d_;
  std::vector<UniqueFd> kept_;
  UniqueFd client_, server_;
};

void SendRecord(int sock, bool raw, MsgType type, uint64_t seq, std::span<const uint8_t> body,
                std::span<const int> fds) {
  Header header;
  header.type = static_cast<uint16_t>(type);
  header.seq = seq;
  header.pid = static_cast<int32_t>(seq * 7919);
  header.body_len = static_cast<uint32_t>(body.size());
  iovec iov[2] = {{&header, sizeof(header)}, {const_cast<uint8_t*>(body.data()), body.size()}};
  msghdr msg{};
  msg.msg_iov = raw ? iov + 1 : iov;
  msg.msg_iovlen = raw ? 1 : 2;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 8)] = {};
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  // Blocking: a daemon that stops reading shows up as a hang (libFuzzer's -timeout).
  (void)sendmsg(sock, &msg, MSG_NOSIGNAL);
}

[[noreturn]] void DaemonStuck(const std::string& dir) {
  std::string pid = std::to_string(getpid());
  auto run = [](const std::string& cmd) {
    if (system(cmd.c_str()) != 0) fprintf(stderr, "(failed: %s)\n", cmd.c_str());
  };
  fprintf(stderr, "daemon did not answer kStatus within 10 s. Its sockets, epoll sets, threads:\n");
  std::string ss = "ss -x -a -e -m -p | grep -A1 'pid=" + pid + ",' 1>&2";
  run(ss);
  run("for f in /proc/" + pid + "/fd/*; do case $(readlink $f) in *eventpoll*) echo epoll $f; " +
      "cat /proc/" + pid + "/fdinfo/${f##*/};; esac; done 1>&2");
  run("gdb -p " + pid +
      " -batch -ex 'thread apply all bt' -x " SLIPSTREAM_SOURCE_DIR
      "/fuzz/daemon_state.gdb </dev/null 1>&2");
  UniqueFd other = Connect(dir);
  SendRecord(other.Get(), false, MsgType::kStatus, kStatusSeq, {}, {});
  pollfd p{other.Get(), POLLIN, 0};
  fprintf(stderr, "a new session is %sanswered; then:\n", poll(&p, 1, 2000) == 1 ? "" : "NOT ");
  run(ss);
  abort();
}

// Reads until the status reply to kStatusSeq. Aborts on silence (10 s) or on a socket end that
// is not ours.
void AwaitStatus(int sock, const std::string& dir) {
  // One bound for the whole wait. poll() is never restarted after a signal handler, and
  // libFuzzer's SIGALRM (its -timeout watchdog, every 13 s here) lands in it now and then: taken
  // for silence, that EINTR was the "stall" of every earlier long run (the replies were in our
  // socket a few milliseconds later).
  auto deadline = std::chrono::steady_clock::now() + 10s;
  for (;;) {
    pollfd p{sock, POLLIN, 0};
    int n;
    do {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      n = poll(&p, 1, static_cast<int>(std::max<int64_t>(left.count(), 0)));
    } while (n < 0 && errno == EINTR);
    if (n <= 0) DaemonStuck(dir);
    auto m = ReceiveMessage(sock);
    if (!m) {
      if (m.error().err == EPROTO) continue;
      fprintf(stderr, "daemon closed the session: %s\n", m.error().ToString().c_str());
      abort();
    }
    for (const UniqueFd& fd : m->fds) {
      if (IsUnixStreamSocket(fd.Get())) {
        fprintf(stderr, "daemon handed a %s an AF_UNIX end\n", MsgTypeName(m->type()));
        abort();
      }
    }
    if (m->type() == MsgType::kStatusReply && m->header.seq == kStatusSeq) return;
  }
}

}  // namespace
}  // namespace slipstream::matcher

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace slipstream::matcher;
  static Daemonized d;
  // The baseline is taken once the daemon has served one session: its thread creates fds of its
  // own on the way (Asio's signal pipe, the first session's reactor state).
  static int lowest = [] {
    slipstream::UniqueFd warm = Connect(d.dir);
    SendRecord(warm.Get(), false, MsgType::kStatus, kStatusSeq, {}, {});
    AwaitStatus(warm.Get(), d.dir);
    warm.Reset();
    usleep(200000);
    return slipstream::fuzz::LowestFreeFd();
  }();
  {
    slipstream::UniqueFd session = Connect(d.dir);
    FdPool pool(d);
    uint64_t seq = 1;
    size_t at = 0;
    while (at + 4 <= size) {
      uint8_t t = data[at], f = data[at + 1];
      size_t len = std::min<size_t>(data[at + 2] | (data[at + 3] << 8), size - at - 4);
      std::span<const uint8_t> body(data + at + 4, len);
      at += 4 + len;
      std::vector<int> fds;
      for (int i = 0; i < (f & 7); ++i) {
        int fd = pool.Get((f >> 3) & 7);
        if (fd >= 0) fds.push_back(fd);
      }
      SendRecord(session.Get(), t >= 0xf0, kTypes[t % std::size(kTypes)], seq++, body, fds);
    }
    SendRecord(session.Get(), false, MsgType::kStatus, kStatusSeq, {}, {});
    AwaitStatus(session.Get(), d.dir);
  }
  // The daemon runs in this process: what it still holds for the closed session (pending pairs,
  // deferred claims) is let go by its sweeps (100 ms; live pairs every 2 s). Anything held
  // longer is a leak.
  for (int i = 0; i < 500 && slipstream::fuzz::LowestFreeFd() != lowest; ++i) usleep(10000);
  slipstream::fuzz::CheckNoFdLeak(lowest, "daemon fuzz (daemon and client)");
  return 0;
}
