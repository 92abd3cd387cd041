#include "tracer/target.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "base/syscalls.h"
#include "tracer/pidfd_cache.h"
#include "tracer/probe.h"

namespace slipstream::tracer {
namespace {

bool PidfdThread() {
  static const bool has = ProbeKernel().pidfd_thread;
  return has;
}

// A forked child that serves as the target. Before the fork the test maps three shared pages:
// page 0 stays read-write in both processes, the child unmaps page 1 and makes page 2 read-only
// (the test still sees all three, so it can prepare and inspect the child's memory). The child
// then runs getsockname() on request, with the pointers the test sends, so the kernel's own
// behaviour can be compared with CopySockAddrOut's.
class Child {
 public:
  explicit Child(int sock) {
    page_ = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    void* mem = mmap(nullptr, 3 * page_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    EXPECT_NE(mem, MAP_FAILED);
    base_ = static_cast<uint8_t*>(mem);
    int to_child[2], to_parent[2];
    EXPECT_EQ(pipe2(to_child, O_CLOEXEC), 0);
    EXPECT_EQ(pipe2(to_parent, O_CLOEXEC), 0);
    pid_ = fork();
    if (pid_ == 0) {
      close(to_child[1]);  // so that the test closing its end means EOF here
      close(to_parent[0]);
      munmap(base_ + page_, page_);
      mprotect(base_ + 2 * page_, page_, PROT_READ);
      Serve(sock, to_child[0], to_parent[1]);
    }
    close(to_child[0]);
    close(to_parent[1]);
    requests_.Reset(to_child[1]);
    replies_.Reset(to_parent[0]);
    int ready;
    EXPECT_EQ(read(replies_.Get(), &ready, sizeof(ready)), static_cast<ssize_t>(sizeof(ready)));
  }
  ~Child() {
    requests_.Reset();  // EOF: the child exits
    int status;
    waitpid(pid_, &status, 0);
    munmap(base_, 3 * page_);
  }

  pid_t pid() const { return pid_; }
  uint8_t* rw() const { return base_; }                     // page 0
  uint8_t* unmapped() const { return base_ + page_; }       // page 1 (in the child)
  uint8_t* read_only() const { return base_ + 2 * page_; }  // page 2 (in the child)
  uint8_t* straddle() const { return base_ + page_ - 8; }   // 8 bytes, then page 1
  static uint64_t Addr(const void* p) { return reinterpret_cast<uint64_t>(p); }

  // Runs getsockname(sock, addr, addrlen) in the child; returns 0 or -errno.
  int KernelGetsockname(uint64_t addr, uint64_t addrlen) {
    uint64_t req[2] = {addr, addrlen};
    EXPECT_EQ(write(requests_.Get(), req, sizeof(req)), static_cast<ssize_t>(sizeof(req)));
    int rc = 0;
    EXPECT_EQ(read(replies_.Get(), &rc, sizeof(rc)), static_cast<ssize_t>(sizeof(rc)));
    return rc;
  }

 private:
  [[noreturn]] static void Serve(int sock, int requests, int replies) {
    int ready = 1;
    (void)!write(replies, &ready, sizeof(ready));
    uint64_t req[2];
    while (read(requests, req, sizeof(req)) == static_cast<ssize_t>(sizeof(req))) {
      // The raw syscall: a sanitizer's getsockname() interceptor would touch the pointers first.
      long rc = syscall(SYS_getsockname, sock, req[0], req[1]);
      int result = rc < 0 ? -errno : 0;
      (void)!write(replies, &result, sizeof(result));
    }
    _exit(0);
  }

  size_t page_ = 0;
  uint8_t* base_ = nullptr;
  pid_t pid_ = -1;
  UniqueFd requests_, replies_;
};

// An IPv6 socket bound to [::1] (28-byte address), inherited by the child.
struct BoundSocket {
  BoundSocket() {
    fd.Reset(socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in6 sin6{};
    sin6.sin6_family = AF_INET6;
    sin6.sin6_addr = in6addr_loopback;
    EXPECT_EQ(bind(fd.Get(), reinterpret_cast<sockaddr*>(&sin6), sizeof(sin6)), 0);
    socklen_t len = sizeof(sockaddr_storage);
    EXPECT_EQ(getsockname(fd.Get(), addr.mutable_get(), &len), 0);
    addr.set_len(len);
  }
  UniqueFd fd;
  SockAddr addr;
};

class TargetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    child_ = std::make_unique<Child>(sock_.fd.Get());
    auto t = TargetAccess::Open(child_->pid(), PidfdThread());
    ASSERT_TRUE(t.has_value()) << t.error().ToString();
    target_ = std::make_unique<TargetAccess>(std::move(*t));
  }
  BoundSocket sock_;
  std::unique_ptr<Child> child_;
  std::unique_ptr<TargetAccess> target_;
};

TEST_F(TargetTest, OpenWithAndWithoutPidfdThread) {
  EXPECT_EQ(target_->tid(), child_->pid());
  EXPECT_GE(target_->pidfd(), 0);
  auto leader = TargetAccess::Open(child_->pid(), false);
  ASSERT_TRUE(leader.has_value()) << leader.error().ToString();
  EXPECT_EQ(leader->tid(), child_->pid());
}

TEST_F(TargetTest, OpenOfAGoneThreadFails) {
  pid_t gone = fork();
  if (gone == 0) _exit(0);
  int status;
  ASSERT_EQ(waitpid(gone, &status, 0), gone);
  EXPECT_FALSE(TargetAccess::Open(gone, PidfdThread()).has_value());
  EXPECT_FALSE(TargetAccess::Open(gone, false).has_value());
}

// Without PIDFD_THREAD a tid is opened as its process; the entry stays valid while the tid still
// belongs to that process, and the fd handed out stays open across later Gets.
TEST_F(TargetTest, PidfdCacheKeepsPidfdsOpenAndNamesTheRightProcess) {
  PidfdCache process_pidfds(false);
  auto first = process_pidfds.Get(child_->pid());
  ASSERT_TRUE(first.has_value()) << first.error().ToString();
  auto own = process_pidfds.Get(getpid());
  ASSERT_TRUE(own.has_value());
  EXPECT_NE(*first, *own);
  EXPECT_EQ(fcntl(*first, F_GETFD), FD_CLOEXEC) << "an earlier Get's fd is still open";
  auto again = process_pidfds.Get(child_->pid());
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(*again, *first);
  EXPECT_EQ(process_pidfds.size(), 2u);
  if (!PidfdThread()) GTEST_SKIP() << "no PIDFD_THREAD (Linux 6.9)";
  PidfdCache thread_pidfds(true);
  auto a = thread_pidfds.Get(child_->pid());
  auto b = thread_pidfds.Get(child_->pid());
  ASSERT_TRUE(a.has_value() && b.has_value());
  EXPECT_EQ(*a, *b);
  EXPECT_EQ(thread_pidfds.size(), 1u);
}

TEST_F(TargetTest, TakeFdCopiesTheTargetsFile) {
  auto copy = target_->TakeFd(sock_.fd.Get());
  ASSERT_TRUE(copy.has_value()) << copy.error().ToString();
  EXPECT_EQ(*GetFileId(copy->Get()), *GetFileId(sock_.fd.Get()));
  auto missing = target_->TakeFd(1009);
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().err, EBADF);
}

TEST_F(TargetTest, ReadWriteInt) {
  std::memcpy(child_->rw(), "\x2a\0\0\0", 4);
  EXPECT_EQ(*target_->ReadInt(Child::Addr(child_->rw())), 42);
  ASSERT_TRUE(target_->WriteInt(Child::Addr(child_->rw() + 4), -7).has_value());
  int32_t v;
  std::memcpy(&v, child_->rw() + 4, 4);
  EXPECT_EQ(v, -7);
  EXPECT_EQ(target_->ReadInt(Child::Addr(child_->unmapped())).error().err, EFAULT);
  EXPECT_EQ(target_->WriteInt(Child::Addr(child_->read_only()), 1).error().err, EFAULT);
  EXPECT_TRUE(target_->ReadInt(Child::Addr(child_->read_only())).has_value());
}

// ---- CopySockAddrIn: move_addr_to_kernel() semantics
// ----------------------------------------------

TEST_F(TargetTest, CopySockAddrInCopiesTheBytes) {
  std::memcpy(child_->rw(), sock_.addr.get(), sock_.addr.len());
  auto a = CopySockAddrIn(*target_, Child::Addr(child_->rw()), sock_.addr.len());
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(*a, sock_.addr);
  EXPECT_TRUE(a->IsInet());
  // Read-only memory is fine to read from.
  std::memcpy(child_->read_only(), sock_.addr.get(), sock_.addr.len());
  auto ro = CopySockAddrIn(*target_, Child::Addr(child_->read_only()), sock_.addr.len());
  ASSERT_TRUE(ro.has_value());
  EXPECT_EQ(*ro, sock_.addr);
}

TEST_F(TargetTest, CopySockAddrInLengths) {
  uint64_t addr = Child::Addr(child_->rw());
  // Zero bytes: nothing is read, not even from a bad pointer.
  auto empty = CopySockAddrIn(*target_, Child::Addr(child_->unmapped()), 0);
  ASSERT_TRUE(empty.has_value());
  EXPECT_EQ(empty->len(), 0u);
  EXPECT_EQ(CopySockAddrIn(*target_, addr, sizeof(sockaddr_storage))->len(),
            sizeof(sockaddr_storage));
  EXPECT_EQ(CopySockAddrIn(*target_, addr, sizeof(sockaddr_storage) + 1).error().err, EINVAL);
  EXPECT_EQ(CopySockAddrIn(*target_, addr, -1).error().err, EINVAL);
  // The kernel takes addrlen as an int: only the low 32 bits of the register count.
  EXPECT_EQ(CopySockAddrIn(*target_, addr, 0xffffffffll).error().err, EINVAL);
  auto low_bits = CopySockAddrIn(*target_, addr, (1ll << 32) | 16);
  ASSERT_TRUE(low_bits.has_value());
  EXPECT_EQ(low_bits->len(), 16u);
}

TEST_F(TargetTest, CopySockAddrInFaults) {
  EXPECT_EQ(CopySockAddrIn(*target_, Child::Addr(child_->unmapped()), 16).error().err, EFAULT);
  EXPECT_EQ(CopySockAddrIn(*target_, 0, 16).error().err, EFAULT);
  EXPECT_EQ(CopySockAddrIn(*target_, Child::Addr(child_->straddle()), 16).error().err, EFAULT);
  EXPECT_TRUE(CopySockAddrIn(*target_, Child::Addr(child_->straddle()), 8).has_value());
}

// Which order this kernel's move_addr_to_user() writes in (probed like the supervisor does).
static bool AddrlenFirst() {
  static const bool first = ProbeKernel().addrlen_first;
  return first;
}

// ---- CopySockAddrOut: move_addr_to_user() semantics
// -------------------------------------------------

TEST_F(TargetTest, CopySockAddrOutTruncatesToTheCallersLength) {
  uint8_t* buf = child_->rw();
  int32_t* len = reinterpret_cast<int32_t*>(child_->rw() + 512);
  std::memset(buf, 0xEE, 64);
  *len = 16;
  ASSERT_TRUE(
      CopySockAddrOut(*target_, sock_.addr, Child::Addr(buf), Child::Addr(len), AddrlenFirst())
          .has_value());
  EXPECT_EQ(*len, 28) << "the full length is reported";
  EXPECT_EQ(std::memcmp(buf, sock_.addr.get(), 16), 0);
  EXPECT_EQ(buf[16], 0xEE) << "nothing beyond the caller's length";

  std::memset(buf, 0xEE, 64);
  *len = 100;
  ASSERT_TRUE(
      CopySockAddrOut(*target_, sock_.addr, Child::Addr(buf), Child::Addr(len), AddrlenFirst())
          .has_value());
  EXPECT_EQ(*len, 28);
  EXPECT_EQ(std::memcmp(buf, sock_.addr.get(), 28), 0);
  EXPECT_EQ(buf[28], 0xEE);

  std::memset(buf, 0xEE, 64);
  *len = 0;
  ASSERT_TRUE(CopySockAddrOut(*target_, sock_.addr, Child::Addr(child_->unmapped()),
                              Child::Addr(len), AddrlenFirst())
                  .has_value())
      << "a zero length writes no address, so the address pointer is not used";
  EXPECT_EQ(*len, 28);
}

TEST_F(TargetTest, CopySockAddrOutErrors) {
  uint8_t* buf = child_->rw();
  int32_t* len = reinterpret_cast<int32_t*>(child_->rw() + 512);
  *len = -1;
  EXPECT_EQ(
      CopySockAddrOut(*target_, sock_.addr, Child::Addr(buf), Child::Addr(len), AddrlenFirst())
          .error()
          .err,
      EINVAL);
  EXPECT_EQ(CopySockAddrOut(*target_, sock_.addr, Child::Addr(buf), Child::Addr(child_->unmapped()),
                            AddrlenFirst())
                .error()
                .err,
            EFAULT);
  EXPECT_EQ(CopySockAddrOut(*target_, sock_.addr, Child::Addr(buf), 0, AddrlenFirst()).error().err,
            EFAULT);
  *len = 16;
  EXPECT_EQ(CopySockAddrOut(*target_, sock_.addr, Child::Addr(child_->unmapped()), Child::Addr(len),
                            AddrlenFirst())
                .error()
                .err,
            EFAULT);
}

// The same buffers go to the kernel's getsockname() (in the child) and to CopySockAddrOut, which
// must leave the same bytes behind and give the same result: the supervisor answers for the
// kernel, so it must copy out exactly as the running kernel does, in the same order.
TEST_F(TargetTest, CopySockAddrOutMatchesTheKernel) {
  struct Where {
    const char* name;
    uint8_t* ptr;
  };
  const Where addrs[] = {{"buf", child_->rw()},
                         {"null", nullptr},
                         {"unmapped", child_->unmapped()},
                         {"straddling", child_->straddle()},
                         {"read-only", child_->read_only()}};
  uint8_t* const len_rw = child_->rw() + 512;
  uint8_t* const len_ro = child_->read_only() + 512;
  const Where lens[] = {{"len", len_rw},
                        {"null-len", nullptr},
                        {"unmapped-len", child_->unmapped()},
                        {"read-only-len", len_ro}};
  const int32_t values[] = {-1, 0, 4, 16, 20, 28, 100};
  int mismatches = 0;
  for (const Where& a : addrs) {
    for (const Where& l : lens) {
      for (int32_t value : values) {
        auto prepare = [&] {
          std::memset(child_->rw(), 0xEE, 128);
          std::memset(child_->rw() + 512, 0xEE, 8);
          std::memset(child_->straddle() - 64, 0xEE, 72);
          std::memset(child_->read_only(), 0xEE, 128);
          std::memcpy(len_rw, &value, 4);
          std::memcpy(len_ro, &value, 4);
        };
        auto snapshot = [&] {
          std::vector<uint8_t> s(child_->rw(), child_->rw() + 520);
          s.insert(s.end(), child_->straddle() - 64, child_->straddle() + 8);
          s.insert(s.end(), child_->read_only(), child_->read_only() + 520);
          return s;
        };
        prepare();
        int kernel = child_->KernelGetsockname(Child::Addr(a.ptr), Child::Addr(l.ptr));
        auto kernel_memory = snapshot();
        prepare();
        auto st = CopySockAddrOut(*target_, sock_.addr, Child::Addr(a.ptr), Child::Addr(l.ptr),
                                  AddrlenFirst());
        int ours = st ? 0 : -st.error().err;
        auto our_memory = snapshot();
        if (kernel != ours || kernel_memory != our_memory) {
          ++mismatches;
          ADD_FAILURE() << "addr=" << a.name << " addrlen=" << l.name << " value=" << value
                        << ": kernel " << kernel << ", CopySockAddrOut " << ours
                        << (kernel_memory != our_memory ? ", memory differs" : "");
        }
      }
    }
  }
  EXPECT_EQ(mismatches, 0);
}

}  // namespace
}  // namespace slipstream::tracer
