#include "base/proc_scan.h"

#include <dirent.h>
#include <linux/kcmp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "base/unique_fd.h"

namespace slipstream {

namespace {

constexpr std::string_view kEventpoll = "anon_inode:[eventpoll]";

// Calls `each(name)` for every entry of the open directory `dir` but "." and "..", until it
// returns false. getdents64 on a stack buffer: no allocation per entry. False if a read failed
// (a /proc directory of a process that has exited: ENOENT).
template <typename F>
bool ForEachEntry(int dir, F each) {
  alignas(8) char buf[4096];
  for (;;) {
    ssize_t n = getdents64(dir, buf, sizeof(buf));  // glibc 2.30
    if (n <= 0) return n == 0;
    for (ssize_t off = 0; off < n;) {
      auto* d = reinterpret_cast<dirent64*>(buf + off);
      off += d->d_reclen;
      if (d->d_name[0] == '.') continue;
      if (!each(d->d_name)) return true;
    }
  }
}

// Calls `each(fd_name, link_text)` for every fd in the open /proc/PID/fd directory `dir`, from its
// start, until it returns false. False if it cannot be read.
template <typename F>
bool ForEachFdLinkIn(int dir, F each) {
  if (lseek(dir, 0, SEEK_SET) < 0) return false;
  return ForEachEntry(dir, [&](const char* name) {
    char link[64];
    ssize_t n = readlinkat(dir, name, link, sizeof(link));
    return n < 0 || each(name, std::string_view(link, static_cast<size_t>(n)));
  });
}

// The same for process `pid`, opening its directory. False if /proc/PID/fd cannot be read.
template <typename F>
bool ForEachFdLink(pid_t pid, F each) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/fd", pid);
  UniqueFd dir(open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  return dir && ForEachFdLinkIn(dir.Get(), each);
}

// The fd of process `pid` for the socket whose link text is `want`, or -1.
int FdFor(pid_t pid, std::string_view want) {
  int found = -1;
  ForEachFdLink(pid, [&](const char* name, std::string_view link) {
    if (link == want) found = std::atoi(name);
    return found < 0;
  });
  return found;
}

}  // namespace

std::optional<SocketHolders> FindSocketHolders(std::span<const uint64_t> inodes) {
  SocketHolders holders;
  if (inodes.empty()) return holders;
  std::unordered_set<uint64_t> wanted(inodes.begin(), inodes.end());
  pid_t self = getpid();
  int proc = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (proc < 0) return std::nullopt;
  ForEachEntry(proc, [&](const char* name) {
    pid_t pid = static_cast<pid_t>(std::atoi(name));
    if (pid <= 0 || pid == self) return true;
    ForEachFdLink(pid, [&](const char*, std::string_view link) {
      constexpr std::string_view kPrefix = "socket:[";
      if (!link.starts_with(kPrefix) || !link.ends_with(']')) return true;
      uint64_t ino = std::strtoull(link.data() + kPrefix.size(), nullptr, 10);
      if (wanted.count(ino) != 0) {
        auto& pids = holders[ino];
        if (pids.empty() || pids.back() != pid) pids.push_back(pid);
      }
      return true;
    });
    return true;
  });
  close(proc);
  return holders;
}

std::optional<std::unordered_map<uint64_t, int>> OwnSocketFdCounts(
    std::span<const uint64_t> inodes) {
  std::unordered_map<uint64_t, int> counts;
  std::unordered_set<uint64_t> wanted(inodes.begin(), inodes.end());
  bool read = ForEachFdLink(getpid(), [&](const char*, std::string_view link) {
    constexpr std::string_view kPrefix = "socket:[";
    if (!link.starts_with(kPrefix) || !link.ends_with(']')) return true;
    uint64_t ino = std::strtoull(link.data() + kPrefix.size(), nullptr, 10);
    if (wanted.count(ino) != 0) ++counts[ino];
    return true;
  });
  if (!read) return std::nullopt;
  return counts;
}

bool HeldByOthers(const std::optional<SocketHolders>& holders, uint64_t inode,
                  std::span<const pid_t> exclude) {
  if (!holders) return true;
  auto it = holders->find(inode);
  if (it == holders->end()) return false;
  return std::any_of(it->second.begin(), it->second.end(), [&](pid_t pid) {
    return std::find(exclude.begin(), exclude.end(), pid) == exclude.end();
  });
}

bool IsSlipstreamProcess(pid_t pid) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/comm", pid);
  UniqueFd fd(open(path, O_RDONLY | O_CLOEXEC));
  char comm[32] = {};
  ssize_t n = fd ? read(fd.Get(), comm, sizeof(comm) - 1) : -1;
  if (n <= 0) return false;
  std::string_view name(comm, static_cast<size_t>(n));
  if (name.back() == '\n') name.remove_suffix(1);
  // The kernel keeps 15 bytes of a name (TASK_COMM_LEN 16).
  return name == "slipstream-trac" || name == "slipstream-shep" || name == "slipstreamd";
}

std::optional<std::vector<int>> EpollFds(pid_t pid) {
  std::vector<int> fds;
  bool read = ForEachFdLink(pid, [&](const char* name, std::string_view link) {
    if (link == kEventpoll) fds.push_back(std::atoi(name));
    return true;
  });
  if (!read) return std::nullopt;
  return fds;
}

std::optional<SocketHolder> FindSocketHolder(uint64_t inode, pid_t pid) {
  if (pid <= 0) return std::nullopt;
  int fd = FdFor(pid, "socket:[" + std::to_string(inode) + "]");
  if (fd < 0) return std::nullopt;
  return SocketHolder{pid, fd};
}

namespace {

struct FdScan {
  std::string_view want;   // "socket:[INODE]"
  int limit;               // stop counting here
  int budget;              // fds left to look at
  int own = -1;            // our fd for the socket: compare with kcmp
  int registered_as = -1;  // the epoll registrations' fd number, for KCMP_EPOLL_TFD
  bool kcmp_refused = false;
  int count = 0;
};

// kcmp(2), which glibc does not wrap.
long Kcmp(pid_t pid1, pid_t pid2, int type, unsigned long idx1, unsigned long idx2) {
  return syscall(SYS_kcmp, pid1, pid2, type, idx1, idx2);
}

// Is `pid`'s fd `fd` an epoll instance in which our socket `own` is registered under fd number
// `as`? KCMP_EPOLL_TFD (Linux 4.13) compares our file with the one registered there: EINVAL for
// a file that is not an epoll instance, ENOENT once no (further) item has the fd number `as`,
// EBADF for an fd closed meanwhile. Several items may share the number (a closed file's
// registration left behind, then ours): up to 8 are looked at. 1: it holds it; 0: it does not;
// -1: kcmp is refused.
// `self` is our pid (glibc's getpid() is a system call).
int EpollHolds(pid_t self, pid_t pid, int fd, int own, int as) {
  for (uint32_t toff = 0; toff < 8; ++toff) {
    kcmp_epoll_slot slot{static_cast<uint32_t>(fd), static_cast<uint32_t>(as), toff};
    long r = Kcmp(self, pid, KCMP_EPOLL_TFD, static_cast<unsigned long>(own),
                  reinterpret_cast<unsigned long>(&slot));
    if (r == 0) return 1;
    if (r < 0) return errno == EINVAL || errno == ENOENT || errno == EBADF ? 0 : -1;
  }
  return 0;
}

// CountIn by kcmp: the file of each fd of `pid` (directory `dir`) against our `scan.own`, and, for
// `epoll_fds`, only the epoll instances that hold the socket (under `scan.registered_as`). Sets
// `scan.kcmp_refused` if the kernel refuses kcmp (ENOSYS without CONFIG_KCMP; EPERM from a
// seccomp profile: Docker's allows it only with CAP_SYS_PTRACE).
bool CountByKcmp(pid_t pid, int dir, FdScan& scan, std::vector<int>* epoll_fds) {
  if (lseek(dir, 0, SEEK_SET) < 0) return false;
  pid_t self = getpid();
  return ForEachEntry(dir, [&](const char* name) {
    int fd = std::atoi(name);
    long same = Kcmp(pid, self, KCMP_FILE, static_cast<unsigned long>(fd),
                     static_cast<unsigned long>(scan.own));
    if (same < 0 && errno != EBADF) {  // EBADF: closed since the listing
      scan.kcmp_refused = true;
      return false;
    }
    if (same == 0) ++scan.count;
    if (same > 0 && epoll_fds != nullptr) {
      int holds = EpollHolds(self, pid, fd, scan.own, scan.registered_as);
      if (holds < 0) {
        scan.kcmp_refused = true;
        return false;
      }
      if (holds > 0) epoll_fds->push_back(fd);
    }
    return scan.count < scan.limit && --scan.budget > 0;
  });
}

// Counts the fds that name the socket, from the open /proc/PID/fd directory `dir` (or that of
// `pid` when `dir` is -1), and lists the epoll fds in `epoll_fds` if given. False if it cannot be
// read. With our own copy of the socket (`scan.own`) each fd costs a kcmp (0.8 µs on a 2-vCPU
// VM), else a readlink (4–5 µs, the path lookup and the "socket:[INODE]" text).
bool CountIn(pid_t pid, FdScan& scan, std::vector<int>* epoll_fds = nullptr, int dir = -1) {
  UniqueFd opened;
  if (dir < 0) {
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", pid);
    opened = UniqueFd(open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!opened) return false;
    dir = opened.Get();
  }
  bool by_kcmp = scan.own >= 0 && (epoll_fds == nullptr || scan.registered_as >= 0);
  if (by_kcmp && !scan.kcmp_refused) {
    FdScan before = scan;
    size_t listed = epoll_fds != nullptr ? epoll_fds->size() : 0;
    bool read = CountByKcmp(pid, dir, scan, epoll_fds);
    if (!scan.kcmp_refused) return read;
    scan = before;  // start again by readlink, and do not try kcmp again
    scan.kcmp_refused = true;
    if (epoll_fds != nullptr) epoll_fds->resize(listed);
  }
  return ForEachFdLinkIn(dir, [&](const char* name, std::string_view link) {
    if (link == scan.want) ++scan.count;
    if (epoll_fds != nullptr && link == kEventpoll) epoll_fds->push_back(std::atoi(name));
    return scan.count < scan.limit && --scan.budget > 0;
  });
}

// Appends the pids listed in the open children file `fd`, read from its start, to `out`. False
// (and nothing appended) if it cannot be read.
bool AppendChildrenFrom(int fd, std::vector<pid_t>& out) {
  size_t first = out.size();
  // The list may be longer than one buffer: a number cut at the buffer's end is carried over.
  char text[4096];
  size_t kept = 0;
  off_t at = 0;
  for (;;) {
    ssize_t n = pread(fd, text + kept, sizeof(text) - 1 - kept, at);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      out.resize(first);
      return false;
    }
    if (n == 0) break;
    at += n;
    size_t len = kept + static_cast<size_t>(n);
    text[len] = '\0';
    size_t done = len;  // parse whole numbers only: a trailing one may go on in the next read
    while (done > 0 && text[done - 1] >= '0' && text[done - 1] <= '9') --done;
    char first_kept = text[done];
    text[done] = '\0';
    for (char* p = text;;) {
      char* end;
      long child = strtol(p, &end, 10);
      if (end == p) break;
      out.push_back(static_cast<pid_t>(child));
      p = end;
    }
    text[done] = first_kept;
    kept = len - done;
    memmove(text, text + done, kept);
  }
  if (kept > 0) {
    text[kept] = '\0';
    out.push_back(static_cast<pid_t>(strtol(text, nullptr, 10)));
  }
  return true;
}

// Appends the pids listed in the children file `path` (relative to `dir`) to `out`. False if it
// cannot be opened.
bool AppendListedChildren(int dir, const char* path, std::vector<pid_t>& out) {
  UniqueFd fd(openat(dir, path, O_RDONLY | O_CLOEXEC));
  return fd && AppendChildrenFrom(fd.Get(), out);
}

// Appends the children of every thread of `pid` (/proc/PID/task/TID/children, Linux 4.2 with
// CONFIG_PROC_CHILDREN) to `out`.
void AppendThreadChildren(pid_t pid, std::vector<pid_t>& out) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/task", pid);
  int dir = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return;
  ForEachEntry(dir, [&](const char* tid) {
    char file[300];
    snprintf(file, sizeof(file), "%s/children", tid);
    AppendListedChildren(dir, file, out);
    return true;
  });
  close(dir);
}

// Fields of the open /proc/PID/stat `fd` after the command name: "S 1 ..." (state, ppid, ...);
// -1 if unread (ESRCH once the process it was opened for has exited).
long StatFieldFrom(int fd, int field) {
  char text[1024];
  ssize_t n = pread(fd, text, sizeof(text) - 1, 0);
  if (n <= 0) return -1;
  text[n] = '\0';
  const char* p = strrchr(text, ')');  // the command name may contain spaces and parentheses
  if (p == nullptr) return -1;
  ++p;
  for (int i = 0; i < field; ++i) {
    while (*p == ' ') ++p;
    while (*p != ' ' && *p != '\0') ++p;
  }
  return strtol(p, nullptr, 10);
}

// The same for process `pid`, opening its file.
long StatField(pid_t pid, int field) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/stat", pid);
  UniqueFd fd(open(path, O_RDONLY | O_CLOEXEC));
  return fd ? StatFieldFrom(fd.Get(), field) : -1;
}

constexpr int kStatPpid = 1;         // after the state
constexpr int kStatNumThreads = 17;  // field 20 of proc(5), counted after the command name

// Appends the processes whose parent is `pid` to `out`, found by their /proc/P/stat, if there are
// fewer processes on the host than `at_most`; false (nothing appended) otherwise.
bool AppendChildrenByParent(pid_t pid, long at_most, std::vector<pid_t>& out) {
  int dir = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return false;
  std::vector<pid_t> all;
  bool few = true;
  ForEachEntry(dir, [&](const char* name) {
    if (name[0] >= '1' && name[0] <= '9') all.push_back(static_cast<pid_t>(atoi(name)));
    few = static_cast<long>(all.size()) < at_most;
    return few;
  });
  close(dir);
  if (!few) return false;
  for (pid_t p : all) {
    if (p != pid && StatField(p, kStatPpid) == pid) out.push_back(p);
  }
  return true;
}

// Appends the children of process `pid` to `out`. Each thread has its own list of children, and
// reading it costs an open, a read and a close: for a process with many threads (a thread per
// connection: 1000 threads made each switched connect cost milliseconds, test_scale.py) it is
// cheaper to read the parent pid of every process of the host, when there are fewer of those.
// Below 256 threads the listing of /proc that decides it would cost more than it saves.
// A process with one thread has one list, that of its leader (a leader that exits before the
// other threads stays counted until they all have): read it without listing /proc/PID/task.
// `threads` is the process's thread count when the caller read it already (else 0), and
// `leader_children` its leader's children file when the caller holds it open (else -1).
void AppendChildren(pid_t pid, std::vector<pid_t>& out, long threads = 0,
                    int leader_children = -1) {
  constexpr long kManyThreads = 256;
  if (threads <= 0) threads = StatField(pid, kStatNumThreads);
  if (threads == 1) {
    if (leader_children >= 0 && AppendChildrenFrom(leader_children, out)) return;
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task/%d/children", pid, pid);
    if (AppendListedChildren(AT_FDCWD, path, out)) return;
  }
  if (threads > kManyThreads && AppendChildrenByParent(pid, threads, out)) return;
  AppendThreadChildren(pid, out);
}

}  // namespace

std::optional<std::vector<int>> EpollFdsHolding(pid_t pid, int own, int registered_as) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/fd", pid);
  UniqueFd dir(open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir) return std::nullopt;
  std::vector<int> fds;
  bool refused = false;
  pid_t self = getpid();
  bool read = ForEachEntry(dir.Get(), [&](const char* name) {
    int holds = EpollHolds(self, pid, std::atoi(name), own, registered_as);
    if (holds > 0) fds.push_back(std::atoi(name));
    refused = holds < 0;
    return !refused;
  });
  if (!read || refused) return std::nullopt;
  return fds;
}

ProcFiles* ProcFilesCache::Get(pid_t pid) {
  if (auto it = map_.find(pid); it != map_.end()) return &it->second;
  char path[64];
  ProcFiles files;
  snprintf(path, sizeof(path), "/proc/%d/stat", pid);
  files.stat = UniqueFd(open(path, O_RDONLY | O_CLOEXEC));
  snprintf(path, sizeof(path), "/proc/%d/fd", pid);
  files.fd_dir = UniqueFd(open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  snprintf(path, sizeof(path), "/proc/%d/task/%d/children", pid, pid);
  files.leader_children = UniqueFd(open(path, O_RDONLY | O_CLOEXEC));
  if (!files.stat || !files.fd_dir || !files.leader_children) return nullptr;
  if (map_.size() >= capacity_) map_.clear();  // processes seen long ago: open them again
  return &map_.insert_or_assign(pid, std::move(files)).first->second;
}

std::optional<int> SocketFdCount(pid_t pid, uint64_t inode, int limit, int max_fds,
                                 bool include_pid, std::vector<int>* epoll_fds,
                                 ProcFilesCache* cache) {
  return SocketFdCount(pid,
                       SocketFdQuery{inode, -1, -1, limit, max_fds, include_pid, epoll_fds, cache});
}

std::optional<int> SocketFdCount(pid_t pid, const SocketFdQuery& q) {
  uint64_t inode = q.inode;
  int limit = q.limit;
  bool include_pid = q.include_pid;
  std::vector<int>* epoll_fds = q.epoll_fds;
  ProcFilesCache* cache = q.cache;
  char want[48];
  int len = snprintf(want, sizeof(want), "socket:[%llu]", static_cast<unsigned long long>(inode));
  FdScan scan{std::string_view(want, static_cast<size_t>(len)), limit, q.max_fds, q.own_copy,
              q.registered_as};
  // The kept files are read first through /proc/PID/stat, which fails (ESRCH) once the process
  // they were opened for has exited: then `pid` is another process's now, and they are reopened.
  ProcFiles* files = cache != nullptr ? cache->Get(pid) : nullptr;
  long threads = files != nullptr ? StatFieldFrom(files->stat.Get(), kStatNumThreads) : 0;
  if (files != nullptr && threads <= 0) {
    cache->Forget(pid);
    files = cache->Get(pid);
    threads = files != nullptr ? StatFieldFrom(files->stat.Get(), kStatNumThreads) : 0;
  }
  int fd_dir = files != nullptr ? files->fd_dir.Get() : -1;
  if (include_pid && !CountIn(pid, scan, epoll_fds, fd_dir)) return std::nullopt;
  std::vector<pid_t> pending;
  AppendChildren(pid, pending, threads, files != nullptr ? files->leader_children.Get() : -1);
  while (!pending.empty() && scan.count < limit && scan.budget > 0) {
    pid_t child = pending.back();
    pending.pop_back();
    // A child that exits meanwhile holds nothing any more.
    if (!CountIn(child, scan)) continue;
    AppendChildren(child, pending);
  }
  if (scan.count < limit && scan.budget <= 0) return std::nullopt;  // too many fds to tell
  return scan.count;
}

}  // namespace slipstream
