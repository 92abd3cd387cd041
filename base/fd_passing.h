// One message with fds attached (SCM_RIGHTS) over an AF_UNIX socket.
#ifndef SLIPSTREAM_BASE_FD_PASSING_H_
#define SLIPSTREAM_BASE_FD_PASSING_H_

#include <sys/uio.h>

#include <span>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"

namespace slipstream {

inline constexpr size_t kMaxPassedFds = 4;

// Sends `data` with up to kMaxPassedFds `fds`, never raising SIGPIPE; `flags` go to sendmsg
// (MSG_DONTWAIT...). Retries on EINTR. Allocates nothing: usable between fork and exec.
[[nodiscard]] Status SendWithFds(int sock, std::span<const iovec> data, std::span<const int> fds,
                                 int flags = 0);

struct Received {
  size_t bytes = 0;
  int msg_flags = 0;          // MSG_TRUNC, MSG_CTRUNC...
  std::vector<UniqueFd> fds;  // every fd that arrived, close-on-exec, owned
};
// Receives one message into `data`. Every fd that arrives is owned by the result, so a caller that
// rejects the message cannot leak one. 0 bytes and no fds: the peer closed.
[[nodiscard]] Result<Received> ReceiveWithFds(int sock, std::span<const iovec> data, int flags = 0);

}  // namespace slipstream

#endif  // SLIPSTREAM_BASE_FD_PASSING_H_
