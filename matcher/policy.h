// Matcher policy, kept pure: which listeners could take a connection, and may it be switched?
#ifndef SLIPSTREAM_MATCHER_POLICY_H_
#define SLIPSTREAM_MATCHER_POLICY_H_

#include <functional>
#include <vector>

#include "base/sock_diag.h"
#include "matcher/protocol.h"

namespace slipstream::matcher {

// Could `listener` receive a connection to `dest`? Same port and the same address, or a wildcard
// of a family that accepts it (an IPv6 wildcard takes IPv4 unless V6ONLY). Errs on the side of
// "yes": an extra candidate can only prevent a switch, never cause a wrong one.
bool ListenerCanReceive(const TcpSocketInfo& listener, const SockAddr& dest);

// Switch only when at least one listener can take the connection and every one that can is held
// by a supervised process (`is_supervised(inode)`): then whoever accepts is supervised and claims
// the other end (SO_REUSEPORT groups included, since each member is listed separately).
QueryReason DecideConnect(const std::vector<TcpSocketInfo>& listeners, const SockAddr& dest,
                          const std::function<bool(uint64_t inode)>& is_supervised);

}  // namespace slipstream::matcher

#endif  // SLIPSTREAM_MATCHER_POLICY_H_
