// Matcher policy, kept pure: which listeners could take a connection, and may it be switched?
#ifndef SLIPSTREAM_MATCHER_POLICY_H_
#define SLIPSTREAM_MATCHER_POLICY_H_

#include <functional>
#include <map>
#include <optional>
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

// Accept: the server's side of the same question, asked for each connection a supervised program
// accepts. What the supervisor gathered, in the order it is cheapest to learn:
struct AcceptFacts {
  // The daemon pushed an end for exactly this connection (same local and remote address) ahead
  // of the accept: it is this connection's peer's, whatever else holds.
  bool pushed = false;
  // The peer's address is one of this host's, in our namespace or in another one where
  // supervisors run: only such a peer can be a supervised client.
  bool peer_on_this_host = false;
  // The `switching` gate of the connection's local port (preload_abi.h): connects to it that a
  // client's supervisor is switching. Read after the accept, so zero means no supervised client
  // can be this connection's peer. nullopt: the table is not mapped, so it cannot be told.
  std::optional<uint32_t> switching;
  bool daemon_connected = false;
};
enum class AcceptAction : uint8_t {
  kTakePushed,  // install the pushed end: no round trip
  kClaim,       // ask the daemon (kClaim), which pairs by the accepted socket itself
  kStayTcp,     // the program gets the TCP socket; no round trip
};
struct AcceptDecision {
  AcceptAction action;
  const char* why;  // for --trace: the fact that decided (static text)
};
// Pure: no fact is read here. A wrong kStayTcp costs a relay (the client's supervisor relays an
// end nobody claims), a wrong kClaim one round trip answered "no"; neither mispairs, since the
// daemon pairs only by the accepted socket it receives (decision 3).
AcceptDecision DecideAccept(const AcceptFacts& facts);

// Across network namespaces. What a client's supervisor knows of the other namespaces (from the
// daemon): their addresses, as their own supervisors read them, and whether the daemon can read
// TCP sequence numbers there; and the supervised listeners in them.
struct NetnsView {
  bool seq_evidence = false;
  std::vector<SockAddr> addrs;  // canonical (IPv4 as IPv4), port 0
};
struct RemoteListenerView {
  uint64_t netns = 0;
  SockAddr addr;
  bool v6only = false;
};
enum class CrossReason : uint8_t {
  kSupervised,       // a supervised listener in another namespace could take it: try
  kNoEvidenceHere,   // the daemon cannot read sequence numbers in our namespace
  kNoEvidenceThere,  // ... nor in the namespace of the only listeners that could take it
  kNoListener,       // no supervised listener elsewhere has that address and port
};
const char* CrossReasonText(CrossReason reason);
// A destination that is not local in our namespace: try the switch when some supervised listener
// of another namespace could take it (same port; its own address, or a wildcard and the address
// is one of its namespace's) and the daemon can prove the pair there and here. The guess may be
// wrong (another namespace, or another host, with the same address): that costs a relay, since
// pairing is by sequence numbers. `netns` receives the namespaces that could take it.
CrossReason DecideCrossNetns(uint64_t own_netns, bool own_evidence,
                             const std::map<uint64_t, NetnsView>& namespaces,
                             const std::vector<RemoteListenerView>& listeners, const SockAddr& dest,
                             std::vector<uint64_t>* netns);
// Is `addr` (any port) an address of another namespace where the daemon can read sequence
// numbers? The accepting side asks before it claims a connection from a non-local peer.
bool InOtherNetns(uint64_t own_netns, const std::map<uint64_t, NetnsView>& namespaces,
                  const SockAddr& addr);

}  // namespace slipstream::matcher

#endif  // SLIPSTREAM_MATCHER_POLICY_H_
