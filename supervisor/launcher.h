// Launcher: starts the program under the seccomp filter and hands its notification fd back.
//
// The child restores the signal mask and dispositions the supervisor inherited, sets
// NO_NEW_PRIVS unless it has CAP_SYS_ADMIN (seccomp requires one of the two), installs the filter,
// passes the notification fd to the supervisor over a socketpair (SCM_RIGHTS), closes its own copy,
// waits for the supervisor's go (one byte; the supervisor starts its shepherd first, so that no
// trapped call of the program can find the notification fd without a holder that fails open) and
// execs. The notification fd never stays open in the program: a copy there would keep trapped calls
// hanging if the supervisor died.
#ifndef SLIPSTREAM_SUPERVISOR_LAUNCHER_H_
#define SLIPSTREAM_SUPERVISOR_LAUNCHER_H_

#include <signal.h>
#include <sys/resource.h>
#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"
#include "tracer/filter.h"

namespace slipstream::supervisor {

// The fd limit the supervisor started with; it raises its own (it keeps a TCP socket per switched
// connection), and the child gets the original back before exec.
struct InheritedLimits {
  rlimit nofile;
  static InheritedLimits CaptureAndRaise();
  void RestoreInChild() const;  // async-signal-safe
};

// The signal state the supervisor started with, restored in the child before exec.
struct InheritedSignals {
  sigset_t mask;
  struct sigaction actions[NSIG];
  static InheritedSignals Capture();
  void RestoreInChild() const;  // async-signal-safe
};

struct LaunchSpec {
  std::vector<std::string> argv;
  const tracer::BpfProgram* program = nullptr;  // nullptr: run unsupervised
  unsigned filter_flags = 0;
  const InheritedSignals* signals = nullptr;
  const InheritedLimits* limits = nullptr;
  // The program's environment; nullptr: slipstream-trace's own.
  const std::vector<std::string>* env = nullptr;
  // Called with the notification fd before the program may exec (the shepherd starts here). Should
  // the supervisor die before it returns, the child exits without running the program: every
  // trapped call it made would fail with ENOSYS, the kernel's answer once no process holds the
  // notification fd.
  std::function<void(int notify_fd)> before_exec;
};

struct Launched {
  pid_t pid = -1;
  UniqueFd notify_fd;  // invalid when unsupervised
};

// Errors: "execvp" with the exec errno (ENOENT -> 127, others -> 126, as a shell does), or the
// step of the hand-over that failed.
[[nodiscard]] Result<Launched> Launch(const LaunchSpec& spec);

int ExitCodeForExecError(int err);

}  // namespace slipstream::supervisor

#endif  // SLIPSTREAM_SUPERVISOR_LAUNCHER_H_
