#include "matcher/unclaimed.h"

namespace slipstream::matcher {

bool ShouldRelay(SockDiag& diag, const SockAddr& local, const SockAddr& remote,
                 std::optional<std::chrono::steady_clock::time_point>* accepted_since,
                 std::chrono::steady_clock::time_point now,
                 std::chrono::steady_clock::duration grace) {
  auto server = diag.LookupTcp(local, remote);
  if (!server) return server.error().err == ENOENT;  // gone; other errors: ask again later
  if (server->inode == 0) return false;              // still queued: the server may accept yet
  if (!*accepted_since) *accepted_since = now;
  return now - **accepted_since >= grace;
}

}  // namespace slipstream::matcher
