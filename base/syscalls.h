// Thin syscall wrappers returning Result<T>. Each retries on EINTR where a retry is the only sane
// answer, and captures errno on the line after the failing call.
#ifndef SLIPSTREAM_BASE_SYSCALLS_H_
#define SLIPSTREAM_BASE_SYSCALLS_H_

#include <sys/types.h>

#include <cstdint>
#include <span>
#include <string>

#include "base/result.h"
#include "base/unique_fd.h"

namespace slipstream {

// PIDFD_THREAD (Linux 6.9): a pidfd for any thread, not just a thread-group leader.
inline constexpr unsigned kPidfdThread = 0200;  // O_EXCL, as in <linux/pidfd.h>

[[nodiscard]] Result<UniqueFd> PidfdOpen(pid_t pid, unsigned flags = 0);
// A copy of another process's fd: same open file description (Linux 5.6). Returned with O_CLOEXEC.
[[nodiscard]] Result<UniqueFd> PidfdGetfd(int pidfd, int target_fd);
[[nodiscard]] Status PidfdSendSignal(int pidfd, int sig);

// process_vm_readv/writev: exact copy_from_user/copy_to_user semantics (EFAULT on an unmapped or,
// for writes, read-only page). Partial transfers are reported as EFAULT.
[[nodiscard]] Status ReadTargetMemory(pid_t pid, uint64_t addr, std::span<uint8_t> out);
[[nodiscard]] Status WriteTargetMemory(pid_t pid, uint64_t addr, std::span<const uint8_t> in);

struct FileId {
  uint64_t dev = 0;
  uint64_t ino = 0;
  auto operator<=>(const FileId&) const = default;  // and ==: a key of ordered maps
};
[[nodiscard]] Result<FileId> GetFileId(int fd);

// Open-file status flags (F_GETFL) and descriptor flags (F_GETFD).
[[nodiscard]] Result<int> GetFileFlags(int fd);
[[nodiscard]] Status SetNonBlocking(int fd, bool on);

// Reads /proc/<tid>/status field "Tgid".
[[nodiscard]] Result<pid_t> ThreadGroupOf(pid_t tid);

// Whether thread `tid` belongs to process `tgid` now: one lookup of /proc/TGID/task/TID, about ten
// times cheaper than ThreadGroupOf(), for checking a remembered answer.
[[nodiscard]] bool IsThreadOf(pid_t tid, pid_t tgid);

// Whole small file (e.g. under /proc) as a string.
[[nodiscard]] Result<std::string> ReadSmallFile(const char* path);

}  // namespace slipstream

#endif  // SLIPSTREAM_BASE_SYSCALLS_H_
