#include "matcher/paths.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>

namespace slipstream::matcher {
namespace {

constexpr mode_t kGroupOrOthers = S_IRWXG | S_IRWXO;
constexpr mode_t kWritableByOthers = S_IWGRP | S_IWOTH;

Result<struct stat> StatDir(const std::string& dir, mode_t create_mode) {
  if (mkdir(dir.c_str(), create_mode) < 0 && errno != EEXIST) return Errno("mkdir(runtime dir)");
  struct stat st;
  // lstat: a symlink is refused (S_ISDIR fails), whoever owns it.
  if (lstat(dir.c_str(), &st) < 0) return Errno("stat(runtime dir)");
  return st;
}

}  // namespace

DirTrust ClassifyRuntimeDir(const struct stat& st, uid_t self) {
  if (!S_ISDIR(st.st_mode)) return DirTrust::kUntrusted;
  if (st.st_uid == self && (st.st_mode & kGroupOrOthers) == 0) return DirTrust::kPrivate;
  // Only root's: a directory of another user could be a trap laid by that user (a socket that
  // collects our programs' connections). Root can do that anyway.
  if (st.st_uid == 0 && (st.st_mode & kWritableByOthers) == 0) return DirTrust::kSystemWide;
  return DirTrust::kUntrusted;
}

bool DaemonMayUseDir(const struct stat& st, uid_t self, bool all_users) {
  if (!S_ISDIR(st.st_mode) || st.st_uid != self) return false;
  return (st.st_mode & (all_users ? kWritableByOthers : kGroupOrOthers)) == 0;
}

std::string RuntimeDirName() {
  if (const char* explicit_dir = getenv("SLIPSTREAM_RUNTIME_DIR"); explicit_dir && *explicit_dir) {
    return explicit_dir;
  }
  if (const char* xdg = getenv("XDG_RUNTIME_DIR"); xdg && *xdg && access(xdg, W_OK) == 0) {
    return std::string(xdg) + "/slipstream";
  }
  return "/tmp/slipstream-" + std::to_string(geteuid());
}

Result<RuntimeDirInfo> FindRuntimeDir() {
  RuntimeDirInfo info{RuntimeDirName()};
  auto st = StatDir(info.dir, 0700);
  if (!st) return tl::unexpected(st.error());
  info.trust = ClassifyRuntimeDir(*st, geteuid());
  if (info.trust == DirTrust::kUntrusted) {
    return Error(EPERM,
                 "runtime dir neither private to this user nor root's and closed to writers");
  }
  return info;
}

Result<std::string> RuntimeDir() {
  auto info = FindRuntimeDir();
  if (!info) return tl::unexpected(info.error());
  return info->dir;
}

Status CheckDaemonDir(const std::string& dir, bool all_users) {
  struct stat st;
  if (lstat(dir.c_str(), &st) < 0) return Errno("stat(runtime dir)");
  if (!DaemonMayUseDir(st, geteuid(), all_users)) {
    return Error(EPERM, all_users ? "runtime dir not ours or writable by others"
                                  : "runtime dir not private to this user");
  }
  return {};
}

Result<std::string> DaemonRuntimeDir(bool all_users) {
  std::string dir = RuntimeDirName();
  bool created = mkdir(dir.c_str(), all_users ? 0755 : 0700) == 0;
  // Whatever the umask: every user's supervisor must reach the socket of a system-wide daemon.
  if (created && all_users) chmod(dir.c_str(), 0755);
  if (auto ok = CheckDaemonDir(dir, all_users); !ok) return tl::unexpected(ok.error());
  return dir;
}

}  // namespace slipstream::matcher
