#include "tracer/probe.h"

#include <fcntl.h>
#include <linux/capability.h>
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

#include "base/credentials.h"
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
  kInstalled = 1 << 5,
};

// What the probe child reports through its pipe.
struct ChildReport {
  unsigned char bits = 0;
  int install_err = 0;  // errno of seccomp(SET_MODE_FILTER, NEW_LISTENER), 0 when installed
};

// Runs in the forked child: only syscalls. An unknown ioctl or flag gives EINVAL (or ENOTTY); a
// known one gets as far as looking up notification id 0, which does not exist: ENOENT.
ChildReport ProbeInChild() {
  ChildReport report;
  AllowFilterInstall();
  BpfProgram allow_all = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
  int notify_fd = InstallFilter(allow_all, SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV);
  if (notify_fd >= 0) {
    report.bits |= kWaitKillable;
  } else {
    notify_fd = InstallFilter(allow_all, 0);
  }
  if (notify_fd < 0) {
    report.install_err = -notify_fd;
    return report;
  }
  report.bits |= kInstalled;
  seccomp_notif_resp resp{};
  resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
  if (ioctl(notify_fd, SECCOMP_IOCTL_NOTIF_SEND, &resp) < 0 && errno == ENOENT) {
    report.bits |= kUserNotif;
  }
  seccomp_notif_addfd addfd{};
  addfd.srcfd = static_cast<uint32_t>(notify_fd);
  if (ioctl(notify_fd, SECCOMP_IOCTL_NOTIF_ADDFD, &addfd) < 0 && errno == ENOENT) {
    report.bits |= kAddFd;
  }
  addfd.flags = SECCOMP_ADDFD_FLAG_SEND;
  if (ioctl(notify_fd, SECCOMP_IOCTL_NOTIF_ADDFD, &addfd) < 0 && errno == ENOENT) {
    report.bits |= kAddFdSend;
  }
  if (SetSyncWakeup(notify_fd)) report.bits |= kSyncWakeup;
  return report;
}

// process_vm_readv and process_vm_writev of a word of our own memory (the same value written back):
// 0, or the errno of the first that fails.
int ProbeProcessVm() {
  uint64_t word = 0x5157;
  uint64_t copy = 0;
  auto st = ReadTargetMemory(getpid(), reinterpret_cast<uint64_t>(&word),
                             {reinterpret_cast<uint8_t*>(&copy), sizeof(copy)});
  if (st) {
    st = WriteTargetMemory(getpid(), reinterpret_cast<uint64_t>(&word),
                           {reinterpret_cast<const uint8_t*>(&copy), sizeof(copy)});
  }
  return st ? 0 : st.error().err;
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

bool SetSyncWakeup(int notify_fd) {
  // SECCOMP_IOCTL_NOTIF_SET_FLAGS takes the flags by value (not in <linux/seccomp.h> before 6.6).
  constexpr unsigned long kSetFlags = _IOW('!', 4, uint64_t);
  constexpr unsigned long kSyncWakeUp = 1;  // SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
  return ioctl(notify_fd, kSetFlags, kSyncWakeUp) == 0;
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
    ChildReport report = ProbeInChild();
    (void)!write(wr.Get(), &report, sizeof(report));
    _exit(0);
  }
  wr.Reset();
  ChildReport report;
  if (child > 0) {
    if (read(rd.Get(), &report, sizeof(report)) != sizeof(report)) report = {0, EPROTO};
    int status;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
  } else {
    report.install_err = errno;  // no probe at all: reported as the fork's errno
  }
  unsigned char bits = report.bits;
  f.user_notif_err = report.install_err;
  f.filter_installed = bits & kInstalled;
  f.user_notif = bits & kUserNotif;
  f.wait_killable = f.user_notif && (bits & kWaitKillable);
  f.addfd = f.user_notif && (bits & kAddFd);
  f.addfd_send = f.addfd && (bits & kAddFdSend);
  f.sync_wakeup = f.user_notif && (bits & kSyncWakeup);

  // On our own process the kernel never refuses (ptrace_may_access allows the same thread
  // group): a refusal here comes from a seccomp filter, a security module or an old kernel.
  if (auto self = PidfdOpen(getpid())) {
    auto copy = PidfdGetfd(self->Get(), self->Get());
    f.pidfd_getfd = copy.has_value();
    if (!copy) f.pidfd_getfd_err = copy.error().err;
  } else {
    f.pidfd_getfd_err = self.error().err;
  }
  f.process_vm_err = ProbeProcessVm();
  f.process_vm = f.process_vm_err == 0;
  f.seccomp_mode = SeccompMode();
  f.cap_sys_admin = HasEffectiveCapability(CAP_SYS_ADMIN);
  f.sys_ptrace_bounding = InBoundingSet(CAP_SYS_PTRACE);
  f.pidfd_thread = PidfdOpen(getpid(), kPidfdThread).has_value();
  f.addrlen_first = ProbeAddrlenFirst();
  return f;
}

std::string KernelFeatures::Describe() const {
  auto yes = [](bool b) { return b ? "yes" : "no"; };
  return "kernel " + release + ": user_notif=" + yes(user_notif) + " addfd=" + yes(addfd) +
         " addfd_send=" + yes(addfd_send) + " wait_killable_recv=" + yes(wait_killable) +
         " pidfd_getfd=" + yes(pidfd_getfd) + " process_vm=" + yes(process_vm) +
         " pidfd_thread=" + yes(pidfd_thread) + " sync_wakeup=" + yes(sync_wakeup) +
         " addrlen_first=" + yes(addrlen_first) +
         " seccomp_mode=" + (seccomp_mode ? std::to_string(*seccomp_mode) : "?") +
         " cap_sys_admin=" + yes(cap_sys_admin) +
         " sys_ptrace_bounding=" + yes(sys_ptrace_bounding);
}

std::optional<Diagnosis> KernelFeatures::WhyNoUserNotif() const {
  if (user_notif) return std::nullopt;
  RefusalEvidence e;
  // Installed but no FLAG_CONTINUE: only a kernel before 5.5 answers so.
  e.feature = filter_installed ? Feature::kNotifContinue : Feature::kUserNotification;
  e.err = filter_installed ? EINVAL : user_notif_err;
  e.release = release;
  e.seccomp_mode = seccomp_mode;
  e.cap_sys_admin = cap_sys_admin;
  e.sys_ptrace_bounding = sys_ptrace_bounding;
  return Diagnose(e);
}

std::optional<Diagnosis> KernelFeatures::WhyNoPidfdGetfd() const {
  if (pidfd_getfd) return std::nullopt;
  return Diagnose({Feature::kPidfdGetfd, pidfd_getfd_err, release, seccomp_mode, cap_sys_admin,
                   sys_ptrace_bounding});
}

std::optional<Diagnosis> KernelFeatures::WhyNoProcessVm() const {
  if (process_vm) return std::nullopt;
  return Diagnose({Feature::kProcessVm, process_vm_err, release, seccomp_mode, cap_sys_admin,
                   sys_ptrace_bounding});
}

}  // namespace slipstream::tracer
