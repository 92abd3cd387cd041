// Moves a program's epoll registrations from one file to another. The items are found in the
// fdinfo of the program's epoll instances, which lists each item's fd number and inode (Linux
// 3.8); no kcmp, no trapped epoll_ctl.
//
// Why: an epoll item is keyed by (file, fd number) and disappears only when the file's last
// reference goes. After the program's fd N is replaced by an AF_UNIX end (SETFD), a registration
// made earlier on N (register-then-connect, as Java NIO or libuv may do) still points at the TCP
// socket: no events would ever arrive from the new end. The supervisor repairs it from outside:
// in a thread with a private fd table it gives the old file the number N, deletes the item, gives
// the new file the number N and adds it back with the same events and data.
#ifndef SLIPSTREAM_FDINJECT_EPOLL_MIGRATE_H_
#define SLIPSTREAM_FDINJECT_EPOLL_MIGRATE_H_

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "base/result.h"

namespace slipstream::fdinject {

struct EpollItem {
  uint32_t events = 0;
  uint64_t data = 0;
};

// The item registered under (`target_epfd`, `target_fd`) in process `pid`, if its file is the one
// with inode `ino` (from /proc/<pid>/fdinfo/<epfd>).
Result<std::optional<EpollItem>> FindEpollItem(pid_t pid, int target_epfd, int target_fd,
                                               uint64_t ino);

// Every registration of `target_fd` (whose file has inode `ino`) in the epoll instances that
// process `pid` holds: its fd table is scanned for eventpoll files, and their fdinfo read.
struct EpollRegistration {
  int epfd = -1;
  EpollItem item;
};
// With `epoll_fds`, only those instances are read (the caller listed them, e.g. SocketFdCount).
Result<std::vector<EpollRegistration>> FindEpollRegistrations(
    pid_t pid, int target_fd, uint64_t ino, const std::vector<int>* epoll_fds = nullptr);

// Finds every registration of `target_fd` on the file with inode `old_ino` in process `pid`'s
// epoll instances (all of them, or those of `epoll_fds`) and moves it to `new_file`
// (MigrateEpollItem). Returns how many were moved.
Result<int> MoveEpollRegistrations(pid_t pid, int target_fd, uint64_t old_ino, int old_file,
                                   int new_file, const std::vector<int>* epoll_fds = nullptr);

// Re-registers `target_fd` in the program's epoll instance `epoll_copy` (our pidfd_getfd copy):
// deletes the item of `old_file` and adds `new_file` with `item`'s events and data.
Status MigrateEpollItem(int epoll_copy, int target_fd, int old_file, int new_file,
                        const EpollItem& item);

}  // namespace slipstream::fdinject

#endif  // SLIPSTREAM_FDINJECT_EPOLL_MIGRATE_H_
