#include "matcher/daemon.h"
#include "matcher/daemon_state.h"
#include "matcher/unclaimed.h"

#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <set>
#include <unordered_set>

#include <spdlog/spdlog.h>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <nlohmann/json.hpp>

#include "base/netns.h"
#include "base/proc_scan.h"
#include "base/socket_info.h"
#include "base/syscalls.h"
#include "matcher/paths.h"
#include "matcher/policy.h"

namespace slipstream::matcher {
namespace asio = boost::asio;

namespace {

constexpr auto kSweepPeriod = std::chrono::milliseconds(100);
constexpr auto kApprovalLifetime = std::chrono::seconds(10);
constexpr auto kLiveSweepPeriod = std::chrono::seconds(2);
// Sessions of one user other than ours and root, serving every user: a supervisor has one, so
// this is many supervised process trees at once.
constexpr long kMaxSessionsPerUser = 1024;

}  // namespace

std::optional<SockAddr> Name(int fd, bool peer) {
  auto a = SocketName(fd, peer);
  if (!a) return std::nullopt;
  return Canonical(*a);
}

uint64_t SocketNetns(int fd, uint64_t fallback) {
  UniqueFd ns(ioctl(fd, SIOCGSKNS));
  if (!ns) return fallback;
  auto id = GetFileId(ns.Get());
  return id ? id->ino : fallback;
}

Result<std::unique_ptr<Daemon>> Daemon::Create(DaemonConfig config) {
  UniqueFd lock(open(LockPath(config.dir).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock) return Errno("open(lock)");
  if (flock(lock.Get(), LOCK_EX | LOCK_NB) < 0) return Errno("flock");
  std::string path = SocketPath(config.dir);
  UniqueFd fd;
  if (config.listen_fd >= 0) {
    fd = UniqueFd(config.listen_fd);  // systemd bound and listens; the file is its own
  } else {
    // We hold the lock, so any socket file left there belongs to a daemon that is gone.
    unlink(path.c_str());
    fd = UniqueFd(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) return Errno("socket");
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof(addr.sun_path)) return Error(ENAMETOOLONG, "socket path");
    path.copy(addr.sun_path, path.size());
    if (bind(fd.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0) return Errno("bind");
    // Serving every user, anyone may connect: each session proves what it acts on with fds.
    chmod(path.c_str(), config.all_users ? 0666 : 0600);
    if (listen(fd.Get(), SOMAXCONN) < 0) return Errno("listen");
  }
  auto diag = SockDiag::Open();
  if (!diag) return tl::unexpected(diag.error());
  uint64_t ino = PathInode(path);
  return std::unique_ptr<Daemon>(
      new Daemon(std::move(config), std::move(lock), std::move(fd), ino, std::move(*diag)));
}

Daemon::Daemon(DaemonConfig config, UniqueFd lock, UniqueFd listen_fd, uint64_t sock_ino,
               SockDiag diag)
    : config_(std::move(config)),
      lock_(std::move(lock)),
      listener_(io_, listen_fd.Release()),
      sock_ino_(sock_ino),
      netns_(PathInode("/proc/self/ns/net")),
      diag_(std::move(diag)),
      sweep_timer_(io_, kSweepPeriod,
                   [this] {
                     Sweep();
                     return !pending_.empty() || !deferred_.empty() || !intents_.empty();
                   }),
      live_sweep_timer_(io_, kLiveSweepPeriod, [this] { return SweepLiveAndListeners(); }),
      idle_timer_(io_),
      accept_retry_timer_(io_),
      last_activity_(Clock::now()) {
  if (auto cookie = NetnsCookie(listener_.native_handle())) netns_cookie_ = *cookie;
  // Serving every user, their programs' preload libraries read the table; only we write it.
  auto table = ListenerTable::Open(ListenerTablePath(config_.dir), config_.all_users ? 0644 : 0600);
  if (table) {
    table_.emplace(std::move(*table));
    gate_.emplace(ListenerTablePath(config_.dir));
  } else {
    spdlog::warn("no listener table ({}): preloaded programs ask the supervisor on every connect",
                 table.error().ToString());
  }
}

Daemon::~Daemon() {
  // Remove the socket only if it is still ours (a successor may have replaced it); an activated
  // socket's file belongs to systemd, which keeps listening on it and starts us again.
  std::string path = SocketPath(config_.dir);
  if (config_.listen_fd < 0 && PathInode(path) == sock_ino_) unlink(path.c_str());
}

void Daemon::Run() {
  // A clean stop removes the socket; supervisors notice the closed session and fall back to TCP
  // for new connections (pairs in flight are resolved by their client's supervisor).
  asio::signal_set stop(io_, SIGINT, SIGTERM, SIGHUP);
  stop.async_wait([this](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    spdlog::info("signal {}: exiting", sig);
    io_.stop();
  });
  ArmAccept();
  ScheduleIdleCheck();
  if (config_.ready_fd >= 0) {
    (void)!write(config_.ready_fd, "1", 1);
    close(config_.ready_fd);
  }
  spdlog::info("slipstreamd {} listening on {}", getpid(), SocketPath(config_.dir));
  io_.run();
}

void Daemon::Stop() {
  asio::post(io_, [this] { io_.stop(); });
}

void Daemon::ArmAccept() {
  listener_.async_wait(asio::posix::descriptor_base::wait_read,
                       [this](const boost::system::error_code& ec) {
                         if (!ec) OnAccept();
                       });
}

void Daemon::OnAccept() {
  for (;;) {
    int fd = accept4(listener_.native_handle(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0 && (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOBUFS)) {
      // Out of fds: the connection stays queued and the listener readable. Try again later
      // rather than spin; closing sessions frees fds meanwhile.
      spdlog::warn("cannot accept a supervisor: {}", strerror(errno));
      accept_retry_timer_.expires_after(std::chrono::milliseconds(100));
      accept_retry_timer_.async_wait([this](const boost::system::error_code& ec) {
        if (!ec) ArmAccept();
      });
      return;
    }
    if (fd < 0) break;
    UniqueFd owned(fd);
    ucred cred{};
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) continue;
    if (!Admit(fd, cred.uid)) continue;
    auto s = std::make_unique<Session>(io_, owned.Release());
    s->id = next_session_++;
    s->pid = cred.pid;
    s->uid = cred.uid;
    s->netns = PathInode("/proc/" + std::to_string(cred.pid) + "/ns/net");
    spdlog::debug("session {} from supervisor pid {}", s->id, s->pid);
    Session* raw = s.get();
    sessions_[s->id] = std::move(s);
    for (const auto& [ino, l] : listeners_) {
      if (Alive(l.session) != nullptr) SendListener(raw, ino, true);
    }
    ArmRead(raw);
  }
  last_activity_ = Clock::now();
  ArmAccept();
}

namespace {

// Tells a supervisor why it gets no session (unsolicited kError) before the caller closes it.
void Refuse(int fd, int err, const char* text) {
  ErrorBody body{};
  body.err = err;
  snprintf(body.text, sizeof(body.text), "%s", text);
  (void)SendMessage(fd, MsgType::kError, 0, 0, Bytes(body), {}, /*wait=*/false);
}

}  // namespace

bool Daemon::Admit(int fd, uid_t uid) {
  char text[sizeof(ErrorBody::text)];
  if (uid == geteuid()) return true;
  if (!config_.all_users) {
    spdlog::warn("refused a connection from uid {}: serving only uid {} (no --all-users)", uid,
                 geteuid());
    // Said before the close, so that the supervisor names the cause and the fix instead of
    // reporting a daemon that went away (it knows our uid from SO_PEERCRED, the directory and its
    // own uid). It reads this also after its own send failed on the closed connection
    // (MatcherClient::Lost).
    snprintf(text, sizeof(text), "serves only uid %u: start it with --all-users", geteuid());
    Refuse(fd, EACCES, text);
    return false;
  }
  if (uid == 0) return true;
  // One user must not take every session (each is an fd of ours) from the others.
  auto of_uid = std::count_if(sessions_.begin(), sessions_.end(), [uid](const auto& e) {
    return !e.second->closed && e.second->uid == uid;
  });
  if (of_uid < kMaxSessionsPerUser) return true;
  spdlog::warn("refused a connection from uid {}: it has {} sessions already", uid, of_uid);
  snprintf(text, sizeof(text), "too many sessions of uid %u", uid);
  Refuse(fd, EUSERS, text);
  return false;
}

void Daemon::ArmRead(Session* s) {
  s->desc.async_wait(asio::posix::descriptor_base::wait_read,
                     [this, id = s->id](const boost::system::error_code& ec) {
                       if (!ec) ReadOnWakeUp(id);
                     });
}

// A batch per wake-up; a session with more queued goes to the back of the event queue (post),
// behind the other sessions' ready handlers. DaemonTest.AFloodingSessionDoesNotStarveTheOthers.
void Daemon::ReadOnWakeUp(uint64_t session_id) {
  constexpr int kBatch = 64;
  Session* s = Alive(session_id);
  if (s == nullptr) return;
  switch (Read(s, kBatch)) {
    case ReadResult::kEmpty:
      return ArmRead(s);
    case ReadResult::kBudgetSpent:
      return asio::post(io_, [this, session_id] { ReadOnWakeUp(session_id); });
    case ReadResult::kClosed:
      return;
  }
}

Daemon::ReadResult Daemon::Read(Session* s, int budget) {
  for (int i = 0; i < budget && !s->closed; ++i) {
    auto m = ReceiveMessage(s->fd(), /*nonblocking=*/true);
    if (m) {
      Handle(s, std::move(*m));
      continue;
    }
    if (m.error().err == EAGAIN) return ReadResult::kEmpty;
    if (m.error().err == EPROTO) {
      ReplyError(s, Message{}, EPROTO, m.error().op);
      continue;
    }
    Close(s);
  }
  return s->closed ? ReadResult::kClosed : ReadResult::kBudgetSpent;
}

void Daemon::Close(Session* s) {
  if (s->closed) return;
  s->closed = true;
  spdlog::debug("session {} (pid {}) closed", s->id, s->pid);
  ReleaseLedger(s);
  SettleUncommitted(s);
  for (auto it = listeners_.begin(); it != listeners_.end();) {
    if (it->second.session != s->id) {
      ++it;
      continue;
    }
    uint64_t ino = it->first;
    it = listeners_.erase(it);
    Broadcast(ino, false);
  }
  ForgetNetnsOf(s);
  for (auto it = intents_.begin(); it != intents_.end();) {
    it = it->second.session == s->id ? intents_.erase(it) : std::next(it);
  }
  std::erase_if(deferred_, [s](const Deferred& d) { return d.session == s->id; });
  AnswerSeqClaimsIfNoIntents();
  // Ends this supervisor received and had not reported on: where are they now? Its socket buffer
  // died with it, so an end is either in some program (claimed) or gone (relay). One pass over
  // /proc for them all.
  std::vector<uint64_t> ends;
  for (const auto& [key, p] : pending_) {
    if (p.handed_to == s->id) ends.push_back(p.server_end_ino);
  }
  auto holders = FindSocketHolders(ends);
  for (auto it = pending_.begin(); !ends.empty() && it != pending_.end();) {
    auto next = std::next(it);
    if (it->second.handed_to == s->id) {
      pid_t exclude[] = {it->second.owner_pid};  // the client's supervisor keeps its copy
      Resolve(it, HeldByOthers(holders, it->second.server_end_ino, exclude));
    }
    it = next;
  }
  boost::system::error_code ignored;
  s->desc.cancel(ignored);
  // Free the session after any handler already queued for it has run.
  uint64_t id = s->id;
  asio::post(io_, [this, id] { sessions_.erase(id); });
  last_activity_ = Clock::now();
}

void Daemon::Handle(Session* s, Message m) {
  last_activity_ = Clock::now();
  switch (m.type()) {
    case MsgType::kRegisterListener:
      return OnRegisterListener(s, m);
    case MsgType::kIntent:
      return OnIntent(s, m);
    case MsgType::kConnected:
      return OnConnected(s, m);
    case MsgType::kAbort:
      return OnAbort(s, m);
    case MsgType::kClaim:
      return OnClaim(s, m);
    case MsgType::kInstalled:
      return OnInstalled(s, m);
    case MsgType::kDisown:
      return OnDisown(s, m);
    case MsgType::kAdopt:
      return OnAdopt(s, m);
    case MsgType::kHello:
      return OnHello(s, m);
    case MsgType::kStatus:
      return OnStatus(s, m);
    case MsgType::kPeerPid:
      return OnPeerPid(s, m);
    case MsgType::kPeerGone:
      return OnPeerGone(s, m);
    case MsgType::kGateLedger:
      return OnGateLedger(s, m);
    case MsgType::kCommitted:
      return OnCommitted(s, m);
    case MsgType::kSweep:
      SweepLive();
      return (void)Send(s, MsgType::kSwept, m.header.seq, m.header.pid, {});
    default:
      return ReplyError(s, m, EPROTO, "unexpected message type");
  }
}

void Daemon::ReplyError(Session* s, const Message& m, int err, const char* text) {
  ErrorBody body{};
  body.err = err;
  snprintf(body.text, sizeof(body.text), "%s", text);
  spdlog::debug("session {}: error {} ({})", s->id, err, text);
  (void)Send(s, MsgType::kError, m.header.seq, m.header.pid, Bytes(body));
}

Status Daemon::Send(Session* to, MsgType type, uint64_t seq, int32_t pid,
                    std::span<const uint8_t> body, std::span<const int> fds) {
  if (to->closed) return Error(EPIPE, "session closed");
  // A session that reads nothing while its queue grows (a stopped supervisor, or a client that
  // floods requests and never reads the answers) would grow the daemon without bound. Past
  // kMaxQueued messages it is closed as if it had gone: a supervisor reconnects and registers
  // its listeners again; a hostile client loses only its own session.
  constexpr size_t kMaxQueued = 16384;
  if (to->outgoing.size() >= kMaxQueued) {
    if (!to->overflowed) {
      to->overflowed = true;
      spdlog::warn("session {} (pid {}) reads nothing: {} messages queued, closing it", to->id,
                   to->pid, to->outgoing.size());
      uint64_t id = to->id;
      asio::post(io_, [this, id] {
        if (Session* s = Alive(id)) Close(s);
      });
    }
    return Error(ENOBUFS, "session queue full");
  }
  if (to->outgoing.empty()) {
    auto st = SendMessage(to->fd(), type, seq, pid, body, fds, /*wait=*/false);
    if (st || st.error().err != EAGAIN) return st;
  }
  Session::Outgoing out{type, seq, pid, {body.begin(), body.end()}, {}};
  for (int fd : fds) {
    // Queued copies: the caller may close its own fds once we return. Without a copy (EMFILE)
    // the message is not sent, and the caller keeps what it would have handed over.
    UniqueFd copy(fcntl(fd, F_DUPFD_CLOEXEC, 0));
    if (!copy) return Errno("fcntl(F_DUPFD_CLOEXEC)");
    out.fds.push_back(std::move(copy));
  }
  to->outgoing.push_back(std::move(out));
  Flush(to);
  return {};  // queued: as good as sent for the caller (it may close its own fds)
}

void Daemon::Flush(Session* s) {
  while (!s->outgoing.empty()) {
    auto& out = s->outgoing.front();
    std::vector<int> fds;
    for (const auto& fd : out.fds) fds.push_back(fd.Get());
    auto st = SendMessage(s->fd(), out.type, out.seq, out.pid, out.body, fds, /*wait=*/false);
    if (!st && st.error().err == EAGAIN) break;
    s->outgoing.pop_front();  // sent, or failed for good (the session's read side will see why)
  }
  if (s->outgoing.empty() || s->flushing || s->closed) return;
  s->flushing = true;
  s->desc.async_wait(asio::posix::descriptor_base::wait_write,
                     [this, s](const boost::system::error_code& ec) {
                       s->flushing = false;
                       if (!ec && !s->closed) Flush(s);
                     });
}

void Daemon::ScheduleSweep() { sweep_timer_.Arm(); }

void Daemon::ScheduleLiveSweep() { live_sweep_timer_.Arm(); }

bool Daemon::SweepLiveAndListeners() {
  SweepLive();
  RetireListeners(Clock::now());
  RetireRemoteListeners(Clock::now());
  bool kept_netns = std::any_of(netns_table_.begin(), netns_table_.end(),
                                [](const auto& e) { return e.second.sessions == 0; });
  return !live_.empty() || !listeners_.empty() || !remote_listeners_.empty() || kept_netns;
}

void Daemon::Sweep() {
  auto now = Clock::now();
  for (auto it = intents_.begin(); it != intents_.end();) {
    it = now - it->second.when > kApprovalLifetime ? intents_.erase(it) : std::next(it);
  }
  AnswerSeqClaimsIfNoIntents();
  for (auto d = deferred_.begin(); d != deferred_.end();) {
    d = now - d->since < config_.deferred_claim_limit ? d + 1 : RefuseDeferred(d);
  }
  // Pending pairs we still hold: the server side accepted by someone who does not claim it (an
  // unsupervised process sharing the listener), or gone altogether, must be relayed by the client's
  // supervisor. (An end handed to a supervisor is that supervisor's to report on.)
  for (auto it = pending_.begin(); it != pending_.end();) {
    auto next = std::next(it);
    Pending& p = it->second;
    if (p.handed_to == 0 && it->first.by_seq()) {
      if (ShouldRelayBySeq(p, now)) Resolve(it, /*claimed=*/false);
    } else if (p.handed_to == 0 && p.committed) {  // uncommitted: its claims wait for the commit
      if (ShouldRelay(diag_, it->first.local, it->first.remote, &p.accepted_since, now,
                      config_.claim_grace)) {
        Resolve(it, /*claimed=*/false);
      }
    }
    it = next;
  }
}

void Daemon::SweepLive() {
  if (live_.empty()) return PruneNetns();
  // The ends of a pair are AF_UNIX sockets of the namespace where the client's supervisor made
  // them: ask that namespace's sock_diag (one dump per namespace).
  std::map<uint64_t, std::optional<std::unordered_set<uint64_t>>> dumps;
  auto alive_in = [&](uint64_t netns) -> const std::unordered_set<uint64_t>* {
    auto [it, fresh] = dumps.try_emplace(netns);
    if (fresh) {
      if (SockDiag* diag = UnixDiagOf(netns)) {
        if (auto inodes = diag->UnixInodes()) it->second = std::move(*inodes);
      }
    }
    return it->second ? &*it->second : nullptr;
  };
  for (auto it = live_.begin(); it != live_.end();) {
    Live& l = it->second;
    const auto* inodes = alive_in(l.unix_netns);
    if (inodes == nullptr) {  // cannot tell now
      ++it;
      continue;
    }
    bool client = inodes->count(l.client_end_ino) != 0,
         server = inodes->count(l.server_end_ino) != 0;
    // Our copy of a side's TCP socket must not keep it open once its program closed the end:
    // the supervisor's release then sends the FIN, and the peer's TCP_INFO says CLOSE_WAIT.
    if (!client) l.client_tcp.Reset();
    if (!server) l.server_tcp.Reset();
    // A server's supervisor in another namespace cannot see its end there: tell it.
    if (!server && l.by_seq && l.server_session != 0) {
      if (Session* to = Alive(l.server_session)) {
        InodeBody body{l.server_end_ino};
        (void)Send(to, MsgType::kEndClosed, 0, l.server_pid, Bytes(body));
      }
      l.server_session = 0;
    }
    it = client || server ? std::next(it) : live_.erase(it);
  }
  PruneNetns();
}

SockDiag* Daemon::UnixDiagOf(uint64_t netns) {
  if (netns == 0 || netns == netns_cookie_) return &diag_;
  auto ns = netns_table_.find(netns);
  return ns != netns_table_.end() && ns->second.diag ? &*ns->second.diag : nullptr;
}

void Daemon::RetireListeners(Clock::time_point now) {
  // A registered socket that is no longer listening (closed, or listen() failed after the early
  // registration) is dropped and every supervisor told. Young entries are left alone: they may
  // be registered a moment before their listen().
  std::map<uint16_t, std::set<uint64_t>> listening;
  for (auto it = listeners_.begin(); it != listeners_.end();) {
    ListenerReg& l = it->second;
    if (now - l.since < kLiveSweepPeriod) {
      ++it;
      continue;
    }
    // One dump per port (an empty one included: that is the port whose listeners went away).
    auto [ports, fresh] = listening.try_emplace(l.addr.port());
    if (fresh) {
      auto found = diag_.TcpListeners(l.addr.port());
      if (!found) return;  // cannot tell now: next time
      for (const auto& f : *found) ports->second.insert(f.inode);
    }
    if (ports->second.count(it->first)) {
      ++it;
      continue;
    }
    uint64_t ino = it->first;
    it = listeners_.erase(it);
    Broadcast(ino, false);
  }
}

bool Daemon::Idle() const {
  return sessions_.empty() && pending_.empty() && orphan_ledgers_.empty();
}

void Daemon::ScheduleIdleCheck() {
  idle_timer_.expires_after(std::chrono::seconds(1));
  idle_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    if (!Idle()) last_activity_ = Clock::now();
    if (Clock::now() - last_activity_ >= config_.idle_exit) {
      spdlog::info("idle for {}s: exiting", config_.idle_exit.count());
      // No supervisor has been connected for that long (a live one reconnects every second), so
      // an accept gate still raised was left by one that died: clear them, or every accept on
      // those ports would go on costing a notification.
      if (table_) table_->ClearAcceptGates();
      io_.stop();
      return;
    }
    ScheduleIdleCheck();
  });
}

}  // namespace slipstream::matcher
