// Across network namespaces: the namespaces supervisors run in, their listeners, and pairing by
// TCP sequence numbers (docs/design.md, "Across network namespaces").
//
// Evidence, all from the kernel: the namespace of a socket is its SO_NETNS_COOKIE; the identity
// of a connection is its pair of sequence numbers at byte 0, read with TCP_REPAIR from the two TCP
// sockets we hold (proof of possession). Addresses that supervisors report only let clients decide
// to try; a wrong try costs a relay, never a wrong pair.
#include "matcher/daemon.h"
#include "matcher/daemon_state.h"

#include <linux/netlink.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cstring>
#include <set>

#include <spdlog/spdlog.h>

#include "base/netns.h"
#include "base/socket_info.h"
#include "matcher/policy.h"

namespace slipstream::matcher {
namespace {

// The daemon sends sock_diag requests on the socket a supervisor attaches to kHello and reads the
// replies as the kernel's word. Any other socket (a socketpair end whose other end the sender
// keeps) would let that sender write the "kernel's" answers, or never answer and block the daemon
// in recv() for good: only a NETLINK_SOCK_DIAG socket is taken.
bool IsSockDiagSocket(int fd) {
  return IntSockOpt(fd, SOL_SOCKET, SO_DOMAIN) == AF_NETLINK &&
         IntSockOpt(fd, SOL_SOCKET, SO_PROTOCOL) == NETLINK_SOCK_DIAG;
}

std::vector<SockAddr> AddrsFrom(const NetnsAddrs& body) {
  std::vector<SockAddr> out;
  for (const SockAddr& a : NetnsAddrList(body)) out.push_back(Canonical(a));
  return out;
}

void AddrsTo(const std::vector<SockAddr>& addrs, NetnsAddrs* body) {
  body->count = 0;
  for (const SockAddr& a : addrs) {
    if (body->count >= kMaxNetnsAddrs) break;
    in6_addr& out = body->addrs[body->count];
    std::memset(&out, 0, sizeof(out));
    if (a.family() == AF_INET) {
      out.s6_addr[10] = out.s6_addr[11] = 0xff;
      std::memcpy(&out.s6_addr[12], &reinterpret_cast<const sockaddr_in*>(a.get())->sin_addr, 4);
    } else if (a.family() == AF_INET6) {
      out = reinterpret_cast<const sockaddr_in6*>(a.get())->sin6_addr;
    } else {
      continue;
    }
    ++body->count;
  }
}

bool Established(int fd) {
  tcp_info info{};
  socklen_t len = sizeof(info);
  return getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) == 0 &&
         info.tcpi_state == TCP_ESTABLISHED;
}

// A server's accepted socket, read as the client sees the connection.
std::optional<uint64_t> ClientViewKey(int server_tcp) {
  auto seqs = ReadTcpSeqs(server_tcp);
  if (!seqs) return std::nullopt;
  return TcpSeqs{seqs->receive, seqs->send}.Key();
}

}  // namespace

void Daemon::OnHello(Session* s, Message& m) {
  s->hello = true;
  const auto* addrs = m.As<NetnsAddrs>();
  HelloReplyBody reply{};
  reply.daemon_netns = netns_cookie_;
  // The namespace is the sock_diag socket's, from the kernel. A supervisor could send a socket of
  // another namespace it holds: that only changes which connections its own programs try to switch.
  if (m.fds.size() == 1 && s->netns_cookie == 0 && IsSockDiagSocket(m.fds[0].Get())) {
    auto cookie = NetnsCookie(m.fds[0].Get());
    if (cookie) {
      s->netns_cookie = *cookie;
      auto [entry, fresh] = netns_table_.try_emplace(*cookie);
      NetnsEntry& e = entry->second;
      fresh = fresh || e.sessions == 0;  // kept only for its pairs: announce it again
      ++e.sessions;
      if (!e.diag) {
        e.seq_evidence = CanAdminNetns(m.fds[0].Get());
        e.diag.emplace(SockDiag::FromFd(std::move(m.fds[0])));
      }
      auto reported = addrs != nullptr ? AddrsFrom(*addrs) : std::vector<SockAddr>{};
      bool changed = fresh || reported.size() != e.addrs.size();
      for (size_t i = 0; !changed && i < reported.size(); ++i) {
        changed = reported[i].ToString() != e.addrs[i].ToString();
      }
      e.addrs = std::move(reported);
      if (changed) BroadcastNetns(*cookie, true);
      spdlog::debug("session {}: network namespace {:#x}, {} address(es), sequence numbers {}",
                    s->id, *cookie, e.addrs.size(), e.seq_evidence ? "readable" : "not readable");
    }
  }
  if (auto it = netns_table_.find(s->netns_cookie); it != netns_table_.end()) {
    reply.your_netns = s->netns_cookie;
    reply.seq_evidence = it->second.seq_evidence;
  }
  for (const auto& [cookie, e] : netns_table_) {
    if (cookie != s->netns_cookie && e.sessions > 0) SendNetns(s, cookie, true);
  }
  for (const auto& [ino, l] : remote_listeners_) {
    if (Alive(l.session) != nullptr) SendRemoteListener(s, ino, true);
  }
  (void)Send(s, MsgType::kHelloReply, m.header.seq, m.header.pid, Bytes(reply));
}

void Daemon::SendNetns(Session* to, uint64_t cookie, bool present) {
  NetnsBody body{};
  body.cookie = cookie;
  body.present = present;
  if (auto it = netns_table_.find(cookie); present && it != netns_table_.end()) {
    body.seq_evidence = it->second.seq_evidence;
    AddrsTo(it->second.addrs, &body.addrs);
  }
  (void)Send(to, MsgType::kNetns, 0, 0, Bytes(body));
}

void Daemon::BroadcastNetns(uint64_t cookie, bool present) {
  for (auto& [id, s] : sessions_) {
    if (!s->closed && s->hello && s->netns_cookie != cookie) SendNetns(s.get(), cookie, present);
  }
}

void Daemon::SendRemoteListener(Session* to, uint64_t ino, bool added) {
  RemoteListenerBody body{};
  body.inode = ino;
  body.added = added;
  if (auto it = remote_listeners_.find(ino); it != remote_listeners_.end()) {
    body.netns = it->second.netns;
    std::memcpy(&body.addr, it->second.addr.get(), it->second.addr.len());
    body.addr_len = it->second.addr.len();
    body.v6only = it->second.v6only;
  }
  (void)Send(to, MsgType::kRemoteListener, 0, 0, Bytes(body));
}

void Daemon::BroadcastRemoteListener(uint64_t ino, bool added) {
  PublishTable();  // a preloaded client must ask its supervisor about that port
  for (auto& [id, s] : sessions_) {
    if (!s->closed && s->hello) SendRemoteListener(s.get(), ino, added);
  }
}

void Daemon::RegisterRemoteListener(Session* s, Message& m, uint64_t netns) {
  int fd = m.fds[0].Get();
  // Listed also when we cannot read sequence numbers in its namespace (no CAP_NET_ADMIN over it):
  // kNetns says so, and a client then stays on TCP and its trace names the missing capability.
  if (netns_table_.find(netns) == netns_table_.end()) {
    spdlog::debug("listener in namespace {:#x} not listed: no supervisor there said hello", netns);
    return;
  }
  auto addr = Name(fd, false);
  if (!addr) return;
  uint64_t ino = InodeOf(fd);
  bool v6only = addr->family() == AF_INET6 && IntSockOpt(fd, IPPROTO_IPV6, IPV6_V6ONLY) == 1;
  remote_listeners_[ino] =
      RemoteListenerReg{s->id, *addr, m.header.pid, netns, v6only, Clock::now()};
  ScheduleLiveSweep();
  BroadcastRemoteListener(ino, true);
  spdlog::debug("listener {} in namespace {:#x} registered by pid {}", addr->ToString(), netns,
                m.header.pid);
}

void Daemon::ForgetNetnsOf(Session* s) {
  for (auto it = remote_listeners_.begin(); it != remote_listeners_.end();) {
    if (it->second.session != s->id) {
      ++it;
      continue;
    }
    uint64_t ino = it->first;
    it = remote_listeners_.erase(it);
    BroadcastRemoteListener(ino, false);
  }
  auto it = netns_table_.find(s->netns_cookie);
  if (s->netns_cookie == 0 || it == netns_table_.end()) return;
  if (--it->second.sessions > 0) return;
  BroadcastNetns(s->netns_cookie, false);
  PruneNetns();
  ScheduleLiveSweep();
}

void Daemon::PruneNetns() {
  // A namespace without supervisors is kept while pairs made there live: its sock_diag socket
  // tells when their ends are closed (SweepLive), and where unclaimed ones went.
  std::set<uint64_t> used;
  for (const auto& [key, p] : pending_) {
    used.insert(p.unix_netns);
    used.insert(p.client_netns);
  }
  for (const auto& [ino, l] : live_) used.insert(l.unix_netns);
  std::erase_if(netns_table_, [&used](const auto& entry) {
    return entry.second.sessions == 0 && used.count(entry.first) == 0;
  });
}

void Daemon::RetireRemoteListeners(Clock::time_point now) {
  for (auto it = remote_listeners_.begin(); it != remote_listeners_.end();) {
    auto ns = netns_table_.find(it->second.netns);
    bool gone = ns == netns_table_.end() || !ns->second.diag;
    if (!gone && now - it->second.since >= std::chrono::seconds(2)) {
      auto found = ns->second.diag->TcpListeners(it->second.addr.port());
      if (!found) {
        ++it;  // cannot tell now
        continue;
      }
      gone = true;
      for (const auto& f : *found) gone = gone && f.inode != it->first;
    }
    if (!gone) {
      ++it;
      continue;
    }
    uint64_t ino = it->first;
    it = remote_listeners_.erase(it);
    BroadcastRemoteListener(ino, false);
  }
}

void Daemon::OnConnectedBySeq(Session* s, Message& m, uint64_t client_end_ino) {
  int tcp = m.fds[0].Get();
  if (auto intent = intents_.find(InodeOf(tcp));
      intent != intents_.end() && intent->second.session == s->id) {
    intents_.erase(intent);
  }
  auto relay = [&](const char* why) {
    spdlog::debug("relay (client end {}): {}", client_end_ino, why);
    InodeBody verdict{InodeOf(m.fds[1].Get())};
    (void)Send(s, MsgType::kRelay, 0, m.header.pid, Bytes(verdict));
    ++relays_total_;
    AnswerSeqClaimsIfNoIntents();
  };
  auto local = Name(tcp, false), remote = Name(tcp, true);
  if (!IsTcpSocket(tcp) || !local || !remote || !Established(tcp)) {
    return relay("not an established TCP connection");
  }
  auto seqs = ReadTcpSeqs(tcp);
  if (!seqs) return relay("cannot read its sequence numbers (no CAP_NET_ADMIN over its namespace)");
  ConnKey key = ConnKey::BySeq(seqs->Key());
  if (auto dup = pending_.find(key); dup != pending_.end()) {
    // Two connections with the same sequence numbers: no evidence tells them apart. Neither pairs.
    // The earlier one is relayed too unless its end was already handed to a claimer (then that
    // claimer reports on it: the end may already be in its program).
    spdlog::warn("two connections with {}: not paired", key.ToString());
    if (dup->second.handed_to == 0) Resolve(dup, /*claimed=*/false);
    return relay("ambiguous sequence numbers");
  }
  Pending p;
  p.server_end = std::move(m.fds[1]);
  p.client_tcp = std::move(m.fds[0]);
  p.owner = s->id;
  p.owner_pid = s->pid;
  p.client_pid = m.header.pid;
  p.client_end_ino = client_end_ino;
  p.server_end_ino = InodeOf(p.server_end.Get());
  p.server_local = *remote;
  p.server_remote = *local;
  p.client_netns = NetnsCookie(p.client_tcp.Get()).value_or(0);
  p.unix_netns = NetnsCookie(p.server_end.Get()).value_or(0);
  auto it = pending_.insert_or_assign(key, std::move(p)).first;
  spdlog::debug("pending {} ({} -> {}, namespace {:#x})", key.ToString(), local->ToString(),
                remote->ToString(), it->second.client_netns);
  // Server ends are never pushed across namespaces: the accepting supervisor claims, and the
  // claim's own socket is the evidence. A claim that overtook this message is waiting: answer it.
  for (auto d = deferred_.begin(); d != deferred_.end(); ++d) {
    if (!(d->key == key)) continue;
    Deferred found = *d;
    deferred_.erase(d);
    if (Session* claimer = Alive(found.session)) {
      it->second.server_pid = found.pid;
      it->second.server_netns = found.claimed_netns;
      it->second.claimed_tcp_ino = found.claimed_ino;
      HandOver(claimer, found.seq, it);
    }
    break;
  }
  AnswerSeqClaimsIfNoIntents();
  ScheduleSweep();
}

bool Daemon::AnySeqIntents(uint64_t except_session) const {
  for (const auto& [ino, intent] : intents_) {
    if (intent.by_seq && intent.session != except_session) return true;
  }
  return false;
}

bool Daemon::AnySeqCandidates() const {
  for (const auto& [key, p] : pending_) {
    if (key.by_seq()) return true;
  }
  return AnySeqIntents(0);
}

void Daemon::AnswerSeqClaimsIfNoIntents() {
  if (draining_ || AnySeqIntents(0)) return;
  for (auto d = deferred_.begin(); d != deferred_.end();) {
    d = d->key.by_seq() ? RefuseDeferred(d) : d + 1;
  }
}

bool Daemon::ClaimBySeq(Session* s, Message& m, int tcp) {
  // A claim handled while DrainAll reads the sessions (it was queued behind another claim) has
  // not seen every session's messages yet: a kIntent may still be unread.
  bool drained = !draining_;
  if (drained && !AnySeqCandidates()) return false;
  // The accepted socket is read before its program has it (the claim holds its accept()), so
  // nothing writes to it meanwhile.
  auto key_seqs = ClientViewKey(tcp);
  if (!key_seqs) {
    spdlog::debug("claim by pid {}: cannot read its sequence numbers", m.header.pid);
    return false;
  }
  ConnKey key = ConnKey::BySeq(*key_seqs);
  auto answer = [&](ClaimResult r) {
    AnswerClaim(s, m.header.seq, m.header.pid, r);
    return true;
  };
  if (auto it = pending_.find(key); it != pending_.end()) {
    if (it->second.handed_to == s->id) return answer(ClaimResult::kPushedToYou);
    if (it->second.handed_to != 0) return answer(ClaimResult::kNo);
    it->second.server_pid = m.header.pid;
    it->second.server_netns = NetnsCookie(tcp).value_or(0);
    it->second.claimed_tcp_ino = InodeOf(tcp);
    spdlog::debug("claim by pid {} paired {} (namespaces {:#x} -> {:#x})", m.header.pid,
                  key.ToString(), it->second.client_netns, it->second.server_netns);
    if (!HandOver(s, m.header.seq, it)) answer(ClaimResult::kNo);
    return true;
  }
  // A supervised client whose connection this could be has announced it (kIntent, sent before
  // its SYN, and read by DrainAll) but not yet reported it connected: wait for its kConnected.
  // Its socket is not read meanwhile (its program still holds it). Not for the claimer's own
  // clients: it cannot send while it waits for this answer.
  if (drained && !AnySeqIntents(s->id)) return false;
  deferred_.push_back(Deferred{s->id, m.header.seq, m.header.pid, key, Clock::now(), InodeOf(tcp),
                               NetnsCookie(tcp).value_or(0)});
  ScheduleSweep();
  return true;
}

bool Daemon::ShouldRelayBySeq(Pending& p, Clock::time_point now) {
  // Where did the server side go? Look in every namespace we can see. Queued in a listener
  // somewhere: wait for its claim. Accepted everywhere it appears, for longer than the grace, and
  // not claimed: someone unsupervised took it. Nowhere: it went to a namespace without
  // supervisors (the client's guess was wrong), or it is gone: relay now.
  bool seen = false, accepted = false;
  std::vector<SockDiag*> diags{&diag_};
  for (auto& [cookie, e] : netns_table_) {
    if (e.diag && cookie != netns_cookie_) diags.push_back(&*e.diag);
  }
  for (SockDiag* diag : diags) {
    auto server = diag->LookupTcp(p.server_local, p.server_remote);
    if (!server) {
      if (server.error().err != ENOENT) return false;  // cannot tell now
      continue;
    }
    if (server->inode == 0) {
      if (server->state == TCP_ESTABLISHED || server->state == TCP_SYN_RECV) return false;
      continue;  // an orphan: closed by whoever accepted it
    }
    seen = accepted = true;
  }
  if (!seen) return true;
  if (!accepted) return true;
  if (!p.accepted_since) p.accepted_since = now;
  return now - *p.accepted_since >= config_.claim_grace;
}

}  // namespace slipstream::matcher
