#include "fdinject/epoll_migrate.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>

#include "base/proc_scan.h"
#include "base/syscalls.h"

namespace slipstream::fdinject {

Result<std::optional<EpollItem>> FindEpollItem(pid_t pid, int target_epfd, int target_fd,
                                               uint64_t ino) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/fdinfo/%d", pid, target_epfd);
  auto text = ReadSmallFile(path);
  if (!text) return tl::unexpected(text.error());
  // tfd:        5 events:       19 data:                5  pos:0 ino:7a3 sdev:8
  std::istringstream lines(*text);
  std::string line;
  while (std::getline(lines, line)) {
    int tfd;
    unsigned events;
    unsigned long long data;
    unsigned long long item_ino;
    const char* ino_at = strstr(line.c_str(), "ino:");
    if (ino_at == nullptr ||
        sscanf(line.c_str(), "tfd: %d events: %x data: %llx", &tfd, &events, &data) != 3 ||
        sscanf(ino_at, "ino:%llx", &item_ino) != 1) {
      continue;
    }
    if (tfd == target_fd && item_ino == ino) return EpollItem{events, data};
  }
  return std::optional<EpollItem>();
}

Result<std::vector<EpollRegistration>> FindEpollRegistrations(pid_t pid, int target_fd,
                                                              uint64_t ino,
                                                              const std::vector<int>* epoll_fds) {
  std::optional<std::vector<int>> listed;
  if (epoll_fds == nullptr) {
    listed = EpollFds(pid);
    if (!listed) return Errno("open(/proc/PID/fd)");  // errno of the failed open
    epoll_fds = &*listed;
  }
  std::vector<EpollRegistration> found;
  for (int epfd : *epoll_fds) {
    if (auto item = FindEpollItem(pid, epfd, target_fd, ino); item && *item) {
      found.push_back({epfd, **item});
    }
  }
  return found;
}

Status MigrateEpollItem(int epoll_copy, int target_fd, int old_file, int new_file,
                        const EpollItem& item) {
  Status result;
  // The fd number matters (it is half of the item's key), and it is surely taken in our own table:
  // work in a thread whose fd table is a private copy.
  std::thread worker([&] {
    if (unshare(CLONE_FILES) < 0) {
      result = Errno("unshare(CLONE_FILES)");
      return;
    }
    // Our own fds may sit at the program's number, which the dup2s below take over (a busy
    // supervisor's epoll copy at 29 for the program's fd 29: EINVAL from epoll_ctl, the epoll
    // copy replaced by the socket). Moved away first, in the private table that ends with us.
    auto away = [target_fd](int fd) {
      return fd == target_fd ? fcntl(fd, F_DUPFD_CLOEXEC, target_fd + 1) : fd;
    };
    int epoll_fd = away(epoll_copy), old_fd = away(old_file), new_fd = away(new_file);
    if (epoll_fd < 0 || old_fd < 0 || new_fd < 0) {
      result = Errno("fcntl(F_DUPFD)");
      return;
    }
    if (dup2(old_fd, target_fd) < 0) {
      result = Errno("dup2(old)");
      return;
    }
    if (epoll_ctl(epoll_fd, EPOLL_CTL_DEL, target_fd, nullptr) < 0) {
      result = Errno("epoll_ctl(DEL)");
      return;
    }
    if (dup2(new_fd, target_fd) < 0) {
      result = Errno("dup2(new)");
      return;
    }
    epoll_event ev{};
    // EPOLLERR and EPOLLHUP are always added by the kernel; EPOLLWAKEUP needs CAP_BLOCK_SUSPEND
    // and is dropped silently without it, as for the program itself.
    ev.events = item.events;
    ev.data.u64 = item.data;
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, target_fd, &ev) < 0) result = Errno("epoll_ctl(ADD)");
  });
  worker.join();
  return result;
}

Result<int> MoveEpollRegistrations(pid_t pid, int target_fd, uint64_t old_ino, int old_file,
                                   int new_file, const std::vector<int>* epoll_fds) {
  if (epoll_fds != nullptr && epoll_fds->empty()) return 0;
  auto found = FindEpollRegistrations(pid, target_fd, old_ino, epoll_fds);
  if (!found) return tl::unexpected(found.error());
  if (found->empty()) return 0;
  auto pidfd = PidfdOpen(pid);
  if (!pidfd) return tl::unexpected(pidfd.error());
  int moved = 0;
  Status failed;
  for (const auto& r : *found) {
    auto epoll_copy = PidfdGetfd(pidfd->Get(), r.epfd);
    if (!epoll_copy) continue;  // closed meanwhile: nothing to carry over
    // One instance that cannot be repaired must not keep the others from being repaired.
    if (auto st = MigrateEpollItem(epoll_copy->Get(), target_fd, old_file, new_file, r.item)) {
      ++moved;
    } else {
      failed = st;
    }
  }
  if (!failed) return tl::unexpected(failed.error());
  return moved;
}

}  // namespace slipstream::fdinject
