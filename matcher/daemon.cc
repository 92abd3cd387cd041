#include "matcher/daemon.h"

#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <deque>
#include <set>

#include <spdlog/spdlog.h>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <nlohmann/json.hpp>

#include "base/proc_scan.h"
#include "base/socket_info.h"
#include "base/syscalls.h"
#include "matcher/paths.h"
#include "matcher/policy.h"

namespace slipstream::matcher {
namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

namespace {

constexpr auto kSweepPeriod = std::chrono::milliseconds(100);
constexpr auto kApprovalLifetime = std::chrono::seconds(10);
constexpr auto kLiveSweepPeriod = std::chrono::seconds(2);

std::optional<SockAddr> Name(int fd, bool peer) {
  auto a = SocketName(fd, peer);
  if (!a) return std::nullopt;
  return Canonical(*a);
}

// The network namespace a socket lives in: SIOCGSKNS (needs CAP_NET_ADMIN), else the namespace of
// the supervisor that sent it (supervisors only send sockets of programs in their own namespace).
uint64_t SocketNetns(int fd, uint64_t fallback) {
  UniqueFd ns(ioctl(fd, SIOCGSKNS));
  if (!ns) return fallback;
  auto id = GetFileId(ns.Get());
  return id ? id->ino : fallback;
}

}  // namespace

struct Daemon::Session {
  struct Outgoing {
    MsgType type;
    uint64_t seq;
    int32_t pid;
    std::vector<uint8_t> body;
    std::vector<UniqueFd> fds;  // our own references, kept until sent
  };
  Session(asio::io_context& io, int fd) : desc(io, fd) {}
  std::deque<Outgoing> outgoing;
  bool flushing = false;
  uint64_t id = 0;
  asio::posix::stream_descriptor desc;
  pid_t pid = 0;
  uid_t uid = 0;
  uint64_t netns = 0;
  bool closed = false;
  int fd() { return desc.native_handle(); }
};

struct Daemon::Pending {
  UniqueFd server_end;  // ours until handed over
  uint64_t owner = 0;   // the client's supervisor session
  pid_t owner_pid = 0;  // ... and its pid (it keeps a copy of the end until we report)
  int32_t client_pid = 0;
  uint64_t client_end_ino = 0;
  uint64_t server_end_ino = 0;
  uint64_t handed_to = 0;  // the session that got the end (push or claim), 0 while we hold it
  int32_t server_pid = 0;
  Clock::time_point created;
  std::optional<Clock::time_point> accepted_since;  // the server side left the accept queue
};

struct Daemon::Live {
  int32_t client_pid = 0;
  int32_t server_pid = 0;
  SockAddr client;
  SockAddr server;
  uint64_t client_end_ino = 0;
  uint64_t server_end_ino = 0;
  std::chrono::system_clock::time_point since;
};

Result<std::unique_ptr<Daemon>> Daemon::Create(DaemonConfig config) {
  UniqueFd lock(open(LockPath(config.dir).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock) return Errno("open(lock)");
  if (flock(lock.Get(), LOCK_EX | LOCK_NB) < 0) return Errno("flock");
  // We hold the lock, so any socket file left there belongs to a daemon that is gone.
  std::string path = SocketPath(config.dir);
  unlink(path.c_str());
  UniqueFd fd(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return Errno("socket");
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) return Error(ENAMETOOLONG, "socket path");
  path.copy(addr.sun_path, path.size());
  if (bind(fd.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0) return Errno("bind");
  chmod(path.c_str(), 0600);
  if (listen(fd.Get(), SOMAXCONN) < 0) return Errno("listen");
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
      sweep_timer_(io_),
      idle_timer_(io_),
      last_activity_(Clock::now()) {}

Daemon::~Daemon() {
  // Remove the socket only if it is still ours (a successor may have replaced it).
  std::string path = SocketPath(config_.dir);
  if (PathInode(path) == sock_ino_) unlink(path.c_str());
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
    if (fd < 0) break;
    UniqueFd owned(fd);
    ucred cred{};
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || cred.uid != geteuid()) {
      spdlog::warn("refused a connection from uid {}: different users never pair", cred.uid);
      continue;
    }
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

void Daemon::ArmRead(Session* s) {
  s->desc.async_wait(asio::posix::descriptor_base::wait_read,
                     [this, s](const boost::system::error_code& ec) {
                       if (ec || s->closed) return;
                       if (ReadAll(s)) ArmRead(s);
                     });
}

bool Daemon::ReadAll(Session* s) {
  while (!s->closed) {
    auto m = ReceiveMessage(s->fd(), /*nonblocking=*/true);
    if (m) {
      Handle(s, std::move(*m));
      continue;
    }
    if (m.error().err == EAGAIN) return true;
    if (m.error().err == EPROTO) {
      ReplyError(s, Message{}, EPROTO, m.error().op);
      continue;
    }
    Close(s);
  }
  return false;
}

void Daemon::Close(Session* s) {
  if (s->closed) return;
  s->closed = true;
  spdlog::debug("session {} (pid {}) closed", s->id, s->pid);
  for (auto it = listeners_.begin(); it != listeners_.end();) {
    if (it->second.session != s->id) {
      ++it;
      continue;
    }
    uint64_t ino = it->first;
    it = listeners_.erase(it);
    Broadcast(ino, false);
  }
  for (auto it = intents_.begin(); it != intents_.end();) {
    it = it->second.session == s->id ? intents_.erase(it) : std::next(it);
  }
  std::erase_if(deferred_, [s](const Deferred& d) { return d.session == s->id; });
  // Ends this supervisor received and had not reported on: where are they now? Its socket buffer
  // died with it, so an end is either in some program (claimed) or gone (relay).
  for (auto it = pending_.begin(); it != pending_.end();) {
    auto next = std::next(it);
    if (it->second.handed_to == s->id) {
      pid_t exclude[] = {it->second.owner_pid};
      Resolve(it, SocketHeldByOthers(it->second.server_end_ino, exclude));
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
    case MsgType::kStatus:
      return OnStatus(s, m);
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
  if (to->outgoing.empty()) {
    auto st = SendMessage(to->fd(), type, seq, pid, body, fds, /*wait=*/false);
    if (st || st.error().err != EAGAIN) return st;
  }
  Session::Outgoing out{type, seq, pid, {body.begin(), body.end()}, {}};
  for (int fd : fds) out.fds.emplace_back(fcntl(fd, F_DUPFD_CLOEXEC, 0));
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

Daemon::Session* Daemon::Alive(uint64_t session) {
  auto it = sessions_.find(session);
  return it == sessions_.end() || it->second->closed ? nullptr : it->second.get();
}

void Daemon::SendListener(Session* to, uint64_t ino, bool added) {
  ListenerBody body{ino, static_cast<uint8_t>(added)};
  (void)Send(to, MsgType::kListener, 0, 0, Bytes(body));
}

void Daemon::Broadcast(uint64_t ino, bool added) {
  for (auto& [id, s] : sessions_) {
    if (!s->closed) SendListener(s.get(), ino, added);
  }
}

void Daemon::OnRegisterListener(Session* s, Message& m) {
  if (m.fds.size() != 1 || !m.body.empty()) return ReplyError(s, m, EINVAL, "bad register");
  int fd = m.fds[0].Get();
  if (!IsTcpSocket(fd) || IntSockOpt(fd, SOL_SOCKET, SO_ACCEPTCONN) != 1) {
    return ReplyError(s, m, EINVAL, "not a listening TCP socket");
  }
  auto addr = Name(fd, false);
  if (!addr) return ReplyError(s, m, errno, "getsockname");
  // Pairing happens only in the daemon's own network namespace (sock_diag looks there).
  if (SocketNetns(fd, s->netns) == netns_) {
    uint64_t ino = InodeOf(fd);
    listeners_[ino] = ListenerReg{s->id, *addr, m.header.pid};
    // Every supervisor decides locally whether a connect may switch: tell them all, before the
    // registering supervisor lets its program's listen() return.
    Broadcast(ino, true);
    spdlog::debug("listener {} registered by pid {}", addr->ToString(), m.header.pid);
  }
  (void)Send(s, MsgType::kRegistered, m.header.seq, m.header.pid, {});
}

void Daemon::OnIntent(Session* s, Message& m) {
  if (m.fds.size() != 1 || !m.body.empty() || !IsTcpSocket(m.fds[0].Get())) {
    return ReplyError(s, m, EINVAL, "intent needs a TCP socket");
  }
  intents_[InodeOf(m.fds[0].Get())] = Intent{s->id, Clock::now()};
  ScheduleSweep();
}

void Daemon::OnAbort(Session* s, Message& m) {
  const auto* body = m.As<InodeBody>();
  if (body == nullptr || !m.fds.empty()) return ReplyError(s, m, EINVAL, "bad abort");
  auto it = intents_.find(body->inode);
  if (it == intents_.end() || it->second.session != s->id) return;
  intents_.erase(it);
  // A claim waiting for this connection's kConnected will not get it: answer it now.
  for (auto d = deferred_.begin(); d != deferred_.end();) {
    auto peer = diag_.LookupTcp(d->key.remote, d->key.local);
    if (!peer || peer->inode != body->inode) {
      ++d;
      continue;
    }
    if (Session* claimer = Alive(d->session)) {
      ClaimReplyBody reply{static_cast<uint8_t>(ClaimResult::kNo)};
      (void)Send(claimer, MsgType::kClaimReply, d->seq, 0, Bytes(reply));
    }
    d = deferred_.erase(d);
  }
}

void Daemon::OnConnected(Session* s, Message& m) {
  const auto* body = m.As<InodeBody>();
  if (body == nullptr || m.fds.size() != 2) return ReplyError(s, m, EINVAL, "bad connected");
  int tcp = m.fds[0].Get();
  auto intent = intents_.find(InodeOf(tcp));
  if (intent == intents_.end() || intent->second.session != s->id) {
    return ReplyError(s, m, EPERM, "no intent to connect from this supervisor for this socket");
  }
  intents_.erase(intent);
  auto local = Name(tcp, false), remote = Name(tcp, true);
  if (!local || !remote || !IsUnixStreamSocket(m.fds[1].Get())) {
    return ReplyError(s, m, EINVAL, "connected needs a connected TCP socket and a unix stream end");
  }
  ConnKey key{netns_, *remote, *local};  // as the accepting side will see it
  Pending p;
  p.server_end = std::move(m.fds[1]);
  p.owner = s->id;
  p.owner_pid = s->pid;
  p.client_pid = m.header.pid;
  p.client_end_ino = body->inode;
  p.server_end_ino = InodeOf(p.server_end.Get());
  p.created = Clock::now();
  auto it = pending_.insert_or_assign(key, std::move(p)).first;

  // The client's supervisor decided from the kernel's listeners (sock_diag) and our list of
  // supervised ones. Whose registered listeners can take the connection? If that was wrong (an
  // unsupervised process accepts it), the sweeps below notice and the client's supervisor relays.
  if (SocketNetns(tcp, s->netns) != netns_) return Resolve(it, /*claimed=*/false);
  std::set<uint64_t> owners;
  for (const auto& [ino, l] : listeners_) {
    TcpSocketInfo info;
    info.local = l.addr;
    if (ListenerCanReceive(info, key.local) && Alive(l.session) != nullptr)
      owners.insert(l.session);
  }
  if (owners.empty()) return Resolve(it, /*claimed=*/false);
  spdlog::debug("pending {}", key.ToString());
  // A claim that overtook this message is waiting: answer it.
  for (auto d = deferred_.begin(); d != deferred_.end(); ++d) {
    if (d->key == key) {
      Deferred found = *d;
      deferred_.erase(d);
      if (Session* claimer = Alive(found.session)) {
        it->second.server_pid = found.pid;
        if (HandOver(claimer, found.seq, it)) return;
      }
      break;
    }
  }
  // One supervisor holds every listener that can take the connection: give it the end now, so that
  // its accept() needs no round trip to us.
  if (owners.size() == 1) {
    if (Session* owner = Alive(*owners.begin())) HandOver(owner, 0, it);
  }
  ScheduleSweep();
}

bool Daemon::HandOver(Session* to, uint64_t seq, std::map<ConnKey, Pending>::iterator it) {
  Pending& p = it->second;
  int fd = p.server_end.Get();
  Status sent;
  if (seq == 0) {
    PushBody body{};
    std::memcpy(&body.local, it->first.local.get(), it->first.local.len());
    std::memcpy(&body.remote, it->first.remote.get(), it->first.remote.len());
    body.local_len = it->first.local.len();
    body.remote_len = it->first.remote.len();
    body.server_end_ino = p.server_end_ino;
    sent = Send(to, MsgType::kPush, 0, p.client_pid, Bytes(body), {&fd, 1});
  } else {
    ClaimReplyBody reply{static_cast<uint8_t>(ClaimResult::kHere)};
    sent = Send(to, MsgType::kClaimReply, seq, 0, Bytes(reply), {&fd, 1});
  }
  if (!sent) return false;  // the receiver went away: we still hold the end
  p.handed_to = to->id;
  p.server_end.Reset();
  return true;
}

std::map<ConnKey, Daemon::Pending>::iterator Daemon::FindByEnd(uint64_t server_end_ino) {
  for (auto it = pending_.begin(); it != pending_.end(); ++it) {
    if (it->second.server_end_ino == server_end_ino) return it;
  }
  return pending_.end();
}

void Daemon::Resolve(std::map<ConnKey, Pending>::iterator it, bool claimed) {
  Pending& p = it->second;
  if (Session* owner = Alive(p.owner)) {
    InodeBody body{p.server_end_ino};
    (void)Send(owner, claimed ? MsgType::kRelease : MsgType::kRelay, 0, p.client_pid, Bytes(body));
  }
  if (claimed) {
    Live live;
    live.client_pid = p.client_pid;
    live.server_pid = p.server_pid;
    live.client = it->first.remote;
    live.server = it->first.local;
    live.client_end_ino = p.client_end_ino;
    live.server_end_ino = p.server_end_ino;
    live.since = std::chrono::system_clock::now();
    live_[p.server_end_ino] = live;
    ++pairs_total_;
    spdlog::debug("paired {}", it->first.ToString());
  } else {
    ++relays_total_;
    spdlog::debug("relay {}", it->first.ToString());
  }
  pending_.erase(it);
}

void Daemon::OnClaim(Session* s, Message& m) {
  if (m.fds.size() != 1 || !m.body.empty()) return ReplyError(s, m, EINVAL, "bad claim");
  int tcp = m.fds[0].Get();
  auto local = Name(tcp, false), remote = Name(tcp, true);
  if (!IsTcpSocket(tcp) || !local || !remote)
    return ReplyError(s, m, EINVAL, "claim needs a TCP connection");
  ConnKey key{netns_, *local, *remote};
  auto it = pending_.find(key);
  if (it == pending_.end()) {
    // The client's supervisor may have sent kConnected just now: read what is queued first.
    DrainAll();
    if (s->closed) return;
    it = pending_.find(key);
  }
  auto answer = [&](ClaimResult r) {
    ClaimReplyBody reply{static_cast<uint8_t>(r)};
    (void)Send(s, MsgType::kClaimReply, m.header.seq, m.header.pid, Bytes(reply));
  };
  if (it != pending_.end()) {
    if (it->second.handed_to == s->id) return answer(ClaimResult::kPushedToYou);
    if (it->second.handed_to != 0) return answer(ClaimResult::kNo);
    it->second.server_pid = m.header.pid;
    if (!HandOver(s, m.header.seq, it)) answer(ClaimResult::kNo);
    return;
  }
  // Still nothing. If the peer socket belongs to a client that announced its connect, its
  // kConnected is on the way: answer when it arrives. Otherwise the client is not supervised:
  // answer now, so an unsupervised client never waits.
  auto peer = diag_.LookupTcp(*remote, *local);
  if (peer && intents_.count(peer->inode)) {
    deferred_.push_back(Deferred{s->id, m.header.seq, m.header.pid, key, Clock::now()});
    ScheduleSweep();
    return;
  }
  answer(ClaimResult::kNo);
}

void Daemon::OnInstalled(Session* s, Message& m) {
  const auto* body = m.As<InodeBody>();
  if (body == nullptr || !m.fds.empty()) return ReplyError(s, m, EINVAL, "bad installed");
  auto it = FindByEnd(body->inode);
  if (it == pending_.end() || it->second.handed_to != s->id) return;
  it->second.server_pid = m.header.pid;
  Resolve(it, /*claimed=*/true);
}

void Daemon::OnDisown(Session* s, Message& m) {
  const auto* body = m.As<InodeBody>();
  if (body == nullptr || !m.fds.empty()) return ReplyError(s, m, EINVAL, "bad disown");
  auto it = FindByEnd(body->inode);
  if (it == pending_.end() || it->second.handed_to != s->id) return;
  Resolve(it, /*claimed=*/false);
}

void Daemon::DrainAll() {
  if (draining_) return;
  draining_ = true;
  std::vector<Session*> all;
  for (auto& [id, s] : sessions_) {
    if (!s->closed) all.push_back(s.get());
  }
  for (Session* s : all) {
    if (!s->closed) ReadAll(s);
  }
  draining_ = false;
}

void Daemon::OnStatus(Session* s, Message& m) {
  std::string json = StatusJson(s->id);
  if (json.size() > kMaxBody) json.resize(0);
  (void)Send(s, MsgType::kStatusReply, m.header.seq, m.header.pid,
             {reinterpret_cast<const uint8_t*>(json.data()), json.size()});
}

void Daemon::ScheduleSweep() {
  if (sweep_scheduled_) return;
  sweep_scheduled_ = true;
  sweep_timer_.expires_after(kSweepPeriod);
  sweep_timer_.async_wait([this](const boost::system::error_code& ec) {
    sweep_scheduled_ = false;
    if (ec) return;
    Sweep();
    if (!pending_.empty() || !deferred_.empty() || !intents_.empty() || !live_.empty()) {
      ScheduleSweep();
    }
  });
}

void Daemon::Sweep() {
  auto now = Clock::now();
  for (auto it = intents_.begin(); it != intents_.end();) {
    it = now - it->second.when > kApprovalLifetime ? intents_.erase(it) : std::next(it);
  }
  for (auto d = deferred_.begin(); d != deferred_.end();) {
    if (now - d->since < config_.deferred_claim_limit) {
      ++d;
      continue;
    }
    auto s = sessions_.find(d->session);
    if (s != sessions_.end() && !s->second->closed) {
      ClaimReplyBody reply{static_cast<uint8_t>(ClaimResult::kNo)};
      (void)Send(s->second.get(), MsgType::kClaimReply, d->seq, 0, Bytes(reply));
    }
    d = deferred_.erase(d);
  }
  // Pending pairs we still hold: the server side accepted by someone who does not claim it (an
  // unsupervised process sharing the listener), or gone altogether, must be relayed by the client's
  // supervisor. (An end handed to a supervisor is that supervisor's to report on.)
  for (auto it = pending_.begin(); it != pending_.end();) {
    auto next = std::next(it);
    Pending& p = it->second;
    if (p.handed_to == 0) {
      auto server = diag_.LookupTcp(it->first.local, it->first.remote);
      bool relay = false;
      if (!server) {
        relay = server.error().err == ENOENT;
      } else if (server->inode != 0) {
        if (!p.accepted_since) p.accepted_since = now;
        relay = now - *p.accepted_since >= config_.claim_grace;
      }
      if (relay) Resolve(it, /*claimed=*/false);
    }
    it = next;
  }
  if (!live_.empty() && now - last_live_sweep_ >= kLiveSweepPeriod) {
    last_live_sweep_ = now;
    if (auto inodes = diag_.UnixInodes()) {
      for (auto it = live_.begin(); it != live_.end();) {
        bool alive =
            inodes->count(it->second.client_end_ino) || inodes->count(it->second.server_end_ino);
        it = alive ? std::next(it) : live_.erase(it);
      }
    }
  }
}

bool Daemon::Idle() const { return sessions_.empty() && pending_.empty(); }

void Daemon::ScheduleIdleCheck() {
  idle_timer_.expires_after(std::chrono::seconds(1));
  idle_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    if (!Idle()) last_activity_ = Clock::now();
    if (Clock::now() - last_activity_ >= config_.idle_exit) {
      spdlog::info("idle for {}s: exiting", config_.idle_exit.count());
      io_.stop();
      return;
    }
    ScheduleIdleCheck();
  });
}

std::string Daemon::StatusJson(uint64_t asking_session) const {
  nlohmann::json j;
  j["pid"] = getpid();
  j["socket"] = SocketPath(config_.dir);
  j["supervisors"] = nlohmann::json::array();
  for (const auto& [id, s] : sessions_) {
    if (!s->closed && id != asking_session)
      j["supervisors"].push_back({{"pid", s->pid}, {"uid", s->uid}});
  }
  j["listeners"] = nlohmann::json::array();
  for (const auto& [ino, l] : listeners_) {
    j["listeners"].push_back({{"address", l.addr.ToString()}, {"pid", l.pid}, {"inode", ino}});
  }
  j["connections"] = nlohmann::json::array();
  j["connections_total"] = live_.size();
  constexpr size_t kMaxListed = 1000;  // keeps the reply within one message
  for (const auto& [ino, c] : live_) {
    if (j["connections"].size() >= kMaxListed) break;
    j["connections"].push_back(
        {{"client", c.client.ToString()},
         {"server", c.server.ToString()},
         {"client_pid", c.client_pid},
         {"server_pid", c.server_pid},
         {"client_unix_inode", c.client_end_ino},
         {"server_unix_inode", c.server_end_ino},
         {"since",
          std::chrono::duration_cast<std::chrono::seconds>(c.since.time_since_epoch()).count()}});
  }
  j["pending"] = pending_.size();
  j["pairs_total"] = pairs_total_;
  j["relays_total"] = relays_total_;
  return j.dump();
}

}  // namespace slipstream::matcher
