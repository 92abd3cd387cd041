// slipstreamd: the supervisors' gate ledgers (matcher/listener_table.h, GateLedger).
//
// A ledger holds the accept-gate counts its supervisor has raised and not yet lowered. Draining it
// lowers them in the table, which is right only once that supervisor can no longer lower them
// itself: drained while it lives, a raise it still needs (a connection parked, a switch whose
// server end a program holds) would be dropped, and an accept in-process would then miss the
// claim and lose the client's bytes. A session can end while its supervisor lives (the daemon
// closes it at the queue limit; the supervisor gives it up after a send timed out and
// reconnects), so the drain waits for the supervisor's pidfd to report its exit (Linux 5.3).
#include <poll.h>
#include <sys/socket.h>

#include <spdlog/spdlog.h>

#include "matcher/daemon.h"
#include "matcher/daemon_state.h"

namespace slipstream::matcher {
namespace asio = boost::asio;

namespace {

// The process at the other end of session socket `fd` (pid `pid` from SO_PEERCRED): a pidfd, or
// proof that it has exited, or neither. SO_PEERPIDFD (Linux 6.5) names the process that connected,
// even in another pid namespace, and on 6.16+ even once reaped; before 6.16 a reaped peer gives
// EINVAL or ESRCH. Before 6.5 (ENOPROTOOPT), pidfd_open of its pid (ESRCH: reaped), which races
// with the pid's reuse if it already died: then its ledger is drained when the new process exits,
// late, never early. Taken when a ledger arrives, so only sessions that send one hold a pidfd.
struct PeerProcess {
  UniqueFd pidfd;
  bool exited = false;
};

PeerProcess PeerOf(int fd, pid_t pid) {
  constexpr int kSoPeerPidfd = 77;  // SO_PEERPIDFD, <asm-generic/socket.h> (Linux 6.5)
  int pidfd = -1;
  socklen_t len = sizeof(pidfd);
  if (getsockopt(fd, SOL_SOCKET, kSoPeerPidfd, &pidfd, &len) == 0 && pidfd >= 0) {
    return {UniqueFd(pidfd), false};
  }
  if (errno == EINVAL || errno == ESRCH) return {UniqueFd(), true};
  if (errno != ENOPROTOOPT || pid <= 0) return {};  // EMFILE, or a pid we cannot see: unknown
  auto opened = PidfdOpen(pid);
  if (opened) return {std::move(*opened), false};
  return {UniqueFd(), opened.error().err == ESRCH};
}

bool Exited(int pidfd) {
  pollfd p{pidfd, POLLIN, 0};  // a pidfd polls readable once its process has exited (Linux 5.3)
  return poll(&p, 1, 0) == 1;
}

}  // namespace

void Daemon::OnGateLedger(Session* s, Message& m) {
  if (m.fds.size() != 1 || !m.body.empty()) return ReplyError(s, m, EINVAL, "bad gate ledger");
  // Only the table's owner's supervisors write its gates (under --all-users the others cannot,
  // and we raise for them).
  if (s->uid != geteuid()) {
    return spdlog::debug("session {}: ignoring the gate ledger of uid {}", s->id, s->uid);
  }
  if (s->ledger) return spdlog::debug("session {}: ignoring a second gate ledger", s->id);
  auto ledger = GateLedger::Adopt(std::move(m.fds[0]));
  if (!ledger) return ReplyError(s, m, ledger.error().err, "gate ledger: not a sealed memfd");
  auto id = GetFileId(ledger->fd());
  if (!id) return ReplyError(s, m, id.error().err, "gate ledger: fstat");
  // A supervisor that reconnected sends the ledger it already had: its counts are still its own.
  if (orphan_ledgers_.erase(*id) != 0) {
    spdlog::debug("session {}: took over its supervisor's gate ledger", s->id);
  }
  PeerProcess peer = PeerOf(s->fd(), s->pid);
  s->pidfd = std::move(peer.pidfd);
  s->exited = peer.exited;
  s->ledger.emplace(std::move(*ledger));
  s->ledger_id = *id;
}

void Daemon::ReleaseLedger(Session* s) {
  if (!s->ledger) return;
  GateLedger ledger = std::move(*s->ledger);
  s->ledger.reset();
  if (!table_) return;
  // Another session of the same supervisor holds it (it reconnected before we saw this one end).
  for (const auto& [id, other] : sessions_) {
    if (other.get() != s && !other->closed && other->ledger && other->ledger_id == s->ledger_id) {
      return;
    }
  }
  if (!s->exited && !s->pidfd.Valid()) {
    // Cannot tell when it exits: leave its counts raised (accepts on those ports go to the
    // supervisors, slower but exact) rather than risk lowering a count it still needs.
    return spdlog::debug("session {}: supervisor has no pidfd, its gate ledger is not drained",
                         s->id);
  }
  if (!s->exited && !Exited(s->pidfd.Get())) {
    orphan_ledgers_.erase(s->ledger_id);
    orphan_ledgers_.emplace(s->ledger_id, OrphanLedger{std::move(ledger), nullptr});
    return DrainOrphanOnExit(s->ledger_id, std::move(s->pidfd));
  }
  if (uint64_t n = table_->Drain(ledger)) {
    spdlog::debug("session {}: lowered {} accept-gate count(s) it left raised", s->id, n);
  }
}

void Daemon::DrainOrphanOnExit(const FileId& id, UniqueFd pidfd) {
  auto it = orphan_ledgers_.find(id);
  if (it == orphan_ledgers_.end()) return;
  auto watch = std::make_unique<asio::posix::stream_descriptor>(io_);
  boost::system::error_code error;
  watch->assign(pidfd.Get(), error);  // epoll_ctl: ENOSPC (max_user_watches), ENOMEM
  if (error) {
    spdlog::warn("cannot watch a supervisor's exit ({}): its accept gates stay raised",
                 error.message());
    orphan_ledgers_.erase(it);
    return;
  }
  (void)pidfd.Release();  // the watch's now
  // Destroying the watch (the ledger taken over, the daemon stopping) cancels the wait.
  watch->async_wait(asio::posix::stream_descriptor::wait_read,
                    [this, id](const boost::system::error_code& ec) {
                      if (ec) return;
                      auto orphan = orphan_ledgers_.find(id);
                      if (orphan == orphan_ledgers_.end()) return;
                      uint64_t n = table_ ? table_->Drain(orphan->second.ledger) : 0;
                      spdlog::debug("a supervisor exited: lowered {} accept-gate count(s)", n);
                      orphan_ledgers_.erase(orphan);
                    });
  it->second.exit_watch = std::move(watch);
}

}  // namespace slipstream::matcher
