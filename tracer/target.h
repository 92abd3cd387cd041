// TargetAccess: the supervisor's view into the process behind one notification.
//
// TOCTOU order (seccomp_unotify(2), samples/seccomp/user-trap.c): open every per-target resource
// (pidfd, fd copies) and copy every pointer argument out of the target first, *then* check
// NOTIF_ID_VALID, and only then trust what was read. A valid id proves the thread is still blocked
// in the call, so its tid was not recycled and the bytes came from the right address space.
#ifndef SLIPSTREAM_TRACER_TARGET_H_
#define SLIPSTREAM_TRACER_TARGET_H_

#include <cstdint>
#include <span>

#include "base/result.h"
#include "base/sockaddr.h"
#include "base/unique_fd.h"
#include "tracer/notifier.h"

namespace slipstream::tracer {

class TargetAccess {
 public:
  // `pidfd_thread`: the kernel has PIDFD_THREAD (6.9); otherwise the thread group is looked up.
  static Result<TargetAccess> Open(pid_t tid, bool pidfd_thread);
  // Uses a pidfd someone else owns (PidfdCache); it must outlive this object.
  static TargetAccess Borrow(pid_t tid, int pidfd) { return TargetAccess(tid, pidfd); }
  static Result<UniqueFd> OpenPidfd(pid_t tid, bool pidfd_thread);

  pid_t tid() const { return tid_; }
  int pidfd() const { return pidfd_; }

  Status Read(uint64_t addr, std::span<uint8_t> out) const;
  Status Write(uint64_t addr, std::span<const uint8_t> in) const;
  Result<int32_t> ReadInt(uint64_t addr) const;
  Status WriteInt(uint64_t addr, int32_t value) const;

  // A copy of the target's fd (same open file description), O_CLOEXEC in the supervisor.
  Result<UniqueFd> TakeFd(int fd) const;

 private:
  TargetAccess(pid_t tid, UniqueFd pidfd)
      : tid_(tid), pidfd_(pidfd.Get()), owned_(std::move(pidfd)) {}
  TargetAccess(pid_t tid, int pidfd) : tid_(tid), pidfd_(pidfd) {}
  pid_t tid_;
  int pidfd_;
  UniqueFd owned_;
};

// Copies a sockaddr argument of connect/bind as the kernel's move_addr_to_kernel() does:
// EINVAL when addrlen is negative or larger than sockaddr_storage, EFAULT when unreadable.
Result<SockAddr> CopySockAddrIn(const TargetAccess& target, uint64_t addr, int64_t addrlen);

// Writes `addr` to a (sockaddr*, socklen_t*) result pair as the kernel's move_addr_to_user() does:
// reads the caller's length (EFAULT), copies min(len, actual) bytes (EFAULT; EINVAL if the length
// is negative) and stores the actual length (EFAULT). `length_first`: the kernel stores the length
// before copying the address (KernelFeatures::addrlen_first), older kernels after.
Status CopySockAddrOut(const TargetAccess& target, const SockAddr& addr, uint64_t addr_ptr,
                       uint64_t addrlen_ptr, bool length_first);

}  // namespace slipstream::tracer

#endif  // SLIPSTREAM_TRACER_TARGET_H_
