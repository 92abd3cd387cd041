#include "matcher/unclaimed.h"

#include <netinet/tcp.h>

namespace slipstream::matcher {

bool ShouldRelay(SockDiag& diag, const SockAddr& local, const SockAddr& remote,
                 std::optional<std::chrono::steady_clock::time_point>* accepted_since,
                 std::chrono::steady_clock::time_point now,
                 std::chrono::steady_clock::duration grace) {
  auto server = diag.LookupTcp(local, remote);
  if (!server) return server.error().err == ENOENT;  // gone; other errors: ask again later
  // No inode: still in the accept queue (ESTABLISHED, or SYN_RECV), or accepted and already closed
  // by whoever took it (an orphan in FIN_WAIT1, LAST_ACK...), which must relay at once: its last
  // bytes wait in our TCP socket.
  if (server->inode == 0) return server->state != TCP_ESTABLISHED && server->state != TCP_SYN_RECV;
  if (!*accepted_since) *accepted_since = now;
  return now - **accepted_since >= grace;
}

}  // namespace slipstream::matcher
