// Places fds into a trapped target with SECCOMP_IOCTL_NOTIF_ADDFD (Linux 5.9). The install runs in
// the target thread's own context, so the target's RLIMIT_NOFILE applies (EMFILE, or EBADF for a
// SETFD number above the limit), as it would for the call the target made.
#ifndef SLIPSTREAM_FDINJECT_INSTALLER_H_
#define SLIPSTREAM_FDINJECT_INSTALLER_H_

#include <sys/socket.h>

#include <cstdint>
#include <utility>

#include "base/result.h"
#include "base/unique_fd.h"

namespace slipstream::fdinject {

struct Placement {
  uint64_t id = 0;       // the notification the target is blocked in
  int src_fd = -1;       // our fd; the target gets a new reference to the same open file
  int target_fd = -1;    // >= 0: replace this fd atomically like dup2 (ADDFD_FLAG_SETFD)
  bool cloexec = false;  // FD_CLOEXEC is per fd, not per file: the only flag ADDFD accepts
  bool send = false;     // also answer the call with the fd number (ADDFD_FLAG_SEND, Linux 5.14)
};

class FdInstaller {
 public:
  virtual ~FdInstaller() = default;
  // Returns the fd number in the target. ENOENT: the target left the call (signal or exit).
  virtual Result<int> Install(const Placement& placement) = 0;
};

class KernelFdInstaller final : public FdInstaller {
 public:
  explicit KernelFdInstaller(int listener_fd) : listener_fd_(listener_fd) {}  // borrowed
  Result<int> Install(const Placement& placement) override;

 private:
  int listener_fd_;
};

// A connected AF_UNIX stream pair, both ends O_CLOEXEC in our process. O_NONBLOCK is a property of
// the open file, so it is chosen here for each end rather than at install time.
[[nodiscard]] Result<std::pair<UniqueFd, UniqueFd>> MakeStreamPair(bool first_nonblocking,
                                                                   bool second_nonblocking);

// Copies the socket-level options a program may have set before its socket was switched
// (SO_RCVTIMEO, SO_SNDTIMEO, SO_RCVLOWAT, SO_LINGER, SO_KEEPALIVE, SO_OOBINLINE, SO_PRIORITY,
// SO_REUSEADDR) from `from` (the TCP socket, or the end being replaced) to the AF_UNIX end `to`:
// without them a read meant to time out would block forever. Best effort: an option the kernel
// refuses on `to` is skipped. Returns the SO_LINGER value copied.
linger CopySocketOptions(int from, int to);
// The file's owner for SIGIO/SIGURG (F_SETOWN_EX), its F_SETSIG signal and O_ASYNC, from `from` to
// `to`. They belong to the open file, not the socket, so an end that replaces a program's socket
// has none of them: a program that asked for SIGIO before connect() would wait for it forever.
// Copied only with O_ASYNC: an owner set for SIGURG alone (urgent data) is not. Not needed for an
// accepted connection, whose file is new. The owner's permission to be signalled is the caller's
// (sigio_perm(): the same user, or root).
void CopyAsyncOwner(int from, int to);

// The target's descriptor flags for `fd`, from /proc/<pid>/fdinfo/<fd> ("flags:", octal): the only
// place FD_CLOEXEC of another process's fd can be read.
struct TargetFdFlags {
  bool cloexec = false;
  bool nonblocking = false;
  uint64_t ino = 0;  // the open file's inode ("ino:" in fdinfo, Linux 5.14+; 0 when absent)
};
[[nodiscard]] Result<TargetFdFlags> ReadTargetFdFlags(pid_t pid, int fd);

}  // namespace slipstream::fdinject

#endif  // SLIPSTREAM_FDINJECT_INSTALLER_H_
