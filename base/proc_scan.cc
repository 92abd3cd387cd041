#include "base/proc_scan.h"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <string>

namespace slipstream {

namespace {

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
    std::string dir = std::string("/proc/") + p->d_name + "/fd";
    DIR* fds = opendir(dir.c_str());
    if (fds == nullptr) continue;
    char link[64];
    while (dirent* f = readdir(fds)) {
      ssize_t n = readlink((dir + "/" + f->d_name).c_str(), link, sizeof(link));
      if (n == static_cast<ssize_t>(want.size()) && want.compare(0, want.size(), link, n) == 0) {
        found = true;
        *out = SocketHolder{pid, std::atoi(f->d_name)};
        break;
      }
    }
    closedir(fds);
  }
  closedir(proc);
  return found ? 1 : 0;
}

}  // namespace

bool SocketHeldByOthers(uint64_t inode, std::span<const pid_t> exclude) {
  SocketHolder ignored{};
  return Scan(inode, exclude, &ignored) != 0;
}

std::optional<SocketHolder> FindSocketHolder(uint64_t inode) {
  SocketHolder holder{};
  if (Scan(inode, {}, &holder) != 1) return std::nullopt;
  return holder;
}

}  // namespace slipstream
