// Notifier: the narrow seam over the seccomp notification fd ioctls (fd installation lives in
// fdinject/). The kernel implementation wraps the notification fd; unit tests substitute a gmock.
//
// Error meaning: ENOENT (SysError::TargetGone) from a reply or IdValid means the target was
// interrupted by a signal or has exited. It is an expected race, not a failure.
#ifndef SLIPSTREAM_TRACER_NOTIFIER_H_
#define SLIPSTREAM_TRACER_NOTIFIER_H_

#include <linux/seccomp.h>

#include <array>
#include <cstdint>

#include "base/result.h"

namespace slipstream::tracer {

// One received notification, copied out of the kernel's struct.
struct Notification {
  uint64_t id = 0;
  pid_t tid = 0;  // the trapping thread, as seen from the supervisor's pid namespace
  int nr = -1;
  uint32_t arch = 0;
  std::array<uint64_t, 6> args{};
};

class Notifier {
 public:
  virtual ~Notifier() = default;
  // Blocks until a notification arrives; call it only after the notification fd polled readable.
  virtual Result<Notification> Receive() = 0;
  virtual Status Continue(uint64_t id) = 0;               // FLAG_CONTINUE, Linux 5.5
  virtual Status Return(uint64_t id, int64_t value) = 0;  // the call returns `value`
  virtual Status Fail(uint64_t id, int err) = 0;          // the call fails with errno `err`
  virtual Status IdValid(uint64_t id) = 0;
};

class KernelNotifier final : public Notifier {
 public:
  explicit KernelNotifier(int notify_fd) : notify_fd_(notify_fd) {}  // borrowed
  int fd() const { return notify_fd_; }

  Result<Notification> Receive() override;
  Status Continue(uint64_t id) override;
  Status Return(uint64_t id, int64_t value) override;
  Status Fail(uint64_t id, int err) override;
  Status IdValid(uint64_t id) override;

 private:
  Status Send(uint64_t id, int64_t value, int error, uint32_t flags);
  int notify_fd_;
};

}  // namespace slipstream::tracer

#endif  // SLIPSTREAM_TRACER_NOTIFIER_H_
