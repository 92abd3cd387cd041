#include "tracer/target.h"

#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "base/syscalls.h"

namespace slipstream::tracer {

Result<UniqueFd> TargetAccess::OpenPidfd(pid_t tid, bool pidfd_thread) {
  if (pidfd_thread) return PidfdOpen(tid, kPidfdThread);
  // Without PIDFD_THREAD only a thread-group leader has a pidfd; the fd table is shared by the
  // group (CLONE_FILES), except for vfork children, which are their own group leaders.
  auto tgid = ThreadGroupOf(tid);
  if (!tgid) return tl::unexpected(tgid.error());
  return PidfdOpen(*tgid);
}

Result<TargetAccess> TargetAccess::Open(pid_t tid, bool pidfd_thread) {
  auto fd = OpenPidfd(tid, pidfd_thread);
  if (!fd) return tl::unexpected(fd.error());
  return TargetAccess(tid, std::move(*fd));
}

Status TargetAccess::Read(uint64_t addr, std::span<uint8_t> out) const {
  return ReadTargetMemory(tid_, addr, out);
}

Status TargetAccess::Write(uint64_t addr, std::span<const uint8_t> in) const {
  return WriteTargetMemory(tid_, addr, in);
}

Result<int32_t> TargetAccess::ReadInt(uint64_t addr) const {
  int32_t value = 0;
  auto st = Read(addr, {reinterpret_cast<uint8_t*>(&value), sizeof(value)});
  if (!st) return tl::unexpected(st.error());
  return value;
}

Status TargetAccess::WriteInt(uint64_t addr, int32_t value) const {
  return Write(addr, {reinterpret_cast<const uint8_t*>(&value), sizeof(value)});
}

Result<UniqueFd> TargetAccess::TakeFd(int fd) const { return PidfdGetfd(pidfd_, fd); }

Result<SockAddr> CopySockAddrIn(const TargetAccess& target, uint64_t addr, int64_t addrlen) {
  auto len = static_cast<int32_t>(addrlen);  // the kernel takes an int
  if (len < 0 || static_cast<size_t>(len) > sizeof(sockaddr_storage)) {
    return Error(EINVAL, "sockaddr length");
  }
  std::vector<uint8_t> bytes(static_cast<size_t>(len));
  if (len > 0) {
    auto st = target.Read(addr, bytes);
    if (!st) return Error(EFAULT, "copy sockaddr");
  }
  return SockAddr::FromBytes(bytes);
}

Status CopySockAddrOut(const TargetAccess& target, const SockAddr& addr, uint64_t addr_ptr,
                       uint64_t addrlen_ptr, bool length_first) {
  auto len = target.ReadInt(addrlen_ptr);
  if (!len) return Error(EFAULT, "read addrlen");
  int32_t actual = static_cast<int32_t>(addr.len());
  int32_t n = std::min(*len, actual);
  // "fromlen shall refer to the value before truncation" (POSIX.1g): the actual length is stored.
  if (length_first && n >= 0 && !target.WriteInt(addrlen_ptr, actual)) {
    return Error(EFAULT, "write addrlen");
  }
  if (n < 0) return Error(EINVAL, "addrlen");
  if (n > 0) {
    auto st = target.Write(addr_ptr,
                           {reinterpret_cast<const uint8_t*>(addr.get()), static_cast<size_t>(n)});
    if (!st) return Error(EFAULT, "write sockaddr");
  }
  if (!length_first && !target.WriteInt(addrlen_ptr, actual)) return Error(EFAULT, "write addrlen");
  return {};
}

}  // namespace slipstream::tracer
