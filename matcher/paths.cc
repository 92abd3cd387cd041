#include "matcher/paths.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

namespace slipstream::matcher {
namespace {

Status EnsurePrivateDir(const std::string& dir) {
  if (mkdir(dir.c_str(), 0700) < 0 && errno != EEXIST) return Errno("mkdir(runtime dir)");
  return CheckPrivateDir(dir);
}

}  // namespace

Status CheckPrivateDir(const std::string& dir) {
  struct stat st;
  if (lstat(dir.c_str(), &st) < 0) return Errno("stat(runtime dir)");
  if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077) != 0) {
    return Error(EPERM, "runtime dir not private to this user");
  }
  return {};
}

Result<std::string> RuntimeDir() {
  std::string dir;
  if (const char* explicit_dir = getenv("SLIPSTREAM_RUNTIME_DIR"); explicit_dir && *explicit_dir) {
    dir = explicit_dir;
  } else if (const char* xdg = getenv("XDG_RUNTIME_DIR"); xdg && *xdg && access(xdg, W_OK) == 0) {
    dir = std::string(xdg) + "/slipstream";
  } else {
    dir = "/tmp/slipstream-" + std::to_string(geteuid());
  }
  auto st = EnsurePrivateDir(dir);
  if (!st) return tl::unexpected(st.error());
  return dir;
}

}  // namespace slipstream::matcher
