#include "tracer/notifier.h"

#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>

namespace slipstream::tracer {

Result<Notification> KernelNotifier::Receive() {
  // The kernel only ever writes sizeof(struct seccomp_notif) as of 6.18 (SECCOMP_GET_NOTIF_SIZES
  // reports the same); keep slack in case a newer kernel grows the struct.
  alignas(seccomp_notif) unsigned char buf[sizeof(seccomp_notif) + 64];
  std::memset(buf, 0, sizeof(buf));
  auto* raw = reinterpret_cast<seccomp_notif*>(buf);
  while (ioctl(notify_fd_, SECCOMP_IOCTL_NOTIF_RECV, raw) < 0) {
    if (errno == EINTR) continue;
    return Errno("ioctl(NOTIF_RECV)");
  }
  Notification n;
  n.id = raw->id;
  n.tid = static_cast<pid_t>(raw->pid);
  n.nr = raw->data.nr;
  n.arch = raw->data.arch;
  for (size_t i = 0; i < n.args.size(); ++i) n.args[i] = raw->data.args[i];
  return n;
}

Status KernelNotifier::Send(uint64_t id, int64_t value, int error, uint32_t flags) {
  seccomp_notif_resp resp{};
  resp.id = id;
  resp.val = value;
  resp.error = error;
  resp.flags = flags;
  while (ioctl(notify_fd_, SECCOMP_IOCTL_NOTIF_SEND, &resp) < 0) {
    if (errno == EINTR) continue;
    return Errno("ioctl(NOTIF_SEND)");
  }
  return {};
}

Status KernelNotifier::Continue(uint64_t id) {
  return Send(id, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE);
}
Status KernelNotifier::Return(uint64_t id, int64_t value) { return Send(id, value, 0, 0); }
Status KernelNotifier::Fail(uint64_t id, int err) { return Send(id, 0, -err, 0); }

Status KernelNotifier::IdValid(uint64_t id) {
  while (ioctl(notify_fd_, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) < 0) {
    if (errno == EINTR) continue;
    return Errno("ioctl(NOTIF_ID_VALID)");
  }
  return {};
}

}  // namespace slipstream::tracer
