#include "supervisor/matcher_client.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <linux/netlink.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <boost/asio/post.hpp>

#include <climits>
#include <cstdlib>
#include <cstring>

#include "base/socket_info.h"
#include "matcher/paths.h"
#include "supervisor/local_addrs.h"

namespace slipstream::supervisor {
namespace asio = boost::asio;
using matcher::Message;
using matcher::MsgType;

namespace {

constexpr auto kReconnectPeriod = std::chrono::seconds(1);
// A daemon that refused our uid is asked again seldom: it logs each refusal, and serves us only
// once restarted with --all-users.
constexpr auto kRefusedReconnectPeriod = std::chrono::seconds(10);
// After this many failed reconnects in a row, start a daemon ourselves.
constexpr int kRespawnAfter = 10;

Result<UniqueFd> ConnectTo(const std::string& path) {
  UniqueFd fd(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!fd) return Errno("socket");
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) return Error(ENAMETOOLONG, "socket path");
  path.copy(addr.sun_path, path.size());
  if (connect(fd.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0) {
    return Errno("connect(slipstreamd)");
  }
  return fd;
}

}  // namespace

std::string FindDaemonBinary() {
  if (const char* env = getenv("SLIPSTREAMD"); env && *env) return env;
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n > 0) {
    std::string dir(self, static_cast<size_t>(n));
    dir = dir.substr(0, dir.rfind('/'));
    for (const std::string& candidate : {dir + "/slipstreamd", dir + "/../matcher/slipstreamd"}) {
      if (access(candidate.c_str(), X_OK) == 0) return candidate;
    }
  }
  return "slipstreamd";
}

MatcherClient::MatcherClient(asio::io_context& io, Callbacks callbacks)
    : io_(io),
      callbacks_(std::move(callbacks)),
      reconnect_timer_(io),
      call_timer_(io, kCallSweepPeriod, [this] { return ExpireCalls(); }) {}

MatcherClient::~MatcherClient() = default;

Status MatcherClient::SpawnDaemon() {
  std::string binary = FindDaemonBinary();
  pid_t pid = fork();
  if (pid < 0) return Errno("fork");
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    // The daemon must not hold our TCP sockets, listener or notification fd: a copy would keep a
    // connection open after its program closed it (close_range: Linux 5.11).
    syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC);
    execlp(binary.c_str(), binary.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // slipstreamd detaches itself and exits 0 once its socket listens.
  int status;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return Errno("waitpid(slipstreamd)");
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return Error(ECHILD, "slipstreamd start");
  return {};
}

Status MatcherClient::Connect(bool spawn) {
  if (dir_.empty()) {
    auto dir = matcher::FindRuntimeDir();
    if (!dir) return tl::unexpected(dir.error());
    dir_ = dir->dir;
    system_wide_ = dir->trust == matcher::DirTrust::kSystemWide;
  }
  auto fd = ConnectTo(matcher::SocketPath(dir_));
  // Root's directory is a system-wide daemon's, started by its administrator: a daemon of ours
  // there could not create its files, nor serve the other users who look for it there.
  if (!fd && spawn && !system_wide_ && !refused_) {
    if (auto st = SpawnDaemon(); !st) return st;
    fd = ConnectTo(matcher::SocketPath(dir_));
  }
  if (!fd) {
    if (system_wide_ && !warned_missing_) {
      warned_missing_ = true;
      spdlog::warn(
          "no slipstreamd answers in {} ({}), a system-wide directory (root's), where "
          "slipstream-trace starts none: start `slipstreamd --all-users` there as root "
          "(SLIPSTREAM_RUNTIME_DIR={}), or unset SLIPSTREAM_RUNTIME_DIR to use a daemon of your "
          "own",
          dir_, fd.error().ToString(), dir_);
    }
    return tl::unexpected(fd.error());
  }
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (getsockopt(fd->Get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
    return Errno("getsockopt(slipstreamd, SO_PEERCRED)");
  }
  // The directory's trust already excludes other users' daemons; this also holds for a socket
  // passed around some other way. Root's is a system-wide daemon's.
  if (cred.uid != geteuid() && cred.uid != 0) return Error(EPERM, "slipstreamd of another user");
  daemon_uid_ = cred.uid;
  desc_ = std::make_unique<asio::posix::stream_descriptor>(io_, fd->Release());
  reconnect_failures_ = 0;
  spdlog::debug("connected to slipstreamd in {}", dir_);
  // Learn every supervised listener before the program makes its first connect: the daemon
  // sends the list ahead of this reply, and Call() handles it on the way.
  // With our namespace's addresses and a sock_diag socket of it: the daemon learns from the kernel
  // which namespace we are in (docs/design.md, "Across network namespaces").
  matcher::NetnsAddrs addrs{};
  for (const SockAddr& a : NamespaceAddresses()) {
    if (addrs.count >= matcher::kMaxNetnsAddrs) break;
    in6_addr& out = addrs.addrs[addrs.count++];
    if (a.family() == AF_INET6) {
      out = reinterpret_cast<const sockaddr_in6*>(a.get())->sin6_addr;
    } else {
      out.s6_addr[10] = out.s6_addr[11] = 0xff;
      std::memcpy(&out.s6_addr[12], &reinterpret_cast<const sockaddr_in*>(a.get())->sin_addr, 4);
    }
  }
  UniqueFd diag(socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  int diag_fd = diag.Get();
  auto hello = Call(MsgType::kHello, getpid(), matcher::Bytes(addrs),
                    diag ? std::span<const int>(&diag_fd, 1) : std::span<const int>());
  if (hello && hello->type() == MsgType::kHelloReply) Dispatch(std::move(*hello));
  if (!hello && !desc_) {  // the session broke (Lost ran)
    if (refused_) return Error(EACCES, "slipstreamd serves only its own user");
    return tl::unexpected(hello.error());
  }
  refused_ = false;
  // A daemon that is only slow (stopped, busy) still serves this session: its list and its
  // answer arrive later and are read like any message.
  if (!hello) spdlog::warn("slipstreamd is slow: going on without its list of listeners");
  ArmRead();
  if (callbacks_.on_connected) callbacks_.on_connected();
  return {};
}

void MatcherClient::ArmRead() {
  if (!desc_) return;
  desc_->async_wait(asio::posix::descriptor_base::wait_read,
                    [this, d = desc_.get()](const boost::system::error_code& ec) {
                      if (ec || d != desc_.get()) return;
                      OnReadable();
                    });
}

size_t MatcherClient::Poll() {
  size_t handled = 0;
  while (desc_) {
    auto m = matcher::ReceiveMessage(desc_->native_handle(), /*nonblocking=*/true);
    if (!m) {
      if (m.error().err == EAGAIN) break;
      if (m.error().err == EPROTO) continue;
      Lost(m.error());
      break;
    }
    Dispatch(std::move(*m));
    ++handled;
  }
  return handled;
}

void MatcherClient::OnReadable() {
  for (;;) {
    auto m = matcher::ReceiveMessage(desc_->native_handle(), /*nonblocking=*/true);
    if (!m) {
      if (m.error().err == EAGAIN) break;
      if (m.error().err == EPROTO) continue;
      return Lost(m.error());
    }
    Dispatch(std::move(*m));
  }
  ArmRead();
}

void MatcherClient::Dispatch(Message m) {
  ++received_;
  // Our requests carry seq >= 1; the daemon's own messages carry 0.
  if (auto it = calls_.find(m.header.seq); m.header.seq != 0 && it != calls_.end()) {
    Done done = std::move(it->second.done);
    calls_.erase(it);
    return Answer(std::move(done), std::move(m));
  }
  const auto* body = m.As<matcher::InodeBody>();
  switch (m.type()) {
    case MsgType::kRelease:
      if (body && callbacks_.on_release) callbacks_.on_release(body->inode);
      break;
    case MsgType::kRelay:
      if (body && callbacks_.on_relay) callbacks_.on_relay(body->inode);
      break;
    case MsgType::kListener:
      if (const auto* l = m.As<matcher::ListenerBody>(); l && callbacks_.on_listener) {
        callbacks_.on_listener(l->inode, l->added != 0);
      }
      break;
    case MsgType::kPush:
      if (callbacks_.on_push) callbacks_.on_push(m);
      break;
    case MsgType::kHelloReply:
    case MsgType::kNetns:
    case MsgType::kRemoteListener:
    case MsgType::kEndClosed:
      if (callbacks_.on_netns) callbacks_.on_netns(m);
      break;
    case MsgType::kClaimReply:
      // The answer to a claim whose Call() gave up waiting: an end in it is ours to give back.
      for (UniqueFd& end : m.fds) Disown(std::move(end));
      break;
    case MsgType::kError:
      if (IsRefusal(m)) return NoteRefusal(m);
      if (const auto* e = m.As<matcher::ErrorBody>()) {
        spdlog::debug("slipstreamd: error {} ({})", e->err, matcher::ErrorText(*e));
      }
      break;
    default:
      spdlog::debug("slipstreamd: unexpected {} (seq {})", matcher::MsgTypeName(m.type()),
                    m.header.seq);
  }
}

void MatcherClient::Disown(UniqueFd end) {
  matcher::InodeBody body{InodeOf(end.Get())};
  end.Reset();
  (void)Send(MsgType::kDisown, 0, matcher::Bytes(body));
}

Status MatcherClient::Send(MsgType type, int32_t pid, std::span<const uint8_t> body,
                           std::span<const int> fds) {
  if (!desc_) return Error(ENOTCONN, "slipstreamd");
  auto st = matcher::SendMessage(desc_->native_handle(), type, ++seq_, pid, body, fds);
  if (!st) Lost(st.error());
  return st;
}

Result<Message> MatcherClient::Call(MsgType type, int32_t pid, std::span<const uint8_t> body,
                                    std::span<const int> fds, int timeout_ms) {
  if (!desc_) return Error(ENOTCONN, "slipstreamd");
  uint64_t seq = ++seq_;
  int fd = desc_->native_handle();
  if (auto st = matcher::SendMessage(fd, type, seq, pid, body, fds); !st) {
    Lost(st.error());
    return tl::unexpected(st.error());
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      ReportLate(type);
      return Error(ETIMEDOUT, "slipstreamd call");
    }
    pollfd p{fd, POLLIN, 0};
    int n = poll(&p, 1, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Errno("poll(slipstreamd)");
    if (n == 0) continue;
    auto m = matcher::ReceiveMessage(fd, /*nonblocking=*/true);
    if (!m) {
      if (m.error().err == EAGAIN || m.error().err == EPROTO) continue;
      Lost(m.error());
      return tl::unexpected(m.error());
    }
    if (m->header.seq == seq) {
      ++received_;
      return std::move(*m);
    }
    Dispatch(std::move(*m));
  }
}

void MatcherClient::CallAsync(MsgType type, int32_t pid, std::span<const uint8_t> body,
                              std::span<const int> fds, Done done, int timeout_ms) {
  if (!desc_) return Answer(std::move(done), Error(ENOTCONN, "slipstreamd"));
  uint64_t seq = ++seq_;
  if (auto st = matcher::SendMessage(desc_->native_handle(), type, seq, pid, body, fds); !st) {
    Lost(st.error());
    return Answer(std::move(done), tl::unexpected(st.error()));
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  calls_.emplace(seq, AsyncCall{deadline, type, std::move(done)});
  call_timer_.Arm();
}

bool MatcherClient::ExpireCalls() {
  auto now = std::chrono::steady_clock::now();
  for (auto it = calls_.begin(); it != calls_.end();) {
    if (it->second.deadline > now) {
      ++it;
      continue;
    }
    ReportLate(it->second.type);
    Answer(std::move(it->second.done), Error(ETIMEDOUT, "slipstreamd call"));
    it = calls_.erase(it);
  }
  return !calls_.empty();
}

void MatcherClient::ReportLate(MsgType type) {
  // A daemon that answers late is a busy machine more often than a broken daemon, and each caller
  // goes on without the answer (a hint skipped, a claim left on TCP and relayed): the program's
  // stderr, which this logger shares, gets one line per run, the rest only with --verbose.
  auto level = late_answers_++ == 0 ? spdlog::level::warn : spdlog::level::debug;
  spdlog::log(
      level,
      "slipstreamd did not answer {} in time (a busy machine, or a stopped daemon): went on "
      "without it{}",
      matcher::MsgTypeName(type),
      level == spdlog::level::warn ? "; later time-outs are logged only with --verbose" : "");
}

void MatcherClient::FailCalls(const SysError& why) {
  for (auto& [seq, call] : calls_) Answer(std::move(call.done), tl::unexpected(why));
  calls_.clear();
}

void MatcherClient::Answer(Done done, Result<Message> answer) {
  // Posted, never run from here: the answer may arrive inside Poll() or a synchronous Call(),
  // i.e. in the middle of another handler's work (a held accept's retry, a claim's gathering).
  asio::post(io_, [alive = std::weak_ptr<int>(alive_), done = std::move(done),
                   answer = std::move(answer)]() mutable {
    if (!alive.expired()) done(std::move(answer));  // else destroyed unrun, as documented
  });
}

bool MatcherClient::IsRefusal(const Message& m) {
  const auto* e = m.As<matcher::ErrorBody>();
  return m.type() == MsgType::kError && m.header.seq == 0 && e != nullptr && e->err == EACCES;
}

void MatcherClient::NoteRefusal(const Message& m) {
  refused_ = true;
  if (warned_refused_) return;
  warned_refused_ = true;
  spdlog::debug("slipstreamd: {}", matcher::ErrorText(*m.As<matcher::ErrorBody>()));
  spdlog::warn(
      "slipstreamd in {} runs as uid {} and serves only its own user: start it with --all-users "
      "to serve uid {}; connections stay on TCP",
      dir_, daemon_uid_, geteuid());
}

void MatcherClient::ReadLastWords() {
  // Only the refusal matters: the rest would have been dropped with the connection anyway.
  for (;;) {
    auto m = matcher::ReceiveMessage(desc_->native_handle(), /*nonblocking=*/true);
    if (!m && m.error().err == EPROTO) continue;
    if (!m) return;
    if (IsRefusal(*m)) NoteRefusal(*m);
  }
}

void MatcherClient::Lost(const SysError& why) {
  if (!desc_) return;
  ReadLastWords();
  if (refused_) {
    spdlog::debug("slipstreamd refused this session");
  } else {
    spdlog::warn("lost slipstreamd ({}): new connections stay on TCP until it is back",
                 why.err == 0 ? "it closed the connection" : why.ToString());
  }
  boost::system::error_code ignored;
  desc_->close(ignored);
  desc_.reset();
  FailCalls(SysError{ECONNRESET, "slipstreamd"});
  if (callbacks_.on_lost) callbacks_.on_lost();
  ScheduleReconnect();
}

void MatcherClient::ScheduleReconnect() {
  reconnect_timer_.expires_after(refused_ ? kRefusedReconnectPeriod : kReconnectPeriod);
  reconnect_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec || desc_) return;
    bool spawn = ++reconnect_failures_ >= kRespawnAfter;
    if (!Connect(spawn)) ScheduleReconnect();
  });
}

}  // namespace slipstream::supervisor
