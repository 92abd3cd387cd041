#include "tracer/diagnosis.h"

#include <cerrno>
#include <charconv>

#include "base/errno_name.h"

namespace slipstream::tracer {
namespace {

struct FeatureInfo {
  const char* what;  // as the messages name it
  int major, minor;  // the first kernel that has it
};

FeatureInfo InfoOf(Feature f) {
  switch (f) {
    case Feature::kUserNotification:
      return {"seccomp user notification", 5, 0};
    case Feature::kNotifContinue:
      return {"SECCOMP_USER_NOTIF_FLAG_CONTINUE", 5, 5};
    case Feature::kPidfdGetfd:
      return {"pidfd_getfd", 5, 6};
    case Feature::kProcessVm:
      return {"process_vm_readv/process_vm_writev", 3, 2};
  }
  return {"?", 0, 0};
}

std::string Since(const FeatureInfo& info) {
  return "Linux " + std::to_string(info.major) + "." + std::to_string(info.minor);
}

std::string Kernel(const RefusalEvidence& e) { return "kernel " + e.release; }

// The call that failed, as the messages name it.
std::string CallText(Feature f) {
  switch (f) {
    case Feature::kPidfdGetfd:
      return "pidfd_getfd(2)";
    case Feature::kProcessVm:
      return "process_vm_readv(2)";
    default:
      return "seccomp(2)";
  }
}

// The calls Docker's default profile allows only with CAP_SYS_PTRACE, and the kernel checks like
// ptrace (ptrace_may_access) anyway.
bool PtraceClass(Feature f) { return f == Feature::kPidfdGetfd || f == Feature::kProcessVm; }

Diagnosis KernelTooOld(const RefusalEvidence& e, const FeatureInfo& info) {
  return {Cause::kKernel, Kernel(e) + " lacks " + info.what + " (" + Since(info) + "+)",
          "run on " + Since(info) + " or later"};
}

// No seccomp filter, and a kernel that should have the feature: its configuration lacks it.
Diagnosis KernelConfig(const RefusalEvidence& e, const FeatureInfo& info) {
  return {Cause::kKernel,
          CallText(e.feature) + " fails with " + ErrnoName(e.err) + " on " + Kernel(e) +
              " with no seccomp filter in place, although " + info.what + " is in " + Since(info) +
              "+",
          PtraceClass(e.feature) ? "use a kernel whose " + std::string(info.what) + " works"
                                 : "use a kernel built with CONFIG_SECCOMP_FILTER"};
}

// A seccomp filter is in place and the kernel is new enough: the filter refused.
Diagnosis FilterRefused(const RefusalEvidence& e, const FeatureInfo& info) {
  std::string seen = e.seccomp_mode ? "Seccomp: 2 in /proc/self/status"
                                    : "presumed: /proc/self/status could not be read";
  std::string reason = CallText(e.feature) + " fails with " + ErrnoName(e.err) +
                       " under the seccomp filter this process was started with (" + seen +
                       "), although " + Kernel(e) + " has " + info.what + " (" + Since(info) + "+)";
  if (!PtraceClass(e.feature)) {
    return {Cause::kSeccompFilter,
            reason + ": the container's or sandbox's seccomp profile refuses it",
            "allow seccomp(2) in that profile (Docker's default profile allows it)"};
  }
  if (e.err == ENOSYS) {
    // runc answers ENOSYS for system calls newer than every call the profile names.
    return {Cause::kSeccompFilter,
            reason + ": the container's seccomp profile does not know " + info.what,
            "run the container with a profile that allows pidfd_getfd, process_vm_readv and "
            "process_vm_writev, e.g. --security-opt seccomp=" +
                std::string(kDockerProfile) + " (docs/containers.md)"};
  }
  if (e.sys_ptrace_bounding) {
    return {Cause::kSeccompFilter,
            reason +
                " (the kernel never refuses it on one's own process): the container's "
                "seccomp profile refuses it although the container has CAP_SYS_PTRACE (in "
                "the bounding set), so it is not Docker's default profile",
            "run the container with --security-opt seccomp=" + std::string(kDockerProfile) +
                " or add pidfd_getfd, process_vm_readv and process_vm_writev to its profile "
                "(docs/containers.md)"};
  }
  return {Cause::kSeccompFilter,
          reason +
              " (the kernel never refuses it on one's own process): the container's seccomp "
              "profile refuses it (Docker's default allows " +
              info.what + " only with CAP_SYS_PTRACE)",
          "run the container with --security-opt seccomp=" + std::string(kDockerProfile) +
              " (Docker's default profile plus pidfd_getfd and process_vm_readv/writev only) or "
              "with --cap-add SYS_PTRACE (docs/containers.md)"};
}

Diagnosis DiagnoseUserNotification(const RefusalEvidence& e, const FeatureInfo& info,
                                   std::optional<KernelVersion> version) {
  if (e.err == EBUSY) {
    return {Cause::kNestedListener,
            "seccomp(2) fails with EBUSY: a seccomp filter with a user-notification listener "
            "already watches this process (another slipstream-trace or a runtime's supervisor), "
            "and the kernel allows one listener per filter chain",
            "run slipstream-trace outside that supervisor"};
  }
  if (e.err == EACCES && !e.cap_sys_admin) {
    return {Cause::kCapability,
            "seccomp(2) fails with EACCES: installing a filter needs NO_NEW_PRIVS or "
            "CAP_SYS_ADMIN, this process has no CAP_SYS_ADMIN and NO_NEW_PRIVS could not be set",
            "check what refuses prctl(PR_SET_NO_NEW_PRIVS), or grant CAP_SYS_ADMIN"};
  }
  if (version && !version->AtLeast(info.major, info.minor)) return KernelTooOld(e, info);
  if (e.seccomp_mode.value_or(2) == 2) return FilterRefused(e, info);
  // No filter: EINVAL is an old kernel's answer to NEW_LISTENER, ENOSYS one without seccomp.
  if (e.err != EINVAL && e.err != ENOSYS) {
    return {Cause::kUnknown, "seccomp(2) fails with " + std::string(ErrnoName(e.err)),
            "report this with the output of slipstream-trace -v"};
  }
  return version ? KernelConfig(e, info) : KernelTooOld(e, info);
}

// pidfd_getfd and process_vm_readv/writev, asked of our own process.
Diagnosis DiagnosePtraceClass(const RefusalEvidence& e, const FeatureInfo& info,
                              std::optional<KernelVersion> version) {
  if (version && !version->AtLeast(info.major, info.minor)) return KernelTooOld(e, info);
  if (e.seccomp_mode.value_or(2) == 2 && (e.err == EPERM || e.err == ENOSYS || e.err == EACCES)) {
    return FilterRefused(e, info);
  }
  if (e.err == ENOSYS) return version ? KernelConfig(e, info) : KernelTooOld(e, info);
  if (e.err == EPERM || e.err == EACCES) {
    // Not ptrace_may_access (our own process) and no seccomp filter: the file-receive hook.
    return {Cause::kSecurityModule,
            CallText(e.feature) + " fails with " + std::string(ErrnoName(e.err)) +
                " with no seccomp filter in place on " + Kernel(e) +
                ": a security module (AppArmor, SELinux) refuses it",
            "allow the process to take file descriptors of its own processes in that policy"};
  }
  return {Cause::kUnknown, CallText(e.feature) + " fails with " + std::string(ErrnoName(e.err)),
          "report this with the output of slipstream-trace -v"};
}

}  // namespace

std::optional<KernelVersion> ParseKernelRelease(std::string_view release) {
  KernelVersion v;
  const char* p = release.data();
  const char* end = p + release.size();
  auto major = std::from_chars(p, end, v.major);
  if (major.ec != std::errc() || major.ptr == end || *major.ptr != '.') return std::nullopt;
  auto minor = std::from_chars(major.ptr + 1, end, v.minor);
  if (minor.ec != std::errc()) return std::nullopt;
  return v;
}

std::string_view CauseName(Cause cause) {
  switch (cause) {
    case Cause::kKernel:
      return "kernel";
    case Cause::kSeccompFilter:
      return "seccomp-profile";
    case Cause::kCapability:
      return "capability";
    case Cause::kSecurityModule:
      return "security-module";
    case Cause::kNestedListener:
      return "nested-listener";
    case Cause::kUnknown:
      return "unknown";
  }
  return "unknown";
}

Diagnosis Diagnose(const RefusalEvidence& e) {
  FeatureInfo info = InfoOf(e.feature);
  std::optional<KernelVersion> version = ParseKernelRelease(e.release);
  switch (e.feature) {
    case Feature::kUserNotification:
      return DiagnoseUserNotification(e, info, version);
    case Feature::kNotifContinue:
      // Only an ioctl on our own listener: no profile filters it apart from ioctl(2) itself.
      return KernelTooOld(e, info);
    case Feature::kPidfdGetfd:
    case Feature::kProcessVm:
      return DiagnosePtraceClass(e, info, version);
  }
  return {};
}

}  // namespace slipstream::tracer
