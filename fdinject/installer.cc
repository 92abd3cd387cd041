#include "fdinject/installer.h"

#include <fcntl.h>
#include <linux/seccomp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "base/syscalls.h"

namespace slipstream::fdinject {

Result<int> KernelFdInstaller::Install(const Placement& placement) {
  seccomp_notif_addfd addfd{};
  addfd.id = placement.id;
  addfd.srcfd = static_cast<uint32_t>(placement.src_fd);
  if (placement.target_fd >= 0) {
    addfd.flags |= SECCOMP_ADDFD_FLAG_SETFD;
    addfd.newfd = static_cast<uint32_t>(placement.target_fd);
  }
  if (placement.send) addfd.flags |= SECCOMP_ADDFD_FLAG_SEND;
  addfd.newfd_flags = placement.cloexec ? O_CLOEXEC : 0;
  for (;;) {
    int fd = ioctl(listener_fd_, SECCOMP_IOCTL_NOTIF_ADDFD, &addfd);
    if (fd >= 0) return fd;
    if (errno != EINTR) return Errno("ioctl(NOTIF_ADDFD)");
  }
}

namespace {

// What TCP lets a sender have in flight on this host: tcp_wmem's maximum, the ceiling of its
// autotuned send buffer (4 MiB by default), read once. An AF_UNIX stream holds only what the
// sender's sk_sndbuf allows (212992 bytes by default, net.core.wmem_default): a program whose two
// sides both write 1 MB before reading runs over TCP on loopback and deadlocked on a default
// socketpair (found by a newcomer's probe; 4 MB in both directions still runs over TCP).
int TcpSendBufferMax() {
  static const int value = [] {
    int min = 0, initial = 0, max = 0;
    if (FILE* f = fopen("/proc/sys/net/ipv4/tcp_wmem", "re")) {
      if (fscanf(f, "%d %d %d", &min, &initial, &max) != 3) max = 0;
      fclose(f);
    }
    return max > 0 ? max : 4 << 20;
  }();
  return value;
}

// sk_sndbuf of `fd` raised to that: the kernel doubles the value given (sock_setsockopt), and caps
// SO_SNDBUF at net.core.wmem_max unless forced (SO_SNDBUFFORCE needs CAP_NET_ADMIN). Not more:
// a program that sends 4 MiB at once to a peer that does not read yet must still block as over
// TCP (test_switch_flags, sendto_addr_large_signal: twice that let the send complete at once,
// where TCP returns a partial count at a signal). AF_UNIX charges each skb's overhead to the
// sender too, so slightly less than 4 MiB fits each way: both_write ran with 3 MiB and 4,000,000
// bytes each way and deadlocked with 4 MiB, which TCP ran.
void RaiseSendBuffer(int fd) {
  // Without CAP_NET_ADMIN the forced form fails with EPERM for every pair: tried until it does.
  static std::atomic<bool> force{true};
  int half = TcpSendBufferMax() / 2;
  if (force.load(std::memory_order_relaxed)) {
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &half, sizeof(half)) == 0) return;
    if (errno == EPERM) force.store(false, std::memory_order_relaxed);
  }
  (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &half, sizeof(half));
}

}  // namespace

Result<std::pair<UniqueFd, UniqueFd>> MakeStreamPair(bool first_nonblocking,
                                                     bool second_nonblocking) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return Errno("socketpair");
  UniqueFd a(sv[0]), b(sv[1]);
  RaiseSendBuffer(a.Get());
  RaiseSendBuffer(b.Get());
  if (first_nonblocking) {
    if (auto st = SetNonBlocking(a.Get(), true); !st) return tl::unexpected(st.error());
  }
  if (second_nonblocking) {
    if (auto st = SetNonBlocking(b.Get(), true); !st) return tl::unexpected(st.error());
  }
  return std::make_pair(std::move(a), std::move(b));
}

linger CopySocketOptions(int from, int to) {
  // On the set-up path of every switched connection: a setsockopt only where the value is not
  // what the new end already has (all zero, but SO_RCVLOWAT 1).
  auto copy = [&](int name, void* value, socklen_t size, const void* fresh) {
    socklen_t len = size;
    if (getsockopt(from, SOL_SOCKET, name, value, &len) == 0 && len == size &&
        std::memcmp(value, fresh, size) != 0) {
      (void)setsockopt(to, SOL_SOCKET, name, value, len);
    }
  };
  const timeval no_timeout{};
  for (int name : {SO_RCVTIMEO, SO_SNDTIMEO}) {
    timeval tv{};
    copy(name, &tv, sizeof(tv), &no_timeout);
  }
  for (int name : {SO_RCVLOWAT, SO_KEEPALIVE, SO_OOBINLINE, SO_PRIORITY, SO_REUSEADDR}) {
    const int fresh = name == SO_RCVLOWAT ? 1 : 0;
    int value = 0;
    copy(name, &value, sizeof(value), &fresh);
  }
  const linger no_linger{};
  linger value{};
  copy(SO_LINGER, &value, sizeof(value), &no_linger);
  return value;
}

void CopyAsyncOwner(int from, int to) {
  // One fcntl on the set-up path of every switched connect: the rest only for a program that
  // asked for SIGIO.
  int flags = fcntl(from, F_GETFL);
  if (flags < 0 || (flags & O_ASYNC) == 0) return;
  f_owner_ex owner{};
  if (fcntl(from, F_GETOWN_EX, &owner) == 0 && owner.pid != 0) {
    (void)fcntl(to, F_SETOWN_EX, &owner);
  }
  if (int sig = fcntl(from, F_GETSIG); sig > 0) (void)fcntl(to, F_SETSIG, sig);
  if (int to_flags = fcntl(to, F_GETFL); to_flags >= 0) {
    (void)fcntl(to, F_SETFL, to_flags | O_ASYNC);
  }
}

Result<TargetFdFlags> ReadTargetFdFlags(pid_t pid, int fd) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/fdinfo/%d", pid, fd);
  auto text = ReadSmallFile(path);
  if (!text) return tl::unexpected(text.error());
  auto pos = text->find("flags:");
  if (pos == std::string::npos) return Error(EINVAL, "parse fdinfo");
  long flags = std::strtol(text->c_str() + pos + 6, nullptr, 8);
  TargetFdFlags result{(flags & O_CLOEXEC) != 0, (flags & O_NONBLOCK) != 0, 0};
  if (auto ino = text->find("\nino:"); ino != std::string::npos) {
    result.ino = std::strtoull(text->c_str() + ino + 5, nullptr, 10);
  }
  return result;
}

}  // namespace slipstream::fdinject
