#include "base/syscalls.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace slipstream {

Result<UniqueFd> PidfdOpen(pid_t pid, unsigned flags) {
  long fd = syscall(SYS_pidfd_open, pid, flags);
  if (fd < 0) return Errno("pidfd_open");
  return UniqueFd(static_cast<int>(fd));
}

Result<UniqueFd> PidfdGetfd(int pidfd, int target_fd) {
  long fd = syscall(SYS_pidfd_getfd, pidfd, target_fd, 0);
  if (fd < 0) return Errno("pidfd_getfd");
  return UniqueFd(static_cast<int>(fd));
}

Status PidfdSendSignal(int pidfd, int sig) {
  if (syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0) < 0) return Errno("pidfd_send_signal");
  return {};
}

Status ReadTargetMemory(pid_t pid, uint64_t addr, std::span<uint8_t> out) {
  if (out.empty()) return {};
  iovec local{out.data(), out.size()};
  iovec remote{reinterpret_cast<void*>(addr), out.size()};
  ssize_t n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
  if (n < 0) return Errno("process_vm_readv");
  if (static_cast<size_t>(n) != out.size()) return Error(EFAULT, "process_vm_readv");
  return {};
}

Status WriteTargetMemory(pid_t pid, uint64_t addr, std::span<const uint8_t> in) {
  if (in.empty()) return {};
  iovec local{const_cast<uint8_t*>(in.data()), in.size()};
  iovec remote{reinterpret_cast<void*>(addr), in.size()};
  ssize_t n = process_vm_writev(pid, &local, 1, &remote, 1, 0);
  if (n < 0) return Errno("process_vm_writev");
  if (static_cast<size_t>(n) != in.size()) return Error(EFAULT, "process_vm_writev");
  return {};
}

Result<FileId> GetFileId(int fd) {
  struct stat st;
  if (fstat(fd, &st) < 0) return Errno("fstat");
  return FileId{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
}

Result<int> GetFileFlags(int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0) return Errno("fcntl(F_GETFL)");
  return flags;
}

Status SetNonBlocking(int fd, bool on) {
  auto flags = GetFileFlags(fd);
  if (!flags) return tl::unexpected(flags.error());
  int wanted = on ? (*flags | O_NONBLOCK) : (*flags & ~O_NONBLOCK);
  if (wanted != *flags && fcntl(fd, F_SETFL, wanted) < 0) return Errno("fcntl(F_SETFL)");
  return {};
}

Result<std::string> ReadSmallFile(const char* path) {
  UniqueFd fd(open(path, O_RDONLY | O_CLOEXEC));
  if (!fd) return Errno("open");
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = read(fd.Get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Errno("read");
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

Result<pid_t> ThreadGroupOf(pid_t tid) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/status", tid);
  auto text = ReadSmallFile(path);
  if (!text) return tl::unexpected(text.error());
  auto pos = text->find("\nTgid:");
  if (pos == std::string::npos) return Error(ESRCH, "parse /proc/status");
  return static_cast<pid_t>(std::strtol(text->c_str() + pos + 6, nullptr, 10));
}

bool IsThreadOf(pid_t tid, pid_t tgid) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/task/%d", tgid, tid);
  return faccessat(AT_FDCWD, path, F_OK, 0) == 0;
}

}  // namespace slipstream
