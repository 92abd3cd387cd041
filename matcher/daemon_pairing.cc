// Pairing: listeners, intents, connected pairs, push or claim, and the verdicts.
#include "matcher/daemon.h"
#include "matcher/daemon_state.h"

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

#include "base/netns.h"
#include "base/proc_scan.h"
#include "base/socket_info.h"
#include "base/syscalls.h"
#include "matcher/paths.h"
#include "matcher/policy.h"

namespace slipstream::matcher {

Daemon::Session* Daemon::Alive(uint64_t session) {
  auto it = sessions_.find(session);
  return it == sessions_.end() || it->second->closed ? nullptr : it->second.get();
}

void Daemon::AnswerClaim(Session* to, uint64_t seq, int32_t pid, ClaimResult result) {
  ClaimReplyBody reply{static_cast<uint8_t>(result)};
  (void)Send(to, MsgType::kClaimReply, seq, pid, Bytes(reply));
}

std::vector<Daemon::Deferred>::iterator Daemon::RefuseDeferred(std::vector<Deferred>::iterator d) {
  if (Session* claimer = Alive(d->session)) AnswerClaim(claimer, d->seq, d->pid, ClaimResult::kNo);
  return deferred_.erase(d);
}

void Daemon::SendListener(Session* to, uint64_t ino, bool added) {
  ListenerBody body{ino, static_cast<uint8_t>(added)};
  (void)Send(to, MsgType::kListener, 0, 0, Bytes(body));
}

void Daemon::Broadcast(uint64_t ino, bool added) {
  // listeners_ has just changed. The table first: a registration's listen() returns after this,
  // and the preload library reads only the table.
  PublishTable();
  for (auto& [id, s] : sessions_) {
    if (!s->closed) SendListener(s.get(), ino, added);
  }
}

void Daemon::OnRegisterListener(Session* s, Message& m) {
  if (m.fds.size() != 1 || !m.body.empty()) return ReplyError(s, m, EINVAL, "bad register");
  int fd = m.fds[0].Get();
  // A listening socket, or one bound and about to listen (registered first so that no connection
  // can reach it before every supervisor knows it is supervised).
  auto addr = Name(fd, false);
  if (!IsTcpSocket(fd) || !addr || addr->port() == 0 || Name(fd, true)) {
    return ReplyError(s, m, EINVAL, "not a bound, unconnected TCP socket");
  }
  // Pairing by 4-tuple happens only in the daemon's own network namespace (sock_diag looks
  // there); a listener elsewhere is paired by sequence numbers (daemon_netns.cc).
  auto cookie = NetnsCookie(fd);
  if (cookie && *cookie != netns_cookie_) {
    RegisterRemoteListener(s, m, *cookie);
  } else if (SocketNetns(fd, s->netns) == netns_) {
    uint64_t ino = InodeOf(fd);
    listeners_[ino] = ListenerReg{s->id, *addr, m.header.pid, Clock::now()};
    ScheduleLiveSweep();
    // Every supervisor decides locally whether a connect may switch: tell them all, before the
    // registering supervisor lets its program's listen() return.
    Broadcast(ino, true);
    spdlog::debug("listener {} registered by pid {}", addr->ToString(), m.header.pid);
    // Clients of other namespaces may reach it too (paired by sequence numbers).
    if (cookie) RegisterRemoteListener(s, m, *cookie);
  }
  (void)Send(s, MsgType::kRegistered, m.header.seq, m.header.pid, {});
}

void Daemon::PublishTable() {
  if (!table_) return;
  ListenerTable::Ports ports{};
  for (const auto& [listener_ino, reg] : listeners_) ListenerTable::Mark(ports, reg.addr.port());
  for (const auto& [listener_ino, reg] : remote_listeners_) {
    ListenerTable::Mark(ports, reg.addr.port());
  }
  table_->Publish(ports);
}

void Daemon::OnIntent(Session* s, Message& m) {
  const auto* body = m.As<IntentBody>();
  if (m.fds.size() != 1 || (!m.body.empty() && body == nullptr) || !IsTcpSocket(m.fds[0].Get())) {
    return ReplyError(s, m, EINVAL, "intent needs a TCP socket");
  }
  Intent& intent = intents_[InodeOf(m.fds[0].Get())];
  intent = Intent{s->id, Clock::now(), body != nullptr && body->by_seq, {}};
  ScheduleSweep();
  if (body == nullptr || !body->raise_gate) return;
  // Before its connect, so that a server accepting in-process offers the connection to its
  // supervisor (preload_abi.h). The port is the message's word, not the kernel's (the socket is
  // not connected yet): a lie raises a gate of some port for at most the intent's life, which
  // costs that port's in-process accepts a trapped claim each, nothing else.
  if (gate_) intent.switching = gate_->Raise(AcceptGate::Kind::kSwitching, body->port);
  (void)Send(s, MsgType::kIntentReply, m.header.seq, m.header.pid, {});
}

void Daemon::OnAbort(Session* s, Message& m) {
  const auto* body = m.As<InodeBody>();
  if (body == nullptr || !m.fds.empty()) return ReplyError(s, m, EINVAL, "bad abort");
  auto it = intents_.find(body->inode);
  if (it == intents_.end() || it->second.session != s->id) return;
  intents_.erase(it);
  AnswerSeqClaimsIfNoIntents();
  // A claim waiting for this connection's kConnected will not get it: answer it now.
  for (auto d = deferred_.begin(); d != deferred_.end();) {
    bool waits_for_it = false;
    if (!d->key.by_seq()) {
      auto peer = diag_.LookupTcp(d->key.remote, d->key.local);
      waits_for_it = peer && peer->inode == body->inode;
    }
    d = waits_for_it ? RefuseDeferred(d) : d + 1;
  }
}

void Daemon::OnConnected(Session* s, Message& m) {
  const auto* body = m.As<ConnectedBody>();
  if (body == nullptr || m.fds.size() != 2 || !IsUnixStreamSocket(m.fds[1].Get())) {
    return ReplyError(s, m, EINVAL, "connected needs a TCP socket and an AF_UNIX stream end");
  }
  int tcp = m.fds[0].Get();
  // Another namespace, on either side: the 4-tuple is not unique there, sequence numbers are.
  auto cookie = NetnsCookie(tcp);
  if (body->by_seq || (cookie && *cookie != netns_cookie_ && IsTcpSocket(tcp))) {
    return OnConnectedBySeq(s, m, body->inode);
  }
  // The fd is the proof of possession; an intent only lets an early claim wait for this message.
  // A gate raised for the intent stays up until the pending pair's own is (end of this function).
  AcceptGate::Count intent_gate;
  if (auto intent = intents_.find(InodeOf(tcp));
      intent != intents_.end() && intent->second.session == s->id) {
    intent_gate = std::move(intent->second.switching);
    intents_.erase(intent);
  }
  auto local = Name(tcp, false), remote = Name(tcp, true);
  if (!IsTcpSocket(tcp) || !local || !remote) {
    // Cannot be paired (reset meanwhile, not TCP): the client's program already holds its end, so
    // its supervisor must relay, which will find out what became of the TCP connection.
    InodeBody verdict{InodeOf(m.fds[1].Get())};
    (void)Send(s, MsgType::kRelay, 0, m.header.pid, Bytes(verdict));
    ++relays_total_;
    return;
  }
  ConnKey key{netns_, *remote, *local};  // as the accepting side will see it
  Pending p;
  p.server_local = *remote;
  p.server_remote = *local;
  p.client_netns = p.server_netns = netns_cookie_;
  p.server_end = std::move(m.fds[1]);
  p.client_tcp = std::move(m.fds[0]);
  p.owner = s->id;
  p.owner_pid = s->pid;
  p.client_pid = m.header.pid;
  p.client_end_ino = body->inode;
  p.server_end_ino = InodeOf(p.server_end.Get());
  auto it = pending_.insert_or_assign(key, std::move(p)).first;
  if (gate_) it->second.switching = gate_->Raise(AcceptGate::Kind::kSwitching, key.local.port());

  // The client's supervisor decided from the kernel's listeners (sock_diag) and our list of
  // supervised ones. Whose registered listeners can take the connection? If that was wrong (an
  // unsupervised process accepts it), the sweeps below notice and the client's supervisor relays.
  // Our own namespace's cookie settles it (Linux 5.14); otherwise ask for the namespace itself,
  // an ioctl, an fstat and a close more per connection.
  bool ours = cookie && *cookie == netns_cookie_;
  if (!ours && SocketNetns(tcp, s->netns) != netns_) return Resolve(it, /*claimed=*/false);
  std::set<uint64_t> owners;
  for (const auto& [ino, l] : listeners_) {
    TcpSocketInfo info;
    info.local = l.addr;
    if (ListenerCanReceive(info, key.local) && Alive(l.session) != nullptr)
      owners.insert(l.session);
  }
  if (owners.empty()) return Resolve(it, /*claimed=*/false);
  spdlog::debug("pending {}", key.ToString());
  // One supervisor holds every listener that can take the connection: give it the end now, so that
  // its accept() needs no round trip to us.
  uint64_t push_to = owners.size() == 1 ? *owners.begin() : 0;
  if (body->commit_follows != 0) {
    it->second.committed = false;
    it->second.push_to = push_to;
  } else {
    OfferPending(it, push_to);
  }
  ScheduleSweep();
}

void Daemon::OfferPending(std::map<ConnKey, Pending>::iterator it, uint64_t push_to) {
  // A claim that overtook the announcement (or the commit) is waiting: answer it.
  for (auto d = deferred_.begin(); d != deferred_.end(); ++d) {
    if (d->key == it->first) {
      Deferred found = *d;
      deferred_.erase(d);
      if (Session* claimer = Alive(found.session)) {
        it->second.server_pid = found.pid;
        if (HandOver(claimer, found.seq, it)) return;
      }
      break;
    }
  }
  if (Session* owner = push_to != 0 ? Alive(push_to) : nullptr) HandOver(owner, 0, it);
}

void Daemon::OnCommitted(Session* s, Message& m) {
  const auto* body = m.As<InodeBody>();
  if (body == nullptr || !m.fds.empty()) return ReplyError(s, m, EINVAL, "bad committed");
  for (auto it = pending_.begin(); it != pending_.end(); ++it) {
    Pending& p = it->second;
    if (p.owner == s->id && p.client_end_ino == body->inode && !p.committed) {
      p.committed = true;
      return OfferPending(it, p.push_to);
    }
  }
}

void Daemon::SettleUncommitted(Session* s) {
  std::vector<uint64_t> ends;
  for (const auto& [key, p] : pending_) {
    if (p.owner == s->id && !p.committed) ends.push_back(p.client_end_ino);
  }
  if (ends.empty()) return;
  auto holders = FindSocketHolders(ends);
  for (auto it = pending_.begin(); it != pending_.end();) {
    auto next = std::next(it);
    Pending& p = it->second;
    if (p.owner == s->id && !p.committed) {
      pid_t exclude[] = {p.owner_pid};
      if (HeldByOthers(holders, p.client_end_ino, exclude)) {
        p.committed = true;  // the end reached the program before its supervisor died
        OfferPending(it, p.push_to);
      } else {
        // The shepherd answered the connect: the program kept its TCP socket. So does the
        // server: its claims are answered no, and the end it never got closes here.
        spdlog::debug("{}: the client's supervisor died before its program got the end: TCP",
                      it->first.ToString());
        for (auto d = deferred_.begin(); d != deferred_.end();) {
          d = d->key == it->first ? RefuseDeferred(d) : d + 1;
        }
        pending_.erase(it);
      }
    }
    it = next;
  }
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
    live.client_tcp = std::move(p.client_tcp);
    live.server_tcp = std::move(p.server_tcp);
    live.client_pid = p.client_pid;
    live.server_pid = p.server_pid;
    live.client = p.server_remote;
    live.server = p.server_local;
    live.client_netns = p.client_netns;
    live.server_netns = p.server_netns;
    live.by_seq = it->first.by_seq();
    live.unix_netns = p.unix_netns;
    live.server_session = p.handed_to;
    live.client_end_ino = p.client_end_ino;
    live.server_end_ino = p.server_end_ino;
    live.since = std::chrono::system_clock::now();
    live_[p.server_end_ino] = std::move(live);
    ScheduleLiveSweep();
    ++pairs_total_;
    spdlog::debug("paired {}", it->first.ToString());
  } else {
    ++relays_total_;
    spdlog::debug("relay {}", it->first.ToString());
  }
  pending_.erase(it);
}

void Daemon::OnClaim(Session* s, Message& m) {
  ++claims_total_;
  if (m.fds.size() != 1 || !m.body.empty()) return ReplyError(s, m, EINVAL, "bad claim");
  int tcp = m.fds[0].Get();
  auto local = Name(tcp, false), remote = Name(tcp, true);
  if (!IsTcpSocket(tcp) || !local || !remote)
    return ReplyError(s, m, EINVAL, "claim needs a TCP connection");
  ConnKey key{netns_, *local, *remote};
  auto cookie = NetnsCookie(tcp);
  bool here = !cookie || *cookie == netns_cookie_;  // the 4-tuple is unique only in our namespace
  auto it = here ? pending_.find(key) : pending_.end();
  if (it == pending_.end()) {
    // The client's supervisor may have sent kConnected just now: read what is queued first.
    DrainAll();
    if (s->closed) return;
    if (here) it = pending_.find(key);
  }
  if (it == pending_.end() && ClaimBySeq(s, m, tcp)) return;
  auto answer = [&](ClaimResult r) { AnswerClaim(s, m.header.seq, m.header.pid, r); };
  if (!here) return answer(ClaimResult::kNo);
  if (it != pending_.end()) {
    if (it->second.handed_to == s->id) return answer(ClaimResult::kPushedToYou);
    if (it->second.handed_to != 0) return answer(ClaimResult::kNo);
    if (!it->second.committed) {  // answered at the commit (OfferPending)
      deferred_.push_back(Deferred{s->id, m.header.seq, m.header.pid, key, Clock::now(), 0, 0});
      ScheduleSweep();
      return;
    }
    it->second.server_pid = m.header.pid;
    if (!HandOver(s, m.header.seq, it)) answer(ClaimResult::kNo);
    return;
  }
  // Still nothing. If the peer socket belongs to a client that announced its connect, its
  // kConnected is on the way: answer when it arrives. Otherwise the client is not supervised:
  // answer now, so an unsupervised client never waits. Nor does a supervisor claiming its own
  // client's connection: it cannot send kConnected while it waits for this answer.
  auto peer = diag_.LookupTcp(*remote, *local);
  auto intent = peer ? intents_.find(peer->inode) : intents_.end();
  if (intent != intents_.end() && intent->second.session != s->id) {
    deferred_.push_back(Deferred{s->id, m.header.seq, m.header.pid, key, Clock::now(), 0, 0});
    ScheduleSweep();
    return;
  }
  answer(ClaimResult::kNo);
}

void Daemon::OnInstalled(Session* s, Message& m) {
  const auto* body = m.As<InodeBody>();
  if (body == nullptr || m.fds.size() > 1) return ReplyError(s, m, EINVAL, "bad installed");
  auto it = FindByEnd(body->inode);
  if (it == pending_.end() || it->second.handed_to != s->id) return;
  it->second.server_pid = m.header.pid;
  // The accepted TCP socket, if it is the one of this pair, is kept for kAdopt.
  if (m.fds.size() == 1 && IsTcpSocket(m.fds[0].Get())) {
    auto local = Name(m.fds[0].Get(), false), remote = Name(m.fds[0].Get(), true);
    bool same = it->first.by_seq()
                    ? InodeOf(m.fds[0].Get()) == it->second.claimed_tcp_ino
                    : local && remote && ConnKey{netns_, *local, *remote} == it->first;
    if (same) {
      it->second.server_tcp = std::move(m.fds[0]);
    }
  }
  Resolve(it, /*claimed=*/true);
}

void Daemon::OnAdopt(Session* s, Message& m) {
  const auto* body = m.As<InodeBody>();
  // Proof of possession: the end itself comes with the request. Its retained TCP socket is the
  // connection's identity (getpeername, SO_LINGER...); a session that only knows the end's inode
  // (from --status, /proc/net/unix) must not get another pair's TCP socket.
  if (body == nullptr || m.fds.size() != 1 || !IsUnixStreamSocket(m.fds[0].Get()) ||
      InodeOf(m.fds[0].Get()) != body->inode) {
    return ReplyError(s, m, EINVAL, "adopt needs the AF_UNIX end");
  }
  AdoptReplyBody reply{0, 0};
  int fd = -1;
  for (const auto& [key, p] : pending_) {  // passed on before the verdict
    if (p.client_end_ino == body->inode && p.client_tcp) {
      reply = {1, 1};
      fd = p.client_tcp.Get();
      break;
    }
    // An accepting program that hands the connection to another process at once (SCM_RIGHTS to a
    // worker) can be quicker than its supervisor's kInstalled: "no" would be remembered by the
    // worker's supervisor, and every later call answered as AF_UNIX (a newcomer saw it in 5 of
    // 13 runs).
    if (p.server_end_ino == body->inode) {
      reply = {static_cast<uint8_t>(AdoptResult::kInFlight), 0};
      break;
    }
  }
  for (const auto& [ino, live] : live_) {
    if (fd >= 0) break;
    if (live.client_end_ino == body->inode && live.client_tcp) {
      reply = {1, 1};
      fd = live.client_tcp.Get();
    } else if (live.server_end_ino == body->inode && live.server_tcp) {
      reply = {1, 0};
      fd = live.server_tcp.Get();
    }
    if (fd >= 0) break;
  }
  std::span<const int> fds = fd >= 0 ? std::span<const int>(&fd, 1) : std::span<const int>();
  (void)Send(s, MsgType::kAdoptReply, m.header.seq, m.header.pid, Bytes(reply), fds);
}

void Daemon::OnPeerPid(Session* s, Message& m) {
  const auto* body = m.As<InodeBody>();
  if (body == nullptr) return ReplyError(s, m, EINVAL, "bad peer-pid");
  PeerPidBody reply{0};
  for (const auto& [ino, live] : live_) {
    if (live.client_end_ino == body->inode) reply.pid = live.server_pid;
    if (live.server_end_ino == body->inode) reply.pid = live.client_pid;
    if (reply.pid != 0) break;
  }
  // Only the inode proves nothing (any user reads it in /proc/net/unix): a pid of another user
  // stays hidden, as in the status. Its supervisor could not take the end from there anyway.
  reply.pid = ShownPid(s->id, reply.pid);
  (void)Send(s, MsgType::kPeerPidReply, m.header.seq, m.header.pid, Bytes(reply));
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
  // Bounded too (a session flooding while a claim waits); far above what a supervisor queues
  // (test_scale: 1000 threads' intents).
  constexpr int kDrainBudget = 8192;
  for (Session* s : all) {
    if (!s->closed) (void)Read(s, kDrainBudget);
  }
  draining_ = false;
  // Claims by sequence numbers that were handled during the drain waited for it.
  AnswerSeqClaimsIfNoIntents();
}

}  // namespace slipstream::matcher
