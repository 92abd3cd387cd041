#include "matcher/policy.h"

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
  return l.family() == d.family() &&
         SockAddr(l).ToString() == SockAddr(d).ToString();  // same address and port
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
