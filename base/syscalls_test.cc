#include "base/syscalls.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <future>
#include <thread>

namespace slipstream {
namespace {

// Two pages: the first mapped read-write, the second unmapped.
struct Pages {
  Pages() {
    page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    void* mem = mmap(nullptr, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    EXPECT_NE(mem, MAP_FAILED);
    base = static_cast<uint8_t*>(mem);
    EXPECT_EQ(munmap(base + page, page), 0);
  }
  ~Pages() { munmap(base, page); }
  uint64_t Addr(size_t offset) const { return reinterpret_cast<uint64_t>(base + offset); }
  size_t page;
  uint8_t* base;
};

TEST(SyscallsTest, PidfdGetfdCopiesTheSameOpenFile) {
  auto self = PidfdOpen(getpid());
  ASSERT_TRUE(self.has_value()) << self.error().ToString();
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd a(sv[0]), b(sv[1]);
  auto copy = PidfdGetfd(self->Get(), a.Get());
  ASSERT_TRUE(copy.has_value()) << copy.error().ToString();
  EXPECT_NE(copy->Get(), a.Get());
  EXPECT_EQ(*GetFileId(copy->Get()), *GetFileId(a.Get()));
  EXPECT_NE(*GetFileId(copy->Get()), *GetFileId(b.Get()));
  // The copy is close-on-exec in our process.
  EXPECT_TRUE(fcntl(copy->Get(), F_GETFD) & FD_CLOEXEC);
  // Same open file description: a status flag set through one shows through the other.
  ASSERT_TRUE(SetNonBlocking(copy->Get(), true).has_value());
  EXPECT_TRUE(*GetFileFlags(a.Get()) & O_NONBLOCK);
}

TEST(SyscallsTest, PidfdGetfdOfAClosedFdIsEbadf) {
  auto self = PidfdOpen(getpid());
  ASSERT_TRUE(self.has_value());
  auto copy = PidfdGetfd(self->Get(), 1009);
  ASSERT_FALSE(copy.has_value());
  EXPECT_EQ(copy.error().err, EBADF);
  EXPECT_STREQ(copy.error().op, "pidfd_getfd");
}

TEST(SyscallsTest, PidfdOpenOfNoProcessIsEsrch) {
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) _exit(0);
  int status;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  auto fd = PidfdOpen(child);
  ASSERT_FALSE(fd.has_value());
  EXPECT_EQ(fd.error().err, ESRCH);
}

TEST(SyscallsTest, PidfdSendSignal) {
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    pause();
    _exit(0);
  }
  auto fd = PidfdOpen(child);
  ASSERT_TRUE(fd.has_value());
  ASSERT_TRUE(PidfdSendSignal(fd->Get(), SIGKILL).has_value());
  int status;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
}

TEST(SyscallsTest, ReadAndWriteTargetMemory) {
  Pages p;
  std::memcpy(p.base, "slipstream", 10);
  uint8_t out[10];
  ASSERT_TRUE(ReadTargetMemory(getpid(), p.Addr(0), out).has_value());
  EXPECT_EQ(std::memcmp(out, "slipstream", 10), 0);
  const uint8_t in[4] = {'T', 'E', 'S', 'T'};
  ASSERT_TRUE(WriteTargetMemory(getpid(), p.Addr(2), in).has_value());
  EXPECT_EQ(std::memcmp(p.base, "slTESTream", 10), 0);
}

TEST(SyscallsTest, EmptyTransfersSucceedWithoutTouchingMemory) {
  EXPECT_TRUE(ReadTargetMemory(getpid(), 0, {}).has_value());
  EXPECT_TRUE(WriteTargetMemory(getpid(), 0, {}).has_value());
}

TEST(SyscallsTest, UnmappedMemoryIsEfault) {
  Pages p;
  uint8_t buf[8];
  auto r = ReadTargetMemory(getpid(), p.Addr(p.page), buf);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().err, EFAULT);
  auto w = WriteTargetMemory(getpid(), p.Addr(p.page), buf);
  ASSERT_FALSE(w.has_value());
  EXPECT_EQ(w.error().err, EFAULT);
  auto null_read = ReadTargetMemory(getpid(), 0, buf);
  ASSERT_FALSE(null_read.has_value());
  EXPECT_EQ(null_read.error().err, EFAULT);
}

TEST(SyscallsTest, PartialTransfersAreEfault) {
  Pages p;
  uint8_t buf[16];
  // 8 bytes mapped, 8 unmapped: the kernel's copy_from_user would fail, so must we.
  auto r = ReadTargetMemory(getpid(), p.Addr(p.page - 8), buf);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().err, EFAULT);
  std::memset(buf, 0x5a, sizeof(buf));
  auto w = WriteTargetMemory(getpid(), p.Addr(p.page - 8), buf);
  ASSERT_FALSE(w.has_value());
  EXPECT_EQ(w.error().err, EFAULT);
}

TEST(SyscallsTest, WriteToReadOnlyMemoryIsEfault) {
  Pages p;
  ASSERT_EQ(mprotect(p.base, p.page, PROT_READ), 0);
  const uint8_t in[4] = {1, 2, 3, 4};
  auto w = WriteTargetMemory(getpid(), p.Addr(0), in);
  ASSERT_FALSE(w.has_value());
  EXPECT_EQ(w.error().err, EFAULT);
  uint8_t out[4];
  EXPECT_TRUE(ReadTargetMemory(getpid(), p.Addr(0), out).has_value());
}

TEST(SyscallsTest, FileFlagsAndNonBlocking) {
  int fds[2];
  ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
  UniqueFd r(fds[0]), w(fds[1]);
  EXPECT_FALSE(*GetFileFlags(r.Get()) & O_NONBLOCK);
  ASSERT_TRUE(SetNonBlocking(r.Get(), true).has_value());
  EXPECT_TRUE(*GetFileFlags(r.Get()) & O_NONBLOCK);
  ASSERT_TRUE(SetNonBlocking(r.Get(), true).has_value());  // idempotent
  ASSERT_TRUE(SetNonBlocking(r.Get(), false).has_value());
  EXPECT_FALSE(*GetFileFlags(r.Get()) & O_NONBLOCK);
  auto bad = GetFileFlags(1009);
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().err, EBADF);
  EXPECT_FALSE(SetNonBlocking(1009, true).has_value());
}

TEST(SyscallsTest, FileIdIdentifiesTheFileNotTheNumber) {
  UniqueFd a(open("/dev/null", O_RDONLY | O_CLOEXEC));
  UniqueFd b(dup(a.Get()));
  UniqueFd c(open("/dev/zero", O_RDONLY | O_CLOEXEC));
  EXPECT_EQ(*GetFileId(a.Get()), *GetFileId(b.Get()));
  EXPECT_NE(*GetFileId(a.Get()), *GetFileId(c.Get()));
  EXPECT_FALSE(GetFileId(1009).has_value());
}

// A second thread of this process, alive until End().
class LiveThread {
 public:
  LiveThread()
      : thread_([this] {
          started_.set_value(static_cast<pid_t>(syscall(SYS_gettid)));
          release_.get_future().wait();
        }),
        tid_(started_.get_future().get()) {}
  ~LiveThread() { End(); }
  pid_t tid() const { return tid_; }
  void End() {
    if (!thread_.joinable()) return;
    release_.set_value();
    thread_.join();
  }

 private:
  std::promise<pid_t> started_;
  std::promise<void> release_;
  std::thread thread_;
  pid_t tid_;
};

TEST(SyscallsTest, ThreadGroupOfAThreadIsTheProcess) {
  EXPECT_EQ(*ThreadGroupOf(getpid()), getpid());
  LiveThread live;
  pid_t tid = live.tid();
  auto group = ThreadGroupOf(tid);
  live.End();
  EXPECT_NE(tid, getpid());
  ASSERT_TRUE(group.has_value()) << group.error().ToString();
  EXPECT_EQ(*group, getpid());
}

TEST(SyscallsTest, IsThreadOfChecksTheThreadGroupNow) {
  EXPECT_TRUE(IsThreadOf(getpid(), getpid()));
  LiveThread live;
  pid_t tid = live.tid();
  EXPECT_TRUE(IsThreadOf(tid, getpid()));
  EXPECT_FALSE(IsThreadOf(tid, getppid()));  // /proc/PPID/task/TID: not a thread of our parent
  EXPECT_FALSE(IsThreadOf(getppid(), getpid()));
  live.End();
  // The thread has exited (joined): its tid belongs to no process until reused.
  for (int i = 0; i < 100 && IsThreadOf(tid, getpid()); ++i) usleep(1000);
  EXPECT_FALSE(IsThreadOf(tid, getpid()));
}

TEST(SyscallsTest, ThreadGroupOfNoThreadFails) {
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) _exit(0);
  int status;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  auto group = ThreadGroupOf(child);
  ASSERT_FALSE(group.has_value());
  EXPECT_EQ(group.error().err, ENOENT);
}

TEST(SyscallsTest, ReadSmallFile) {
  auto status = ReadSmallFile("/proc/self/status");
  ASSERT_TRUE(status.has_value());
  EXPECT_NE(status->find("Tgid:"), std::string::npos);
  // Larger than the 4 KiB read buffer.
  auto maps = ReadSmallFile("/proc/self/maps");
  ASSERT_TRUE(maps.has_value());
  EXPECT_GT(maps->size(), 0u);
  auto missing = ReadSmallFile("/nonexistent/slipstream");
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().err, ENOENT);
  EXPECT_STREQ(missing.error().op, "open");
}

TEST(SysErrorTest, ToStringAndTargetGone) {
  SysError e{ECONNREFUSED, "connect"};
  EXPECT_EQ(e.ToString(), "connect: ECONNREFUSED (111)");
  EXPECT_FALSE(e.TargetGone());
  EXPECT_TRUE((SysError{ENOENT, "ioctl(NOTIF_SEND)"}).TargetGone());
}

}  // namespace
}  // namespace slipstream
