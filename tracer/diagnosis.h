// Why the kernel refused a feature Slipstream needs, told apart by kernel evidence, and the
// smallest change that makes it work. Pure: the probe (probe.cc) gathers the evidence, this
// decides and words the message, and diagnosis_test.cc covers every branch.
//
// The causes look alike from the outside: a kernel too old, a seccomp filter the process was
// started under (a container's profile: Docker's default refuses pidfd_getfd without
// CAP_SYS_PTRACE), a missing capability, a security module. What tells them apart:
//  - the errno: a kernel without a system call answers ENOSYS; a seccomp profile usually EPERM
//    (Docker's default), sometimes ENOSYS (runc for calls a profile does not know);
//  - "Seccomp: 2" in /proc/self/status: some filter is in place;
//  - the kernel version, against the version that brought the feature;
//  - the call itself: the kernel never refuses pidfd_getfd or process_vm_readv on the caller's
//    own process (ptrace_may_access allows the same thread group), which is what the probe asks
//    for.
#ifndef SLIPSTREAM_TRACER_DIAGNOSIS_H_
#define SLIPSTREAM_TRACER_DIAGNOSIS_H_

#include <optional>
#include <string>
#include <string_view>

namespace slipstream::tracer {

// The seccomp profile Slipstream ships for Docker: Docker's default plus pidfd_getfd,
// process_vm_readv and process_vm_writev, which Docker allows only with CAP_SYS_PTRACE.
inline constexpr std::string_view kDockerProfile = "contrib/docker/seccomp.json";

struct KernelVersion {
  int major = 0;
  int minor = 0;
  bool AtLeast(int want_major, int want_minor) const {
    return major > want_major || (major == want_major && minor >= want_minor);
  }
};

// "6.18.0-1-amd64" -> {6, 18}; nullopt when the release does not start with MAJOR.MINOR.
std::optional<KernelVersion> ParseKernelRelease(std::string_view release);

enum class Feature {
  kUserNotification,  // seccomp(SET_MODE_FILTER, NEW_LISTENER), Linux 5.0
  kNotifContinue,     // SECCOMP_USER_NOTIF_FLAG_CONTINUE, Linux 5.5
  kPidfdGetfd,        // pidfd_getfd(2) on our own process, Linux 5.6
  kProcessVm,         // process_vm_readv/writev(2) on our own process, Linux 3.2
};

enum class Cause {
  kKernel,          // the kernel lacks it (version or configuration)
  kSeccompFilter,   // a seccomp filter this process runs under (a container's profile)
  kCapability,      // a capability (or NO_NEW_PRIVS) is missing
  kSecurityModule,  // AppArmor, SELinux: refused with no seccomp filter in place
  kNestedListener,  // another seccomp user-notification supervisor already watches us
  kUnknown,
};

std::string_view CauseName(Cause cause);

struct RefusalEvidence {
  Feature feature = Feature::kUserNotification;
  int err = 0;                      // errno of the refused call
  std::string release;              // uname -r
  std::optional<int> seccomp_mode;  // "Seccomp:" of /proc/self/status: 0 none, 2 filter
  bool cap_sys_admin = false;       // CAP_SYS_ADMIN in the effective set
  // CAP_SYS_PTRACE in the bounding set: the container was given it (docker --cap-add), so a
  // profile that still refuses pidfd_getfd is not Docker's default, and the capability is no fix.
  bool sys_ptrace_bounding = false;
};

struct Diagnosis {
  Cause cause = Cause::kUnknown;
  std::string reason;  // what refused it, with the evidence
  std::string fix;     // the smallest change that makes it work
  std::string Text() const { return reason + "; " + fix; }
};

Diagnosis Diagnose(const RefusalEvidence& evidence);

}  // namespace slipstream::tracer

#endif  // SLIPSTREAM_TRACER_DIAGNOSIS_H_
