#include "base/proc_scan.h"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <string>

namespace slipstream {

bool SocketHeldByOthers(uint64_t inode, std::span<const pid_t> exclude) {
  std::string want = "socket:[" + std::to_string(inode) + "]";
  pid_t self = getpid();
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return true;
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
        break;
      }
    }
    closedir(fds);
  }
  closedir(proc);
  return found;
}

}  // namespace slipstream
