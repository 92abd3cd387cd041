// Network-namespace evidence read from the kernel about a socket the caller holds: which
// namespace it lives in, whether the caller has CAP_NET_ADMIN over that namespace, and the TCP
// sequence numbers of a connection (docs/design.md, "Across network namespaces").
#ifndef SLIPSTREAM_BASE_NETNS_H_
#define SLIPSTREAM_BASE_NETNS_H_

#include <cstdint>

#include "base/result.h"

namespace slipstream {

// SO_NETNS_COOKIE (Linux 5.14): a number the kernel gives each network namespace, never reused
// while the machine runs. No capability needed.
[[nodiscard]] Result<uint64_t> NetnsCookie(int sock);

// Does the caller hold CAP_NET_ADMIN in the user namespace that owns `sock`'s network namespace?
// SIOCGSKNS (Linux 4.9) asks the kernel exactly the question TCP_REPAIR asks
// (ns_capable(net->user_ns, CAP_NET_ADMIN)): root over every namespace, a user over the
// namespaces of the user namespaces it created (unshare -Urn, rootless containers).
bool CanAdminNetns(int sock);

// The next sequence number each side of a TCP connection will use: `send` is ours (write_seq),
// `receive` the peer's (rcv_nxt). At byte 0 one end's send is the other's receive and vice versa:
// the connection's own identity, which addresses rewritten by NAT or repeated across namespaces
// do not change.
struct TcpSeqs {
  uint32_t send = 0;
  uint32_t receive = 0;
  bool operator==(const TcpSeqs&) const = default;
  uint64_t Key() const { return (static_cast<uint64_t>(send) << 32) | receive; }
};

// Reads them with TCP_REPAIR (Linux 3.5) + TCP_REPAIR_QUEUE + getsockopt(TCP_QUEUE_SEQ), and
// leaves repair mode with TCP_REPAIR_OFF_NO_WP (Linux 4.14) so that no window probe is sent.
// Measured harmless on an idle established connection (docs/experiments/tcp_repair_seq.c: no
// segment sent, data flows after in both directions, queued data untouched). Leaving repair mode
// clears SO_REUSEADDR (sk_reuse = SK_NO_REUSE), so the caller's value is put back. EPERM without
// CAP_NET_ADMIN over the socket's namespace; a listener is refused too.
[[nodiscard]] Result<TcpSeqs> ReadTcpSeqs(int sock);

}  // namespace slipstream

#endif  // SLIPSTREAM_BASE_NETNS_H_
