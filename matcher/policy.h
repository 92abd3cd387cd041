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

// The address a TCP connect() to `dest` really reaches. Linux sends a connect to the unspecified
// address to this host: IPv4 0.0.0.0 (and v4-mapped ::ffff:0.0.0.0) goes to the socket's bound
// address, or 127.0.0.1 when it is unbound (ip_route_output_key_hash_rcu, net/ipv4/route.c); IPv6
// :: goes to ::1, or ::ffff:127.0.0.1 when the socket is bound to a v4-mapped address
// (tcp_v6_connect, net/ipv6/tcp_ipv6.c). `bound` is the socket's local address (getsockname), or
// nullptr when unknown. Any other destination is returned unchanged.
SockAddr KernelDestination(const SockAddr& dest, const SockAddr* bound);

// Switch only when at least one listener can take the connection and every one that can is held
// by a supervised process (`is_supervised(inode)`): then whoever accepts is supervised and claims
// the other end (SO_REUSEPORT groups included, since each member is listed separately).
QueryReason DecideConnect(const std::vector<TcpSocketInfo>& listeners, const SockAddr& dest,
                          const std::function<bool(uint64_t inode)>& is_supervised);

}  // namespace slipstream::matcher

#endif  // SLIPSTREAM_MATCHER_POLICY_H_
