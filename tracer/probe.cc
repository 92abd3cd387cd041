#include "tracer/probe.h"

#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cstring>

#include <cerrno>

#include "base/syscalls.h"
#include "tracer/filter.h"

namespace slipstream::tracer {
namespace {

enum ProbeBit : unsigned char {
  kUserNotif = 1 << 0,
  kWaitKillable = 1 << 1,
  kAddFd = 1 << 2,
  kAddFdSend = 1 << 3,
  kSyncWakeup = 1 << 4,
};

// Runs in the forked child: only syscalls. An unknown ioctl or flag gives EINVAL (or ENOTTY); a
// known one gets as far as looking up notification id 0, which does not exist: ENOENT.
unsigned char ProbeInChild() {
  if (getuid() != 0) prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
  BpfProgram allow_all = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
  unsigned char bits = 0;
  int listener = InstallFilter(allow_all, SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV);
  if (listener >= 0) {
    bits |= kWaitKillable;
  } else {
    listener = InstallFilter(allow_all, 0);
  }
  if (listener < 0) return 0;
  seccomp_notif_resp resp{};
  resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
  if (ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp) < 0 && errno == ENOENT) bits |= kUserNotif;
  seccomp_notif_addfd addfd{};
  addfd.srcfd = static_cast<uint32_t>(listener);
  if (ioctl(listener, SECCOMP_IOCTL_NOTIF_ADDFD, &addfd) < 0 && errno == ENOENT) bits |= kAddFd;
  addfd.flags = SECCOMP_ADDFD_FLAG_SEND;
  if (ioctl(listener, SECCOMP_IOCTL_NOTIF_ADDFD, &addfd) < 0 && errno == ENOENT) bits |= kAddFdSend;
  if (SetSyncWakeup(listener)) bits |= kSyncWakeup;
  return bits;
}

}  // namespace

// getsockname() with a read-only length: which did the kernel try to write first?
bool ProbeAddrlenFirst() {
  long page = sysconf(_SC_PAGESIZE);
  void* mem = mmap(nullptr, static_cast<size_t>(page), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return false;
  *static_cast<socklen_t*>(mem) = sizeof(sockaddr_in);
  mprotect(mem, static_cast<size_t>(page), PROT_READ);
  unsigned char addr[sizeof(sockaddr_in)];
  memset(addr, 0xAA, sizeof(addr));
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int rc = getsockname(s, reinterpret_cast<sockaddr*>(addr), static_cast<socklen_t*>(mem));
  close(s);
  munmap(mem, static_cast<size_t>(page));
  // Failing on the length before touching the address: the length is written first.
  return rc < 0 && addr[0] == 0xAA && addr[1] == 0xAA;
}

bool SetSyncWakeup(int listener) {
  // SECCOMP_IOCTL_NOTIF_SET_FLAGS takes the flags by value (not in <linux/seccomp.h> before 6.6).
  constexpr unsigned long kSetFlags = _IOW('!', 4, uint64_t);
  constexpr unsigned long kSyncWakeUp = 1;  // SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
  return ioctl(listener, kSetFlags, kSyncWakeUp) == 0;
}

KernelFeatures ProbeKernel() {
  KernelFeatures f;
  utsname uts{};
  if (uname(&uts) == 0) f.release = uts.release;

  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) < 0) return f;
  UniqueFd rd(pipe_fds[0]), wr(pipe_fds[1]);
  pid_t child = fork();
  if (child == 0) {
    unsigned char bits = ProbeInChild();
    (void)!write(wr.Get(), &bits, 1);
    _exit(0);
  }
  wr.Reset();
  unsigned char bits = 0;
  if (child > 0) {
    if (read(rd.Get(), &bits, 1) != 1) bits = 0;
    int status;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
  }
  f.user_notif = bits & kUserNotif;
  f.wait_killable = f.user_notif && (bits & kWaitKillable);
  f.addfd = f.user_notif && (bits & kAddFd);
  f.addfd_send = f.addfd && (bits & kAddFdSend);
  f.sync_wakeup = f.user_notif && (bits & kSyncWakeup);

  if (auto self = PidfdOpen(getpid())) {
    f.pidfd_getfd = PidfdGetfd(self->Get(), self->Get()).has_value();
  }
  f.pidfd_thread = PidfdOpen(getpid(), kPidfdThread).has_value();
  f.addrlen_first = ProbeAddrlenFirst();
  return f;
}

std::string KernelFeatures::Describe() const {
  auto yes = [](bool b) { return b ? "yes" : "no"; };
  return "kernel " + release + ": user_notif=" + yes(user_notif) + " addfd=" + yes(addfd) +
         " addfd_send=" + yes(addfd_send) + " wait_killable_recv=" + yes(wait_killable) +
         " pidfd_getfd=" + yes(pidfd_getfd) + " pidfd_thread=" + yes(pidfd_thread) +
         " sync_wakeup=" + yes(sync_wakeup) + " addrlen_first=" + yes(addrlen_first);
}

}  // namespace slipstream::tracer
