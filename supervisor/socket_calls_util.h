// Helpers shared by the socket call handlers (supervisor/socket_calls*.cc). Internal.
#ifndef SLIPSTREAM_SUPERVISOR_SOCKET_CALLS_UTIL_H_
#define SLIPSTREAM_SUPERVISOR_SOCKET_CALLS_UTIL_H_

#include <sys/types.h>

#include <cstdint>
#include <span>
#include <string>

#include "preload-fallback/preload_abi.h"
#include "tracer/target.h"

namespace slipstream::supervisor {

// Largest option value copied between the program and the retained TCP socket.
inline constexpr size_t kMaxOptLen = 4096;

std::string FdText(uint64_t fd);
// Best effort, for --trace only: the address a connect/bind call names.
std::string AddrText(const tracer::TargetAccess* target, uint64_t ptr, uint64_t len);
// The same for an address already copied from the program (`copied`, from a length `len`).
std::string AddrText(const Result<SockAddr>& copied, uint64_t len);
bool Established(int sock);
// Both addresses of a switched connection as the preload library keeps them (preload_abi.h):
// EINVAL if one does not fit (only IPv4 and IPv6 addresses do).
Result<slipstream_names> LibraryNames(const SockAddr& local, const SockAddr& peer);
// SOL_SOCKET options that describe the TCP connection rather than the byte stream: on a switched
// socket they are answered from the retained TCP socket. The rest (buffers, timeouts, SO_ERROR,
// SO_KEEPALIVE...) act on the AF_UNIX end the program holds.
bool IsIdentityOption(int name);
// Is the fd table of `tid` full (RLIMIT_NOFILE reached)? stat() of /proc/PID/fd reports the
// number of open fds since Linux 6.2; on older kernels (size 0) this says no, and a full table is
// found out at ADDFD time instead (the connection is then parked for the next accept).
bool FdTableFull(pid_t tid);

// `bytes` (at most a page) copied so that they end where an inaccessible page begins: a system
// call given this pointer and a longer length faults exactly where the program's own memory
// stopped being readable, so the kernel chooses between its checks and EFAULT in its own order.
// Single-threaded: the copy is overwritten by the next call.
const uint8_t* BeforeAGuardPage(std::span<const uint8_t> bytes);

}  // namespace slipstream::supervisor

#endif  // SLIPSTREAM_SUPERVISOR_SOCKET_CALLS_UTIL_H_
