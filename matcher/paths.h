// Where a user's slipstreamd lives: one private directory per user.
#ifndef SLIPSTREAM_MATCHER_PATHS_H_
#define SLIPSTREAM_MATCHER_PATHS_H_

#include <string>

#include "base/result.h"

namespace slipstream::matcher {

// $SLIPSTREAM_RUNTIME_DIR if set (tests use it to get a daemon of their own), else
// $XDG_RUNTIME_DIR/slipstream, else /tmp/slipstream-$UID. Created 0700 when missing; refused
// (EPERM) when it exists but belongs to another user or is open to others, because whoever can
// write there could impersonate the daemon.
Result<std::string> RuntimeDir();
// EPERM unless `dir` is a directory (not a symlink) of this user, closed to others.
Status CheckPrivateDir(const std::string& dir);
inline std::string SocketPath(const std::string& dir) { return dir + "/matcher.sock"; }
inline std::string LockPath(const std::string& dir) { return dir + "/matcher.lock"; }
// The supervised listener ports, for the preload library (matcher/listener_table.h).
inline std::string ListenerTablePath(const std::string& dir) { return dir + "/listeners.table"; }
inline std::string LogPath(const std::string& dir) { return dir + "/slipstreamd.log"; }

}  // namespace slipstream::matcher

#endif  // SLIPSTREAM_MATCHER_PATHS_H_
