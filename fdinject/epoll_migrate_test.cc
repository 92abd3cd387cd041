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

// Registers the old socket under `program_fd`, moves the item to the new one and checks that
// the item under `program_fd` is now the new socket's, with its data, and the old one's is gone.
void ExpectMoved(const UniqueFd& epoll, int program_fd, const Pair& old_pair,
                 const Pair& new_pair) {
  constexpr uint64_t kData = 0xfeed;
  RegisterUnder(epoll.Get(), program_fd, old_pair.a.Get(), kData);
  auto st = MigrateEpollItem(epoll.Get(), program_fd, old_pair.a.Get(), new_pair.a.Get(),
                             {EPOLLIN, kData});
  ASSERT_TRUE(st) << st.error().ToString();
  auto gone = FindEpollItem(getpid(), epoll.Get(), program_fd, Ino(old_pair.a.Get()));
  auto moved = FindEpollItem(getpid(), epoll.Get(), program_fd, Ino(new_pair.a.Get()));
  ASSERT_TRUE(gone && moved);
  EXPECT_FALSE(*gone);
  ASSERT_TRUE(*moved);
  EXPECT_EQ((*moved)->data, kData);
}

TEST(MigrateEpollItem, MovesTheItemToTheNewFile) {
  UniqueFd epoll(epoll_create1(EPOLL_CLOEXEC));
  Pair old_pair = SocketPair(), new_pair = SocketPair();
  ExpectMoved(epoll, /*program_fd=*/200, old_pair, new_pair);  // 200: free in our table
}

// Our own fds at the program's fd number (a supervisor with many fds): the move still works. With
// our epoll copy there it failed with EINVAL from epoll_ctl(DEL), the copy having been replaced by
// the socket in the worker's table.
TEST(MigrateEpollItem, WorksWhenOurEpollCopyHasTheProgramsFdNumber) {
  UniqueFd epoll(epoll_create1(EPOLL_CLOEXEC));
  Pair old_pair = SocketPair(), new_pair = SocketPair();
  ExpectMoved(epoll, epoll.Get(), old_pair, new_pair);
}

TEST(MigrateEpollItem, WorksWhenTheNewFileHasTheProgramsFdNumber) {
  UniqueFd epoll(epoll_create1(EPOLL_CLOEXEC));
  Pair old_pair = SocketPair(), new_pair = SocketPair();
  ExpectMoved(epoll, new_pair.a.Get(), old_pair, new_pair);
}

}  // namespace
}  // namespace slipstream::fdinject
