// Where slipstreamd lives: one private directory per user, or one system-wide directory of a root
// daemon started with --all-users (docs/design.md, "Sessions are the user's own").
#ifndef SLIPSTREAM_MATCHER_PATHS_H_
#define SLIPSTREAM_MATCHER_PATHS_H_

#include <sys/stat.h>
#include <sys/types.h>

#include <string>

#include "base/result.h"

namespace slipstream::matcher {

// How a supervisor may use a runtime directory, decided from its lstat() alone (pure).
enum class DirTrust {
  kUntrusted,  // someone else could replace the socket or the table there: never used
  kPrivate,    // ours, closed to others: our own daemon's, started on demand if missing
  // Root's, writable by root alone: a system-wide daemon's (slipstreamd --all-users). Used, but
  // never written to: no daemon is started there, no file created.
  kSystemWide,
};
DirTrust ClassifyRuntimeDir(const struct stat& st, uid_t self);
// Whether a daemon running as `self` may serve from a directory with this lstat(): its own and
// private, or, serving every user (`all_users`), its own and writable by it alone (pure).
bool DaemonMayUseDir(const struct stat& st, uid_t self, bool all_users);

// The runtime directory named by the environment: $SLIPSTREAM_RUNTIME_DIR if set (tests use it to
// get a daemon of their own), else $XDG_RUNTIME_DIR/slipstream, else /tmp/slipstream-$UID.
std::string RuntimeDirName();

// For supervisors and `slipstreamd --status`: RuntimeDirName(), created 0700 when missing, and
// its trust; EPERM when it is kUntrusted (whoever can write there could impersonate the daemon).
struct RuntimeDirInfo {
  std::string dir;
  DirTrust trust = DirTrust::kUntrusted;
};
Result<RuntimeDirInfo> FindRuntimeDir();
// FindRuntimeDir()'s directory.
Result<std::string> RuntimeDir();
// For the daemon: RuntimeDirName(), created when missing (0700, or 0755 for `all_users`), and
// EPERM unless DaemonMayUseDir().
Result<std::string> DaemonRuntimeDir(bool all_users);
// EPERM unless `dir` is a directory (not a symlink) the daemon may use (DaemonMayUseDir).
Status CheckDaemonDir(const std::string& dir, bool all_users);

inline std::string SocketPath(const std::string& dir) { return dir + "/matcher.sock"; }
inline std::string LockPath(const std::string& dir) { return dir + "/matcher.lock"; }
// The supervised listener ports, for the preload library (matcher/listener_table.h).
inline std::string ListenerTablePath(const std::string& dir) { return dir + "/listeners.table"; }
inline std::string LogPath(const std::string& dir) { return dir + "/slipstreamd.log"; }

}  // namespace slipstream::matcher

#endif  // SLIPSTREAM_MATCHER_PATHS_H_
