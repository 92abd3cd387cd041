#include "base/proc_scan.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <condition_variable>
#include <mutex>
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

// Forks a child that holds its copy of `sock` while the copies are counted: two with the
// process's own, one in its descendants alone, and one again once the child has exited.
void ExpectTheChildsCopyCounted(int sock) {
  int go[2];
  ASSERT_EQ(pipe(go), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(go[1]);
    char c;
    (void)!read(go[0], &c, 1);  // holds its copy of `sock` until the parent is done
    _exit(0);
  }
  close(go[0]);
  EXPECT_EQ(SocketFdCount(getpid(), Inode(sock), 5, 1024), 2);
  EXPECT_EQ(SocketFdCount(getpid(), Inode(sock), 5, 1024, /*include_pid=*/false), 1);
  close(go[1]);
  waitpid(child, nullptr, 0);
  EXPECT_EQ(SocketFdCount(getpid(), Inode(sock), 5, 1024), 1);
}

TEST(SocketFdCount, CountsCopiesInChildren) {
  UniqueFd sock(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(sock);
  ExpectTheChildsCopyCounted(sock.Get());
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
  int go[2];
  ASSERT_EQ(pipe(go), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(go[1]);
    close(mine.Get());
    (void)!dup(a.Get());  // two fds, one holder
    char c;
    (void)!read(go[0], &c, 1);
    _exit(0);
  }
  close(go[0]);
  uint64_t inodes[] = {Inode(a.Get()), Inode(b.Get()), Inode(mine.Get())};
  auto holders = FindSocketHolders(inodes);
  close(go[1]);
  waitpid(child, nullptr, 0);
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
