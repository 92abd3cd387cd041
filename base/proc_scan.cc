#include "base/proc_scan.h"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <string>

namespace slipstream {

namespace {

// The fd of process `pid` (a /proc name) for the socket whose link text is `want`, or -1.
int FdFor(const char* pid, const std::string& want) {
  std::string dir = std::string("/proc/") + pid + "/fd";
  DIR* fds = opendir(dir.c_str());
  if (fds == nullptr) return -1;
  int found = -1;
  char link[64];
  while (dirent* f = readdir(fds)) {
    ssize_t n = readlink((dir + "/" + f->d_name).c_str(), link, sizeof(link));
    if (n == static_cast<ssize_t>(want.size()) && want.compare(0, want.size(), link, n) == 0) {
      found = std::atoi(f->d_name);
      break;
    }
  }
  closedir(fds);
  return found;
}

// Scans /proc/*/fd of every process but us and `exclude` for the socket; -1 if /proc cannot be
// read, 0 if nobody holds it, 1 (and `out`) if somebody does.
int Scan(uint64_t inode, std::span<const pid_t> exclude, SocketHolder* out) {
  std::string want = "socket:[" + std::to_string(inode) + "]";
  pid_t self = getpid();
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return -1;
  bool found = false;
  while (!found) {
    dirent* p = readdir(proc);
    if (p == nullptr) break;
    pid_t pid = static_cast<pid_t>(std::atoi(p->d_name));
    if (pid <= 0 || pid == self ||
        std::find(exclude.begin(), exclude.end(), pid) != exclude.end()) {
      continue;
    }
    if (int fd = FdFor(p->d_name, want); fd >= 0) {
      found = true;
      *out = SocketHolder{pid, fd};
    }
  }
  closedir(proc);
  return found ? 1 : 0;
}

}  // namespace

bool SocketHeldByOthers(uint64_t inode, std::span<const pid_t> exclude) {
  SocketHolder ignored{};
  return Scan(inode, exclude, &ignored) != 0;
}

std::optional<SocketHolder> FindSocketHolder(uint64_t inode, pid_t hint) {
  if (hint > 0) {
    int fd = FdFor(std::to_string(hint).c_str(), "socket:[" + std::to_string(inode) + "]");
    if (fd >= 0) return SocketHolder{hint, fd};
  }
  SocketHolder holder{};
  if (Scan(inode, {}, &holder) != 1) return std::nullopt;
  return holder;
}

}  // namespace slipstream
