// Socket activation: slipstreamd started by systemd (slipstreamd.socket) receives its listening
// socket instead of binding one. The protocol is systemd's (sd_listen_fds(3)): the passed sockets
// start at fd 3, LISTEN_FDS says how many, LISTEN_PID names the process they are meant for (so
// that a child that inherits the environment does not take them). Implemented here without
// libsystemd: it is a few getenv calls.
#ifndef SLIPSTREAM_MATCHER_SOCKET_ACTIVATION_H_
#define SLIPSTREAM_MATCHER_SOCKET_ACTIVATION_H_

#include <optional>
#include <string>

#include "base/result.h"
#include "base/unique_fd.h"

namespace slipstream::matcher {

struct ActivatedSocket {
  UniqueFd fd;      // listening AF_UNIX SOCK_SEQPACKET, O_NONBLOCK and FD_CLOEXEC set
  std::string dir;  // the runtime directory: where the socket is bound
};

// The first fd passed the systemd way.
inline constexpr int kListenFdsStart = 3;

// nullopt when the process was not socket-activated (no LISTEN_PID, or it names another process).
// Otherwise takes fd 3 and clears LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES. An error when the
// passed socket is not what slipstream-trace connects to: not exactly one fd, not a listening
// AF_UNIX SOCK_SEQPACKET socket, not bound to DIR/matcher.sock, DIR not a 0700 directory of ours
// (with `all_users`: not ours or writable by others, as for DaemonRuntimeDir()).
Result<std::optional<ActivatedSocket>> TakeActivatedSocket(bool all_users = false);

}  // namespace slipstream::matcher

#endif  // SLIPSTREAM_MATCHER_SOCKET_ACTIVATION_H_
