#include "base/proc_scan.h"

#include <gtest/gtest.h>
#include <linux/filter.h>
#include <linux/kcmp.h>
#include <linux/seccomp.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <iterator>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/unique_fd.h"

namespace slipstream {
namespace {

uint64_t Inode(int fd) {
  struct stat st {};
  EXPECT_EQ(fstat(fd, &st), 0);
  return st.st_ino;
}

TEST(SocketFdCount, CountsDupsInTheProcess) {
  UniqueFd sock(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(sock);
  EXPECT_EQ(SocketFdCount(getpid(), Inode(sock.Get()), 2, 1024), 1);
  UniqueFd copy(dup(sock.Get()));
  EXPECT_EQ(SocketFdCount(getpid(), Inode(sock.Get()), 2, 1024), 2);
  EXPECT_EQ(SocketFdCount(getpid(), Inode(sock.Get()), 5, 1024), 2);
}

TEST(EpollFds, ListsExactlyTheEpollInstances) {
  auto before = EpollFds(getpid());
  ASSERT_TRUE(before.has_value());
  UniqueFd ep(epoll_create1(EPOLL_CLOEXEC));
  UniqueFd sock(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(ep && sock);
  auto after = EpollFds(getpid());
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(after->size(), before->size() + 1);
  EXPECT_NE(std::find(after->begin(), after->end(), ep.Get()), after->end());
  EXPECT_EQ(std::find(after->begin(), after->end(), sock.Get()), after->end());
  EXPECT_EQ(EpollFds(-5), std::nullopt);  // no such process
}

// A child holding copies of our fds (after `prepare` ran in it) until Release().
class ChildHolding {
 public:
  explicit ChildHolding(const std::function<void()>& prepare = [] {}) {
    int go[2], ready[2];
    if (pipe(go) != 0 || pipe(ready) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      close(go[1]);
      close(ready[0]);
      prepare();
      (void)!write(ready[1], "r", 1);  // prepared: the parent may look now
      close(ready[1]);
      char c;
      (void)!read(go[0], &c, 1);  // until the parent is done
      _exit(0);
    }
    close(go[0]);
    close(ready[1]);
    char c;
    (void)!read(ready[0], &c, 1);  // the child's fds are as `prepare` left them
    close(ready[0]);
    release_ = go[1];
  }
  ~ChildHolding() { Release(); }
  pid_t pid() const { return pid_; }
  void Release() {
    if (release_ < 0) return;
    close(release_);
    release_ = -1;
    waitpid(pid_, nullptr, 0);
  }

 private:
  pid_t pid_ = -1;
  int release_ = -1;
};

// A child holds its copy of `sock` while the copies are counted: two with the process's own, one
// in its descendants alone, and one again once the child has exited. With `cache`, the files of
// our process are read through it (kept open from one count to the next).
void ExpectTheChildsCopyCounted(int sock, ProcFilesCache* cache = nullptr) {
  EXPECT_EQ(SocketFdCount(getpid(), Inode(sock), 5, 1024, true, nullptr, cache), 1);
  ChildHolding child;
  ASSERT_GT(child.pid(), 0);
  EXPECT_EQ(SocketFdCount(getpid(), Inode(sock), 5, 1024, true, nullptr, cache), 2);
  EXPECT_EQ(SocketFdCount(getpid(), Inode(sock), 5, 1024, /*include_pid=*/false, nullptr, cache),
            1);
  child.Release();
  EXPECT_EQ(SocketFdCount(getpid(), Inode(sock), 5, 1024, true, nullptr, cache), 1);
}

TEST(SocketFdCount, CountsCopiesInChildren) {
  UniqueFd sock(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(sock);
  ExpectTheChildsCopyCounted(sock.Get());
}

// The kept files are read afresh each time: a dup, a child and its exit made after they were
// opened are all seen.
TEST(SocketFdCount, CountsTheSameThroughKeptFiles) {
  ProcFilesCache cache;
  UniqueFd sock(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(sock);
  ExpectTheChildsCopyCounted(sock.Get(), &cache);
  EXPECT_EQ(cache.size(), 1u);
  UniqueFd copy(dup(sock.Get()));
  EXPECT_EQ(SocketFdCount(getpid(), Inode(sock.Get()), 5, 1024, true, nullptr, &cache), 2);
  copy.Reset();
  EXPECT_EQ(SocketFdCount(getpid(), Inode(sock.Get()), 5, 1024, true, nullptr, &cache), 1);
}

// With our own copy of the socket the fds are compared by kcmp: the same counts as by readlink,
// and the epoll instances listed are those that hold the socket under its fd number (the ones a
// switch moves), where readlink lists every epoll instance.
TEST(SocketFdCount, ByKcmpCountsTheSameAndListsTheEpollInstancesHoldingTheSocket) {
  UniqueFd sock(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  UniqueFd other(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  UniqueFd holding(epoll_create1(EPOLL_CLOEXEC)), not_holding(epoll_create1(EPOLL_CLOEXEC));
  ASSERT_TRUE(sock && other && holding && not_holding);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ASSERT_EQ(epoll_ctl(holding.Get(), EPOLL_CTL_ADD, sock.Get(), &ev), 0);
  ASSERT_EQ(epoll_ctl(not_holding.Get(), EPOLL_CTL_ADD, other.Get(), &ev), 0);
  UniqueFd own(dup(sock.Get()));  // ours, as a supervisor's pidfd_getfd copy is
  int sock_fd = sock.Get(), own_fd = own.Get();
  for (bool dup_in_child : {false, true}) {
    SCOPED_TRACE(dup_in_child ? "a dup in the child" : "no dup");
    // The child holds copies of all our fds but `own`, and perhaps one dup more.
    ChildHolding child([&] {
      close(own_fd);
      if (dup_in_child) (void)!dup(sock_fd);
    });
    ASSERT_GT(child.pid(), 0);
    uint64_t ino = Inode(sock.Get());
    std::vector<int> by_link_epolls, by_kcmp_epolls;
    auto by_link = SocketFdCount(child.pid(), ino, 5, 1024, true, &by_link_epolls);
    SocketFdQuery query{ino, own.Get(), sock.Get(), 5, 1024, true, &by_kcmp_epolls, nullptr};
    auto by_kcmp = SocketFdCount(child.pid(), query);
    ASSERT_TRUE(by_link.has_value() && by_kcmp.has_value());
    EXPECT_EQ(*by_kcmp, dup_in_child ? 2 : 1);
    EXPECT_EQ(*by_kcmp, *by_link);
    EXPECT_NE(std::find(by_link_epolls.begin(), by_link_epolls.end(), not_holding.Get()),
              by_link_epolls.end());
    EXPECT_EQ(by_kcmp_epolls, std::vector<int>{holding.Get()});
    EXPECT_EQ(EpollFdsHolding(child.pid(), own.Get(), sock.Get()),
              std::optional<std::vector<int>>(std::vector<int>{holding.Get()}));
    EXPECT_EQ(EpollFdsHolding(child.pid(), own.Get(), other.Get()),
              std::optional<std::vector<int>>(std::vector<int>{}))
        << "registered under another fd number: not this socket's registration";
  }
}

// Where a seccomp profile refuses kcmp (Docker's default one without CAP_SYS_PTRACE), the scan
// reads the links instead and still counts right. Run in a child that installs such a filter.
TEST(SocketFdCount, FallsBackToReadlinkWhereKcmpIsRefused) {
  UniqueFd sock(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(sock);
  UniqueFd own(dup(sock.Get()));
  pid_t scanner = fork();
  ASSERT_GE(scanner, 0);
  if (scanner == 0) {
    sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_kcmp, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    sock_fprog prog{static_cast<unsigned short>(std::size(code)), code};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
      _exit(90);
    }
    if (syscall(SYS_kcmp, getpid(), getpid(), KCMP_FILE, 0, 0) >= 0 || errno != EPERM) _exit(91);
    ChildHolding child;  // holds our copies of `sock` and `own`: two
    SocketFdQuery query{Inode(sock.Get()), own.Get(), sock.Get(), 5, 1024, true, nullptr, nullptr};
    auto count = SocketFdCount(child.pid(), query);
    _exit(count == std::optional<int>(2) ? 0 : 92);
  }
  int status = 0;
  ASSERT_EQ(waitpid(scanner, &status, 0), scanner);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "90: no filter, 91: kcmp not refused, 92: wrong count";
}

// Files kept for a process that has exited are not read as its pid's new owner's: the new
// process's fds are counted (from files opened again), not "none" or "cannot tell". The pid is
// reused on purpose through /proc/sys/kernel/ns_last_pid, which needs root.
TEST(SocketFdCount, KeptFilesOfAnExitedProcessAreOpenedAgainForItsPidsNewOwner) {
  if (geteuid() != 0) GTEST_SKIP() << "reusing a pid on purpose needs root";
  UniqueFd sock(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(sock);
  ProcFilesCache cache;
  pid_t first;
  {
    ChildHolding holder;  // holds a copy of `sock`
    first = holder.pid();
    ASSERT_GT(first, 0);
    EXPECT_EQ(SocketFdCount(first, Inode(sock.Get()), 5, 1024, true, nullptr, &cache), 1);
  }
  UniqueFd last_pid(open("/proc/sys/kernel/ns_last_pid", O_WRONLY | O_CLOEXEC));
  ASSERT_TRUE(last_pid);
  std::string before = std::to_string(first - 1);
  ASSERT_EQ(write(last_pid.Get(), before.data(), before.size()),
            static_cast<ssize_t>(before.size()));
  int sock_fd = sock.Get();
  ChildHolding second([&] { close(sock_fd); });  // the same pid, without the socket
  if (second.pid() != first) GTEST_SKIP() << "another process took pid " << first << " first";
  EXPECT_EQ(SocketFdCount(first, Inode(sock.Get()), 5, 1024, true, nullptr, &cache), 0);
}

// Above 256 threads the children are found from every process's parent pid instead of each
// thread's children list (proc_scan.cc, AppendChildren): the same copies must be seen.
TEST(SocketFdCount, CountsCopiesInChildrenOfAProcessWithManyThreads) {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::vector<std::thread> threads;
  for (int i = 0; i < 300; ++i) {
    threads.emplace_back([&] {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return done; });
    });
  }
  UniqueFd sock(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(sock);
  ExpectTheChildsCopyCounted(sock.Get());
  {
    std::lock_guard<std::mutex> lock(mu);
    done = true;
  }
  cv.notify_all();
  for (auto& t : threads) t.join();
}

TEST(SocketFdCount, GivesUpBeyondItsBudget) {
  UniqueFd sock(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(sock);
  EXPECT_EQ(SocketFdCount(getpid(), Inode(sock.Get()), 2, 1), std::nullopt);
  EXPECT_EQ(SocketFdCount(-5, Inode(sock.Get()), 2, 1024), std::nullopt);  // no such process
}

// One pass finds the holders of several sockets: a child's copies are found (with the child's
// pid, once per socket), our own are not (we are never a holder), and a socket only we hold is
// absent.
TEST(FindSocketHolders, FindsEveryHolderButUs) {
  UniqueFd a(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)), b(socket(AF_UNIX, SOCK_STREAM, 0)),
      mine(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(a && b && mine);
  ChildHolding holding([&] {
    close(mine.Get());
    (void)!dup(a.Get());  // two fds, one holder
  });
  pid_t child = holding.pid();
  ASSERT_GT(child, 0);
  uint64_t inodes[] = {Inode(a.Get()), Inode(b.Get()), Inode(mine.Get())};
  auto holders = FindSocketHolders(inodes);
  holding.Release();
  ASSERT_TRUE(holders);
  EXPECT_EQ((*holders)[inodes[0]], std::vector<pid_t>{child});
  EXPECT_EQ((*holders)[inodes[1]], std::vector<pid_t>{child});
  EXPECT_EQ(holders->count(inodes[2]), 0u);
  EXPECT_TRUE(HeldByOthers(holders, inodes[0]));
  pid_t exclude[] = {child};
  EXPECT_FALSE(HeldByOthers(holders, inodes[0], exclude));
  EXPECT_FALSE(HeldByOthers(holders, inodes[2]));
  EXPECT_TRUE(HeldByOthers(std::nullopt, inodes[2]));  // cannot tell: held
}

}  // namespace
}  // namespace slipstream
