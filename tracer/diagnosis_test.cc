#include "tracer/diagnosis.h"

#include <gtest/gtest.h>

#include <cerrno>

namespace slipstream::tracer {
namespace {

RefusalEvidence Evidence(Feature f, int err, const char* release, std::optional<int> mode,
                         bool cap_sys_admin = false) {
  RefusalEvidence e;
  e.feature = f;
  e.err = err;
  e.release = release;
  e.seccomp_mode = mode;
  e.cap_sys_admin = cap_sys_admin;
  return e;
}

bool Has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(DiagnosisTest, ParsesKernelReleases) {
  auto v = ParseKernelRelease("6.18.0-1-cloud-amd64");
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(v->major, 6);
  EXPECT_EQ(v->minor, 18);
  EXPECT_TRUE(v->AtLeast(5, 6));
  EXPECT_TRUE(v->AtLeast(6, 18));
  EXPECT_FALSE(v->AtLeast(6, 19));
  EXPECT_FALSE(v->AtLeast(7, 0));
  EXPECT_TRUE(ParseKernelRelease("5.4").has_value());
  EXPECT_FALSE(ParseKernelRelease("").has_value());
  EXPECT_FALSE(ParseKernelRelease("6").has_value());
  EXPECT_FALSE(ParseKernelRelease("x.y").has_value());
}

// Docker's default profile, non-root or root without --cap-add SYS_PTRACE: EPERM under a filter.
TEST(DiagnosisTest, PidfdGetfdEpermUnderAFilterBlamesTheProfileAndNamesBothFixes) {
  Diagnosis d = Diagnose(Evidence(Feature::kPidfdGetfd, EPERM, "6.18.0", 2));
  EXPECT_EQ(d.cause, Cause::kSeccompFilter);
  EXPECT_TRUE(Has(d.reason, "EPERM")) << d.reason;
  EXPECT_TRUE(Has(d.reason, "Seccomp: 2")) << d.reason;
  EXPECT_TRUE(Has(d.reason, "seccomp profile")) << d.reason;
  EXPECT_TRUE(Has(d.fix, "--cap-add SYS_PTRACE")) << d.fix;
  EXPECT_TRUE(Has(d.fix, "--security-opt seccomp=contrib/docker/seccomp.json")) << d.fix;
  EXPECT_FALSE(Has(d.Text(), "lacks")) << d.Text();
}

// --cap-add SYS_PTRACE was given and the profile still refuses: the capability is no fix.
TEST(DiagnosisTest, PidfdGetfdRefusedWithSysPtraceInTheBoundingSetNamesOnlyTheProfile) {
  RefusalEvidence e = Evidence(Feature::kPidfdGetfd, EPERM, "6.18.0", 2);
  e.sys_ptrace_bounding = true;
  Diagnosis d = Diagnose(e);
  EXPECT_EQ(d.cause, Cause::kSeccompFilter);
  EXPECT_TRUE(Has(d.reason, "not Docker's default profile")) << d.reason;
  EXPECT_TRUE(Has(d.fix, "--security-opt seccomp=contrib/docker/seccomp.json")) << d.fix;
  EXPECT_FALSE(Has(d.fix, "SYS_PTRACE")) << d.fix;
}

// runc's answer for calls a profile does not name: the capability would not help.
TEST(DiagnosisTest, PidfdGetfdEnosysUnderAFilterOnANewKernelBlamesTheProfile) {
  Diagnosis d = Diagnose(Evidence(Feature::kPidfdGetfd, ENOSYS, "6.1.0", 2));
  EXPECT_EQ(d.cause, Cause::kSeccompFilter);
  EXPECT_TRUE(Has(d.reason, "ENOSYS")) << d.reason;
  EXPECT_TRUE(Has(d.fix, "seccomp=contrib/docker/seccomp.json")) << d.fix;
  EXPECT_FALSE(Has(d.fix, "SYS_PTRACE")) << d.fix;
}

TEST(DiagnosisTest, PidfdGetfdOnAnOldKernelBlamesTheKernelEvenUnderAFilter) {
  for (auto mode : {std::optional<int>(0), std::optional<int>(2), std::optional<int>()}) {
    Diagnosis d = Diagnose(Evidence(Feature::kPidfdGetfd, ENOSYS, "5.4.0-150-generic", mode));
    EXPECT_EQ(d.cause, Cause::kKernel);
    EXPECT_TRUE(Has(d.reason, "kernel 5.4.0-150-generic lacks pidfd_getfd (Linux 5.6+)"))
        << d.reason;
    EXPECT_TRUE(Has(d.fix, "Linux 5.6 or later")) << d.fix;
  }
}

TEST(DiagnosisTest, PidfdGetfdEnosysWithoutAFilter) {
  EXPECT_EQ(Diagnose(Evidence(Feature::kPidfdGetfd, ENOSYS, "garbage", 0)).cause, Cause::kKernel);
  Diagnosis d = Diagnose(Evidence(Feature::kPidfdGetfd, ENOSYS, "6.18.0", 0));
  EXPECT_EQ(d.cause, Cause::kKernel);
  EXPECT_TRUE(Has(d.reason, "no seccomp filter")) << d.reason;
}

TEST(DiagnosisTest, PidfdGetfdRefusedWithoutAFilterBlamesASecurityModule) {
  for (int err : {EPERM, EACCES}) {
    Diagnosis d = Diagnose(Evidence(Feature::kPidfdGetfd, err, "6.18.0", 0));
    EXPECT_EQ(d.cause, Cause::kSecurityModule);
    EXPECT_TRUE(Has(d.reason, "AppArmor")) << d.reason;
  }
  EXPECT_EQ(Diagnose(Evidence(Feature::kPidfdGetfd, EINVAL, "6.18.0", 0)).cause, Cause::kUnknown);
}

TEST(DiagnosisTest, UnreadableSeccompModeIsPresumedAFilterAndSaysSo) {
  Diagnosis d = Diagnose(Evidence(Feature::kPidfdGetfd, EPERM, "6.18.0", std::nullopt));
  EXPECT_EQ(d.cause, Cause::kSeccompFilter);
  EXPECT_TRUE(Has(d.reason, "presumed")) << d.reason;
  EXPECT_FALSE(Has(d.reason, "Seccomp: 2")) << d.reason;
}

// What tests/programs/c/without_user_notif.c does: a filter answering EINVAL to seccomp(2).
TEST(DiagnosisTest, UserNotificationRefusedUnderAFilterOnANewKernel) {
  Diagnosis d = Diagnose(Evidence(Feature::kUserNotification, EINVAL, "6.18.0", 2));
  EXPECT_EQ(d.cause, Cause::kSeccompFilter);
  EXPECT_TRUE(Has(d.reason, "seccomp(2) fails with EINVAL")) << d.reason;
  EXPECT_TRUE(Has(d.fix, "allow seccomp(2)")) << d.fix;
}

TEST(DiagnosisTest, UserNotificationOnAnOldKernel) {
  Diagnosis d = Diagnose(Evidence(Feature::kUserNotification, EINVAL, "4.19.0", 2));
  EXPECT_EQ(d.cause, Cause::kKernel);
  EXPECT_TRUE(Has(d.reason, "lacks seccomp user notification (Linux 5.0+)")) << d.reason;
  d = Diagnose(Evidence(Feature::kUserNotification, EINVAL, "", 0));
  EXPECT_EQ(d.cause, Cause::kKernel);
  EXPECT_TRUE(Has(d.reason, "lacks")) << d.reason;
  d = Diagnose(Evidence(Feature::kUserNotification, ENOSYS, "6.18.0", 0));
  EXPECT_EQ(d.cause, Cause::kKernel);
  EXPECT_TRUE(Has(d.fix, "CONFIG_SECCOMP_FILTER")) << d.fix;
  d = Diagnose(Evidence(Feature::kNotifContinue, EINVAL, "5.4.0", 0));
  EXPECT_EQ(d.cause, Cause::kKernel);
  EXPECT_TRUE(Has(d.reason, "SECCOMP_USER_NOTIF_FLAG_CONTINUE (Linux 5.5+)")) << d.reason;
}

// The uid-0-in-a-container bug: without NO_NEW_PRIVS and CAP_SYS_ADMIN the kernel says EACCES.
TEST(DiagnosisTest, UserNotificationEaccesWithoutCapSysAdminNamesTheCapability) {
  Diagnosis d = Diagnose(Evidence(Feature::kUserNotification, EACCES, "6.18.0", 2));
  EXPECT_EQ(d.cause, Cause::kCapability);
  EXPECT_TRUE(Has(d.reason, "NO_NEW_PRIVS or CAP_SYS_ADMIN")) << d.reason;
  EXPECT_NE(Diagnose(Evidence(Feature::kUserNotification, EACCES, "6.18.0", 0, true)).cause,
            Cause::kCapability);
}

TEST(DiagnosisTest, UserNotificationEbusyIsANestedSupervisor) {
  Diagnosis d = Diagnose(Evidence(Feature::kUserNotification, EBUSY, "6.18.0", 2));
  EXPECT_EQ(d.cause, Cause::kNestedListener);
  EXPECT_TRUE(Has(d.reason, "one listener")) << d.reason;
}

// Docker's default profile refuses process_vm_readv/writev without CAP_SYS_PTRACE too.
TEST(DiagnosisTest, ProcessVmRefusedByTheProfileNamesTheSameFixes) {
  Diagnosis d = Diagnose(Evidence(Feature::kProcessVm, EPERM, "6.18.0", 2));
  EXPECT_EQ(d.cause, Cause::kSeccompFilter);
  EXPECT_TRUE(Has(d.reason, "process_vm_readv(2) fails with EPERM")) << d.reason;
  EXPECT_TRUE(Has(d.fix, "--cap-add SYS_PTRACE")) << d.fix;
  EXPECT_TRUE(Has(d.fix, "seccomp=contrib/docker/seccomp.json")) << d.fix;
  EXPECT_EQ(Diagnose(Evidence(Feature::kProcessVm, ENOSYS, "3.1.0", 0)).cause, Cause::kKernel);
  d = Diagnose(Evidence(Feature::kProcessVm, ENOSYS, "6.18.0", 0));
  EXPECT_EQ(d.cause, Cause::kKernel);  // built without CONFIG_CROSS_MEMORY_ATTACH
  EXPECT_EQ(Diagnose(Evidence(Feature::kProcessVm, EPERM, "6.18.0", 0)).cause,
            Cause::kSecurityModule);
}

TEST(DiagnosisTest, CauseNames) {
  EXPECT_EQ(CauseName(Cause::kSeccompFilter), "seccomp-profile");
  EXPECT_EQ(CauseName(Cause::kKernel), "kernel");
  EXPECT_EQ(CauseName(Cause::kCapability), "capability");
}

}  // namespace
}  // namespace slipstream::tracer
