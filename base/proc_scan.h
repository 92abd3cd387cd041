// Who holds a socket? A scan of /proc/*/fd, for the rare moments when a process that held one end
// of a hand-over died and nobody else can say where the end went.
#ifndef SLIPSTREAM_BASE_PROC_SCAN_H_
#define SLIPSTREAM_BASE_PROC_SCAN_H_

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "base/unique_fd.h"

namespace slipstream {

// The processes other than us that have an fd for each of the sockets `inodes` (a socket that no
// other process holds is absent; a process is listed once per socket), from one pass over
// /proc/*/fd for them all: a pass per socket made a supervisor that died with 400 unreported ends
// cost slipstreamd 567 ms (DaemonTest.ASupervisorDyingWithManyEndsDoesNotHoldUpTheDaemon).
// Only processes we may inspect are seen (same user, or all as root). nullopt when /proc cannot
// be read: the caller must then not act as if nobody held them.
using SocketHolders = std::unordered_map<uint64_t, std::vector<pid_t>>;
std::optional<SocketHolders> FindSocketHolders(std::span<const uint64_t> inodes);

// How many fds of our own process name each of the sockets `inodes` (absent: none), from one
// pass over /proc/self/fd; nullopt when it cannot be read.
std::optional<std::unordered_map<uint64_t, int>> OwnSocketFdCounts(
    std::span<const uint64_t> inodes);

// Whether a process not in `exclude` holds `inode`, by `holders` (nullopt: cannot tell, so true).
bool HeldByOthers(const std::optional<SocketHolders>& holders, uint64_t inode,
                  std::span<const pid_t> exclude = {});

// Is `pid` one of Slipstream's own processes (slipstream-trace, its shepherd, slipstreamd), by
// /proc/PID/comm? A program may take such a name; the callers only wait longer for it.
bool IsSlipstreamProcess(pid_t pid);

// The /proc files of one process that SocketFdCount reads each time, kept open: a repeated scan
// then costs a pread or a seek where each took an open, a read and a close (5 system calls less
// per scan of a single-threaded process; BENCHMARKS.md §17). Each fd names the process it was
// opened for, not its pid number: once that process has exited, reads fail (/proc/PID/stat:
// ESRCH) even if the number is reused, and SocketFdCount opens the files again.
struct ProcFiles {
  UniqueFd stat;             // /proc/PID/stat
  UniqueFd fd_dir;           // /proc/PID/fd
  UniqueFd leader_children;  // /proc/PID/task/PID/children (Linux 4.2, CONFIG_PROC_CHILDREN)
};
class ProcFilesCache {
 public:
  // At most `capacity` processes' files (three fds each) are kept.
  explicit ProcFilesCache(size_t capacity = 64) : capacity_(capacity) {}
  // The files of `pid`, opened if they are not kept; nullptr if one cannot be opened.
  ProcFiles* Get(pid_t pid);
  void Forget(pid_t pid) { map_.erase(pid); }
  size_t size() const { return map_.size(); }

 private:
  size_t capacity_;
  std::unordered_map<pid_t, ProcFiles> map_;
};

// How many fds of the descendants of process `pid` (and of `pid` itself with `include_pid`) refer
// to the socket with inode `inode`, counted up to `limit` (the scan stops there). nullopt when
// /proc/PID/fd cannot be read, or when more than `max_fds` fds would have to be looked at. The
// kernel has no interface for a file's reference count, so this costs one readlink per fd scanned
// (4–5 µs each on a 2-vCPU VM; see the SocketFdQuery form below for a cheaper one).
// With `epoll_fds`, the same pass over `pid`'s own fds also lists its epoll instances (complete
// unless the count reached `limit`). With `cache`, `pid`'s own files are read through it (its
// descendants' are opened each time).
std::optional<int> SocketFdCount(pid_t pid, uint64_t inode, int limit, int max_fds,
                                 bool include_pid = true, std::vector<int>* epoll_fds = nullptr,
                                 ProcFilesCache* cache = nullptr);

// The same, for a socket of which we hold a copy (`own_copy`, e.g. from pidfd_getfd): each fd is
// compared with it by kcmp(2) (KCMP_FILE, Linux 3.5 with CONFIG_KCMP), 0.8 µs per fd where a
// readlink costs 4–5 µs on a 2-vCPU VM; where the kernel refuses kcmp (ENOSYS, or EPERM from a
// seccomp profile) the readlinks are made instead. `epoll_fds` then lists only `pid`'s epoll
// instances in which the socket is registered under the fd number `registered_as`
// (KCMP_EPOLL_TFD, Linux 4.13), which are the ones a switch must move.
struct SocketFdQuery {
  uint64_t inode = 0;
  int own_copy = -1;
  int registered_as = -1;
  int limit = 2;
  int max_fds = 1024;
  bool include_pid = true;
  std::vector<int>* epoll_fds = nullptr;
  ProcFilesCache* cache = nullptr;
};
std::optional<int> SocketFdCount(pid_t pid, const SocketFdQuery& query);

// The fds of process `pid` that are epoll instances (link "anon_inode:[eventpoll]"), in one pass
// over /proc/PID/fd (a readlink each); nullopt if it cannot be read.
std::optional<std::vector<int>> EpollFds(pid_t pid);

// The epoll instances of process `pid` in which our socket `own` (a copy of the program's) is
// registered under the fd number `registered_as`: one kcmp(KCMP_EPOLL_TFD) per fd, Linux 4.13.
// nullopt if /proc/PID/fd cannot be read or kcmp is refused (EpollFds then lists them all).
std::optional<std::vector<int>> EpollFdsHolding(pid_t pid, int own, int registered_as);

// Process `pid`'s fd for the socket with inode `inode`, if it has one (microseconds: one process).
struct SocketHolder {
  pid_t pid;
  int fd;
};
std::optional<SocketHolder> FindSocketHolder(uint64_t inode, pid_t pid);

}  // namespace slipstream

#endif  // SLIPSTREAM_BASE_PROC_SCAN_H_
