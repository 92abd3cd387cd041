#include "supervisor/switcher.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <cstdlib>
#include <cstring>

#include "base/syscalls.h"
#include "fdinject/epoll_migrate.h"
#include "fdinject/installer.h"
#include "matcher/protocol.h"
#include "supervisor/relay.h"

namespace slipstream::supervisor {
namespace asio = boost::asio;
using matcher::MsgType;

namespace {

constexpr auto kSweepPeriod = std::chrono::seconds(1);
// After the daemon died with pairs in flight, how long a claimer has to finish installing the end
// it already received before we decide from /proc who holds it.
constexpr auto kOrphanGrace = std::chrono::milliseconds(200);

uint64_t Inode(int fd) {
  auto id = GetFileId(fd);
  return id ? id->ino : 0;
}

}  // namespace

bool SocketHeldElsewhere(uint64_t inode) {
  std::string want = "socket:[" + std::to_string(inode) + "]";
  pid_t self = getpid();
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return true;  // cannot tell: do not relay (never duplicate a reader)
  bool found = false;
  while (dirent* p = readdir(proc)) {
    pid_t pid = static_cast<pid_t>(std::atoi(p->d_name));
    if (pid <= 0 || pid == self) continue;
    std::string dir = std::string("/proc/") + p->d_name + "/fd";
    DIR* fds = opendir(dir.c_str());
    if (fds == nullptr) continue;
    char link[64];
    while (dirent* f = readdir(fds)) {
      std::string path = dir + "/" + f->d_name;
      ssize_t n = readlink(path.c_str(), link, sizeof(link) - 1);
      if (n > 0 && want.compare(0, want.size(), link, static_cast<size_t>(n)) == 0 &&
          static_cast<size_t>(n) == want.size()) {
        found = true;
        break;
      }
    }
    closedir(fds);
    if (found) break;
  }
  closedir(proc);
  return found;
}

Switcher::Switcher(asio::io_context& io, Stats& stats)
    : io_(io),
      stats_(stats),
      client_(io, MatcherClient::Callbacks{
                      [this](uint64_t ino) { OnRelease(ino); },
                      [this](uint64_t ino) { OnRelay(ino); },
                      [this] { OnLost(); },
                      [this] { OnReconnected(); },
                  }),
      sweep_timer_(io),
      orphan_timer_(io) {
  if (auto diag = SockDiag::Open()) diag_.emplace(std::move(*diag));
}

Switcher::~Switcher() = default;

void Switcher::Start() {
  auto st = client_.Connect(/*spawn=*/true);
  if (!st) {
    spdlog::warn("no slipstreamd ({}): connections stay on TCP", st.error().ToString());
  }
}

void Switcher::OnListener(pid_t tgid, int target_fd, int listener) {
  uint64_t ino = Inode(listener);
  listeners_[ino] = KnownListener{tgid, target_fd};
  if (active()) (void)client_.Send(MsgType::kRegisterListener, tgid, {}, {&listener, 1});
}

void Switcher::OnReconnected() {
  // Tell a (re)started daemon about every listener we know that still exists where we saw it.
  for (auto it = listeners_.begin(); it != listeners_.end();) {
    auto pidfd = PidfdOpen(it->second.tgid);
    std::optional<UniqueFd> fd;
    if (pidfd) {
      if (auto copy = PidfdGetfd(pidfd->Get(), it->second.fd); copy && Inode(copy->Get()) == it->first) {
        fd = std::move(*copy);
      }
    }
    if (!fd) {
      it = listeners_.erase(it);
      continue;
    }
    int raw = fd->Get();
    (void)client_.Send(MsgType::kRegisterListener, it->second.tgid, {}, {&raw, 1});
    ++it;
  }
}

bool Switcher::Approve(pid_t pid, int sock, const SockAddr& dest) {
  if (!active()) return false;
  matcher::QueryBody q{};
  std::memcpy(&q.dest, dest.get(), dest.len());
  q.dest_len = dest.len();
  auto reply = client_.Call(MsgType::kQuery, pid, matcher::Bytes(q), {&sock, 1});
  if (!reply || reply->type() != MsgType::kQueryReply) return false;
  const auto* body = reply->As<matcher::QueryReplyBody>();
  return body != nullptr && body->do_switch;
}

void Switcher::Abort(pid_t pid, int sock) {
  matcher::InodeBody body{Inode(sock)};
  (void)client_.Send(MsgType::kAbort, pid, matcher::Bytes(body));
}

Result<UniqueFd> Switcher::SwitchClient(pid_t pid, int sock, bool nonblocking) {
  auto pair = fdinject::MakeStreamPair(nonblocking, false);
  if (!pair) return tl::unexpected(pair.error());
  auto& [client_end, server_end] = *pair;
  uint64_t server_ino = Inode(server_end.Get());
  matcher::InodeBody body{Inode(client_end.Get())};
  int fds[2] = {sock, server_end.Get()};
  if (auto st = client_.Send(MsgType::kConnected, pid, matcher::Bytes(body), fds); !st) {
    return tl::unexpected(st.error());
  }
  UniqueFd tcp(fcntl(sock, F_DUPFD_CLOEXEC, 0));
  awaiting_[server_ino] = Awaiting{std::move(server_end), std::move(tcp)};
  return std::move(client_end);
}

std::optional<UniqueFd> Switcher::Claim(pid_t pid, int accepted) {
  if (!active()) return std::nullopt;
  auto reply = client_.Call(MsgType::kClaim, pid, {}, {&accepted, 1});
  if (!reply || reply->type() != MsgType::kClaimReply || reply->fds.size() != 1) {
    return std::nullopt;
  }
  return std::move(reply->fds[0]);
}

void Switcher::NoteEpollRegistration(uint64_t sock_ino, pid_t tgid, int epfd, int fd) {
  // Bounded: records of sockets that never connect are dropped oldest first (inodes grow).
  constexpr size_t kMaxRecords = 4096;
  if (epoll_registrations_.size() >= kMaxRecords) {
    epoll_registrations_.erase(epoll_registrations_.begin());
  }
  epoll_registrations_[sock_ino].push_back({tgid, epfd, fd});
}

void Switcher::MigrateEpoll(uint64_t sock_ino, int tcp, int end) {
  auto it = epoll_registrations_.find(sock_ino);
  if (it == epoll_registrations_.end()) return;
  for (const auto& r : it->second) {
    auto pidfd = PidfdOpen(r.tgid);
    if (!pidfd) continue;
    auto epoll_copy = PidfdGetfd(pidfd->Get(), r.epfd);
    if (!epoll_copy) continue;
    auto item = fdinject::FindEpollItem(r.tgid, r.epfd, r.fd, sock_ino);
    if (!item || !*item) continue;  // deleted or moved meanwhile: nothing to carry over
    auto st = fdinject::MigrateEpollItem(epoll_copy->Get(), r.fd, tcp, end, **item);
    if (!st) {
      spdlog::warn("could not move epoll registration of fd {} in pid {}: {}", r.fd, r.tgid,
                   st.error().ToString());
    } else {
      spdlog::debug("moved epoll registration of fd {} (epoll fd {}) in pid {}", r.fd, r.epfd,
                    r.tgid);
    }
  }
  epoll_registrations_.erase(it);
}

void Switcher::Book(uint64_t end_ino, UniqueFd tcp, bool client) {
  book_[end_ino] = SwitchedSocket{std::move(tcp), client};
  ++stats_.switched;
  ScheduleSweep();
}

const SwitchedSocket* Switcher::Find(uint64_t end_ino) const {
  auto it = book_.find(end_ino);
  return it == book_.end() ? nullptr : &it->second;
}

void Switcher::OnRelease(uint64_t server_end_ino) { awaiting_.erase(server_end_ino); }

void Switcher::OnRelay(uint64_t server_end_ino) {
  auto it = awaiting_.find(server_end_ino);
  if (it == awaiting_.end()) return;
  spdlog::debug("relaying unclaimed connection (server end {})", server_end_ino);
  ++stats_.relayed;
  ++relays_active_;
  StartRelay(io_, std::move(it->second.server_end), std::move(it->second.tcp),
             [this] { --relays_active_; });
  awaiting_.erase(it);
}

void Switcher::OnLost() {
  if (awaiting_.empty()) return;
  // The daemon may have handed some of these ends to a claimer just before it died. Give such a
  // claimer time to install the end, then look who holds each one.
  orphan_timer_.expires_after(kOrphanGrace);
  orphan_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) ResolveOrphans();
  });
}

void Switcher::ResolveOrphans() {
  std::vector<uint64_t> orphans;
  for (const auto& [ino, a] : awaiting_) orphans.push_back(ino);
  for (uint64_t ino : orphans) {
    if (SocketHeldElsewhere(ino)) {
      OnRelease(ino);
    } else {
      OnRelay(ino);
    }
  }
}

void Switcher::ScheduleSweep() {
  if (sweep_scheduled_ || !diag_) return;
  sweep_scheduled_ = true;
  sweep_timer_.expires_after(kSweepPeriod);
  sweep_timer_.async_wait([this](const boost::system::error_code& ec) {
    sweep_scheduled_ = false;
    if (ec) return;
    Sweep();
    if (!book_.empty()) ScheduleSweep();
  });
}

void Switcher::Sweep() {
  // A switched connection is over once the program has closed its AF_UNIX end everywhere (the
  // kernel drops the socket): release the retained TCP socket with it.
  auto alive = diag_->UnixInodes();
  if (!alive) return;
  for (auto it = book_.begin(); it != book_.end();) {
    it = alive->count(it->first) ? std::next(it) : book_.erase(it);
  }
}

}  // namespace slipstream::supervisor
