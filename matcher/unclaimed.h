// When is a pair's server end "never going to be claimed"? Shared by the daemon (ends it holds)
// and the supervisors (ends pushed to them).
#ifndef SLIPSTREAM_MATCHER_UNCLAIMED_H_
#define SLIPSTREAM_MATCHER_UNCLAIMED_H_

#include <chrono>
#include <optional>

#include "base/sock_diag.h"

namespace slipstream::matcher {

// Whoever holds a server end claims it from its own accept() at once. So the end should go back
// to the client's supervisor for relaying when the server side of the connection (`local`,
// `remote` as the server sees them) has been out of the accept queue for `grace` without a claim
// (someone who is not supervised accepted it), or no longer exists (reset before any accept).
// `accepted_since` is the caller's memory of when it first saw the connection accepted.
bool ShouldRelay(SockDiag& diag, const SockAddr& local, const SockAddr& remote,
                 std::optional<std::chrono::steady_clock::time_point>* accepted_since,
                 std::chrono::steady_clock::time_point now,
                 std::chrono::steady_clock::duration grace);

}  // namespace slipstream::matcher

#endif  // SLIPSTREAM_MATCHER_UNCLAIMED_H_
