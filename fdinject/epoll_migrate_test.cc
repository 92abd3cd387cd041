#include "fdinject/epoll_migrate.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <thread>

#include "base/unique_fd.h"

namespace slipstream::fdinject {
namespace {

uint64_t Ino(int fd) {
  struct stat st {};
  return fstat(fd, &st) == 0 ? st.st_ino : 0;
}

// Registers `file` in `epoll` under the fd number `number` (as a program whose fd `number` is
// `file` would have), from a thread with a private fd table: ours keeps whatever is at `number`.
void RegisterUnder(int epoll, int number, int file, uint64_t data) {
  std::thread([&] {
    ASSERT_EQ(unshare(CLONE_FILES), 0);
    int ep = fcntl(epoll, F_DUPFD_CLOEXEC, number + 1);  // the epoll itself may be at `number`
    ASSERT_GE(ep, 0);
    ASSERT_EQ(dup2(file, number), number);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = data;
    ASSERT_EQ(epoll_ctl(ep, EPOLL_CTL_ADD, number, &ev), 0);
  }).join();
}

struct Pair {
  UniqueFd a, b;
};

Pair SocketPair() {
  int fds[2];
  EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

// The program's item is moved from the old file to the new one under the same fd number, with its
// events and data.
TEST(MigrateEpollItem, MovesTheItemToTheNewFile) {
  UniqueFd epoll(epoll_create1(EPOLL_CLOEXEC));
  Pair old_pair = SocketPair(), new_pair = SocketPair();
  constexpr int kProgramFd = 200;  // free in our table
  RegisterUnder(epoll.Get(), kProgramFd, old_pair.a.Get(), 0xfeed);
  ASSERT_TRUE(MigrateEpollItem(epoll.Get(), kProgramFd, old_pair.a.Get(), new_pair.a.Get(),
                               {EPOLLIN, 0xfeed}));
  auto gone = FindEpollItem(getpid(), epoll.Get(), kProgramFd, Ino(old_pair.a.Get()));
  auto moved = FindEpollItem(getpid(), epoll.Get(), kProgramFd, Ino(new_pair.a.Get()));
  ASSERT_TRUE(gone && moved);
  EXPECT_FALSE(*gone);
  ASSERT_TRUE(*moved);
  EXPECT_EQ((*moved)->data, 0xfeedu);
}

// Our copy of the program's epoll instance at the very number of the program's fd (a supervisor
// with many fds): the move still works (it failed with EINVAL from epoll_ctl(DEL), the copy having
// been replaced by the socket in the worker's table).
TEST(MigrateEpollItem, WorksWhenOurEpollCopyHasTheProgramsFdNumber) {
  UniqueFd epoll(epoll_create1(EPOLL_CLOEXEC));
  Pair old_pair = SocketPair(), new_pair = SocketPair();
  int program_fd = epoll.Get();
  RegisterUnder(epoll.Get(), program_fd, old_pair.a.Get(), 7);
  auto st = MigrateEpollItem(epoll.Get(), program_fd, old_pair.a.Get(), new_pair.a.Get(),
                             {EPOLLIN, 7});
  ASSERT_TRUE(st) << st.error().ToString();
  auto moved = FindEpollItem(getpid(), epoll.Get(), program_fd, Ino(new_pair.a.Get()));
  ASSERT_TRUE(moved && *moved);
  EXPECT_EQ((*moved)->data, 7u);
}

// The same with the new file at the program's number.
TEST(MigrateEpollItem, WorksWhenTheNewFileHasTheProgramsFdNumber) {
  UniqueFd epoll(epoll_create1(EPOLL_CLOEXEC));
  Pair old_pair = SocketPair(), new_pair = SocketPair();
  int program_fd = new_pair.a.Get();
  RegisterUnder(epoll.Get(), program_fd, old_pair.a.Get(), 9);
  auto st = MigrateEpollItem(epoll.Get(), program_fd, old_pair.a.Get(), new_pair.a.Get(),
                             {EPOLLIN, 9});
  ASSERT_TRUE(st) << st.error().ToString();
  auto moved = FindEpollItem(getpid(), epoll.Get(), program_fd, Ino(new_pair.a.Get()));
  ASSERT_TRUE(moved && *moved);
}

}  // namespace
}  // namespace slipstream::fdinject
