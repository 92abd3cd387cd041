#include "base/credentials.h"

#include <gtest/gtest.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "base/syscalls.h"

namespace slipstream {
namespace {

// The CapEff field of /proc/self/status: the kernel's own rendering of the same set.
uint64_t CapEffFromProc() {
  auto text = ReadSmallFile("/proc/self/status");
  EXPECT_TRUE(text.has_value());
  size_t at = text->find("\nCapEff:");
  EXPECT_NE(at, std::string::npos);
  return std::strtoull(text->c_str() + at + 8, nullptr, 16);
}

TEST(CredentialsTest, EffectiveCapabilitiesEqualProcStatus) {
  auto caps = EffectiveCapabilities();
  ASSERT_TRUE(caps.has_value()) << caps.error().ToString();
  EXPECT_EQ(*caps, CapEffFromProc());
  EXPECT_EQ(HasEffectiveCapability(CAP_SYS_ADMIN), ((*caps >> CAP_SYS_ADMIN) & 1) != 0);
  EXPECT_FALSE(HasEffectiveCapability(-1));
  EXPECT_FALSE(HasEffectiveCapability(64));
}

TEST(CredentialsTest, DroppedCapabilityIsSeenInTheChild) {
  if (!HasEffectiveCapability(CAP_SYS_ADMIN)) GTEST_SKIP() << "needs CAP_SYS_ADMIN to drop it";
  pid_t child = fork();
  if (child == 0) {
    // Drop CAP_SYS_ADMIN from the effective set only (as root in a container has it not at all).
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
    syscall(SYS_capget, &header, data);
    data[CAP_TO_INDEX(CAP_SYS_ADMIN)].effective &= ~CAP_TO_MASK(CAP_SYS_ADMIN);
    if (syscall(SYS_capset, &header, data) < 0) _exit(2);
    _exit(HasEffectiveCapability(CAP_SYS_ADMIN) ? 1 : 0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

TEST(CredentialsTest, BoundingSetEqualsProcStatus) {
  auto text = ReadSmallFile("/proc/self/status");
  ASSERT_TRUE(text.has_value());
  size_t at = text->find("\nCapBnd:");
  ASSERT_NE(at, std::string::npos);
  uint64_t bounding = std::strtoull(text->c_str() + at + 8, nullptr, 16);
  for (int cap : {CAP_SYS_PTRACE, CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_CHOWN}) {
    EXPECT_EQ(InBoundingSet(cap), ((bounding >> cap) & 1) != 0) << cap;
  }
}

TEST(CredentialsTest, ParsesTheSeccompField) {
  EXPECT_EQ(ParseSeccompMode("Name:\tx\nSeccomp:\t2\nSeccomp_filters:\t1\n"), 2);
  EXPECT_EQ(ParseSeccompMode("Name:\tx\nSeccomp:\t0\n"), 0);
  EXPECT_EQ(ParseSeccompMode("Name:\tx\nSeccomp:\t1"), 1);
  // Seccomp_filters is another field; no Seccomp field at all is "unknown", not "none".
  EXPECT_EQ(ParseSeccompMode("Name:\tx\nSeccomp_filters:\t1\n"), std::nullopt);
  EXPECT_EQ(ParseSeccompMode("Name:\tx\nSeccomp:\tx\n"), std::nullopt);
  EXPECT_EQ(ParseSeccompMode("Name:\tx\nSeccomp:\t7\n"), std::nullopt);
  EXPECT_EQ(ParseSeccompMode(""), std::nullopt);
}

TEST(CredentialsTest, SeccompModeFollowsAFilter) {
  auto before = SeccompMode();
  ASSERT_TRUE(before.has_value());
  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  pid_t child = fork();
  if (child == 0) {
    // Strict mode would allow no read of /proc; a filter is mode 2 (prctl form, Linux 3.5).
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    sock_filter allow = BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    sock_fprog prog{1, &allow};
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0) _exit(3);
    auto mode = SeccompMode();
    char byte = static_cast<char>(mode ? *mode : 9);
    (void)!write(pipe_fds[1], &byte, 1);
    _exit(0);
  }
  close(pipe_fds[1]);
  char byte = 0;
  EXPECT_EQ(read(pipe_fds[0], &byte, 1), 1);
  close(pipe_fds[0]);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_EQ(byte, 2);
}

}  // namespace
}  // namespace slipstream
