// What the kernel lets this process do, read from the kernel: its effective capabilities and its
// seccomp mode. Slipstream decides by these, never by uid: root in a container (Docker drops
// CAP_SYS_ADMIN and CAP_SYS_PTRACE, and adds a seccomp filter) is not privileged.
#ifndef SLIPSTREAM_BASE_CREDENTIALS_H_
#define SLIPSTREAM_BASE_CREDENTIALS_H_

#include <cstdint>
#include <optional>
#include <string_view>

#include "base/result.h"

namespace slipstream {

// The calling thread's effective capability set, as a bit mask (bit n: capability n), from
// capget(2) with _LINUX_CAPABILITY_VERSION_3 (64-bit sets, Linux 2.6.26). The set is the one of
// the thread's own user namespace, which is where seccomp(2) checks CAP_SYS_ADMIN.
// Async-signal-safe: one system call.
[[nodiscard]] Result<uint64_t> EffectiveCapabilities();

// Is capability `cap` (CAP_SYS_ADMIN, ...) in the effective set? false when capget fails.
bool HasEffectiveCapability(int cap);

// Is `cap` in the capability bounding set (prctl PR_CAPBSET_READ, Linux 2.6.25)? A container
// started with `--cap-add CAP` has it there even for a non-root user, whose effective set is empty.
bool InBoundingSet(int cap);

// The "Seccomp:" field of a /proc/PID/status text (Linux 3.8): 0 none, 1 strict, 2 filter.
// nullopt when the field is missing or malformed.
std::optional<int> ParseSeccompMode(std::string_view status_text);

// This process's seccomp mode, from /proc/self/status; nullopt when it cannot be read.
std::optional<int> SeccompMode();

}  // namespace slipstream

#endif  // SLIPSTREAM_BASE_CREDENTIALS_H_
