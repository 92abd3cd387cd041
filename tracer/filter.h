// The seccomp filter: which syscalls notify the supervisor, built once in the supervisor and
// installed in the child between fork and exec.
#ifndef SLIPSTREAM_TRACER_FILTER_H_
#define SLIPSTREAM_TRACER_FILTER_H_

#include <linux/filter.h>

#include <cstdint>
#include <vector>

#include "base/result.h"

namespace slipstream::tracer {

struct FilterOptions {
  // io_uring submissions bypass seccomp entirely, so by default io_uring_setup fails with ENOSYS
  // and runtimes (libuv, tokio, liburing users) fall back to plain syscalls.
  bool allow_io_uring = false;
  // socket() is always answered CONTINUE (the kernel must create the socket in the program's
  // namespace, cgroup and credentials): trapping it only serves --trace and --stats, and costs a
  // notification round trip per connection.
  bool trap_socket = true;
  // bind() is answered CONTINUE for the same reason (privileged ports are checked against the
  // caller's credentials): trapped only for --trace and --stats.
  bool trap_bind = true;
  // Hybrid mode (docs/design.md): a trapped call whose spare argument register holds this value is
  // allowed without a notification (the preload library's own calls). 0: no bypass.
  uint64_t bypass_cookie = 0;
  // The rare forms of the data-path calls that a switched socket must answer itself
  // (tracer/filter.cc, AddDataRules). Off with --no-switch (nothing is switched) and in the
  // untrapped-call benchmark's baseline.
  bool trap_data_flags = true;
};

using BpfProgram = std::vector<sock_filter>;

// Builds the classic-BPF program with libseccomp. Unknown architectures (i386, x32 programs) are
// allowed through untrapped: Slipstream supervises the native ABI only.
[[nodiscard]] Result<BpfProgram> BuildFilter(const FilterOptions& options);

// Installs `program` for the calling thread with SECCOMP_FILTER_FLAG_NEW_LISTENER plus
// `extra_flags` and returns the notification fd, or -errno. Async-signal-safe: it only makes
// syscalls, so it may run in the child between fork and exec.
int InstallFilter(const BpfProgram& program, unsigned extra_flags);

// seccomp(2) installs a filter only for a thread with NO_NEW_PRIVS or CAP_SYS_ADMIN in its user
// namespace (kernel/seccomp.c, seccomp_prepare_filter). Sets NO_NEW_PRIVS unless CAP_SYS_ADMIN is
// in the effective set: decided by capability, never by uid, since root in a container (Docker
// drops CAP_SYS_ADMIN) is refused like any unprivileged user. With the capability NO_NEW_PRIVS is
// left off, so set-uid programs started by a privileged slipstream-trace gain privilege as they
// would without it. Call before InstallFilter in the thread that installs. Async-signal-safe (two
// system calls). Returns false when NO_NEW_PRIVS was needed and could not be set.
bool AllowFilterInstall();

}  // namespace slipstream::tracer

#endif  // SLIPSTREAM_TRACER_FILTER_H_
