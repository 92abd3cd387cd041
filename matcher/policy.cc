#include "matcher/policy.h"

#include <arpa/inet.h>

#include <cstring>

#include "matcher/endpoint.h"

namespace slipstream::matcher {

bool ListenerCanReceive(const TcpSocketInfo& listener, const SockAddr& dest) {
  if (listener.local.port() != dest.port()) return false;
  SockAddr l = Canonical(listener.local);
  SockAddr d = Canonical(dest);
  if (l.IsAny()) {
    if (l.family() == AF_INET6) return d.family() == AF_INET6 || !listener.v6only;
    return d.family() == AF_INET;
  }
  return SameEndpoint(l, d);
}

namespace {

SockAddr WithAddress(const SockAddr& dest, const in_addr& v4) {
  SockAddr out = dest;
  if (dest.family() == AF_INET) {
    reinterpret_cast<sockaddr_in*>(out.mutable_get())->sin_addr = v4;
  } else {
    in6_addr& a6 = reinterpret_cast<sockaddr_in6*>(out.mutable_get())->sin6_addr;
    std::memset(&a6, 0, sizeof(a6));
    a6.s6_addr[10] = a6.s6_addr[11] = 0xff;
    std::memcpy(&a6.s6_addr[12], &v4, sizeof(v4));
  }
  return out;
}

// The bound IPv4 address of `bound` (plain or v4-mapped), if it is a specific one.
std::optional<in_addr> BoundV4(const SockAddr* bound) {
  if (bound == nullptr || !bound->IsInet() || bound->IsAny()) return std::nullopt;
  if (bound->family() == AF_INET)
    return reinterpret_cast<const sockaddr_in*>(bound->get())->sin_addr;
  auto mapped = bound->MappedV4();
  if (mapped && mapped->s_addr == INADDR_ANY) return std::nullopt;
  return mapped;
}

}  // namespace

SockAddr KernelDestination(const SockAddr& dest, const SockAddr* bound) {
  if (!dest.IsInet()) return dest;
  in_addr loopback{htonl(INADDR_LOOPBACK)};
  auto v4 = dest.family() == AF_INET
                ? std::optional<in_addr>(reinterpret_cast<const sockaddr_in*>(dest.get())->sin_addr)
                : dest.MappedV4();
  if (v4) {
    if (v4->s_addr != INADDR_ANY) return dest;
    return WithAddress(dest, BoundV4(bound).value_or(loopback));
  }
  if (!dest.IsAny()) return dest;
  // IPv6 ::. A socket bound to a v4-mapped address connects over IPv4 to 127.0.0.1.
  if (bound != nullptr && bound->MappedV4()) return WithAddress(dest, loopback);
  SockAddr out = dest;
  reinterpret_cast<sockaddr_in6*>(out.mutable_get())->sin6_addr = in6addr_loopback;
  return out;
}

QueryReason DecideConnect(const std::vector<TcpSocketInfo>& listeners, const SockAddr& dest,
                          const std::function<bool(uint64_t inode)>& is_supervised) {
  bool any = false;
  for (const auto& l : listeners) {
    if (!ListenerCanReceive(l, dest)) continue;
    any = true;
    if (!is_supervised(l.inode)) return QueryReason::kUnsupervisedListener;
  }
  return any ? QueryReason::kSupervised : QueryReason::kNoListener;
}

}  // namespace slipstream::matcher

namespace slipstream::matcher {
namespace {

bool SameHost(const SockAddr& a, const SockAddr& b) {
  SockAddr ca = Canonical(a), cb = Canonical(b);
  if (ca.family() != cb.family()) return false;
  if (ca.family() == AF_INET) {
    return reinterpret_cast<const sockaddr_in*>(ca.get())->sin_addr.s_addr ==
           reinterpret_cast<const sockaddr_in*>(cb.get())->sin_addr.s_addr;
  }
  if (ca.family() != AF_INET6) return false;
  return std::memcmp(&reinterpret_cast<const sockaddr_in6*>(ca.get())->sin6_addr,
                     &reinterpret_cast<const sockaddr_in6*>(cb.get())->sin6_addr,
                     sizeof(in6_addr)) == 0;
}

bool HasAddress(const NetnsView& view, const SockAddr& addr) {
  for (const auto& a : view.addrs) {
    if (SameHost(a, addr)) return true;
  }
  return false;
}

}  // namespace

const char* CrossReasonText(CrossReason reason) {
  switch (reason) {
    case CrossReason::kSupervised:
      return "a supervised listener in another network namespace";
    case CrossReason::kNoEvidenceHere:
      return "slipstreamd cannot read TCP sequence numbers in this network namespace (no "
             "CAP_NET_ADMIN over it)";
    case CrossReason::kNoEvidenceThere:
      return "slipstreamd cannot read TCP sequence numbers in the listener's network namespace "
             "(no CAP_NET_ADMIN over it)";
    case CrossReason::kNoListener:
      return "not local, and no supervised listener in another network namespace has that "
             "address and port";
  }
  return "?";
}

CrossReason DecideCrossNetns(uint64_t own_netns, bool own_evidence,
                             const std::map<uint64_t, NetnsView>& namespaces,
                             const std::vector<RemoteListenerView>& listeners, const SockAddr& dest,
                             std::vector<uint64_t>* netns) {
  bool no_evidence_there = false;
  for (const auto& l : listeners) {
    if (l.netns == own_netns || l.addr.port() != dest.port()) continue;
    auto view = namespaces.find(l.netns);
    if (view == namespaces.end()) continue;
    TcpSocketInfo info;
    info.local = l.addr;
    info.v6only = l.v6only;
    if (!ListenerCanReceive(info, dest)) continue;
    if (Canonical(l.addr).IsAny() && !HasAddress(view->second, dest)) continue;
    if (!view->second.seq_evidence) {
      no_evidence_there = true;
      continue;
    }
    if (netns != nullptr) netns->push_back(l.netns);
  }
  if (netns != nullptr && !netns->empty()) {
    return own_evidence ? CrossReason::kSupervised : CrossReason::kNoEvidenceHere;
  }
  return no_evidence_there ? CrossReason::kNoEvidenceThere : CrossReason::kNoListener;
}

bool InOtherNetns(uint64_t own_netns, const std::map<uint64_t, NetnsView>& namespaces,
                  const SockAddr& addr) {
  for (const auto& [cookie, view] : namespaces) {
    if (cookie != own_netns && view.seq_evidence && HasAddress(view, addr)) return true;
  }
  return false;
}

AcceptDecision DecideAccept(const AcceptFacts& facts) {
  // A pushed end needs no daemon: one pushed before the daemon died is installed as usual.
  if (facts.pushed) return {AcceptAction::kTakePushed, "its end was pushed ahead of the accept"};
  if (!facts.peer_on_this_host) return {AcceptAction::kStayTcp, "the peer is not on this host"};
  if (facts.switching && *facts.switching == 0) {
    return {AcceptAction::kStayTcp, "no switch to this port is in flight"};
  }
  if (!facts.daemon_connected) return {AcceptAction::kStayTcp, "no slipstreamd"};
  return {AcceptAction::kClaim, "a switch to this port is in flight"};
}

}  // namespace slipstream::matcher
