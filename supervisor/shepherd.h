// Shepherd: a minimal successor that keeps the seccomp notification fd alive if the supervisor
// dies.
//
// Why: when the last notification fd closes, the kernel fails every pending and future trapped call
// with ENOSYS. The shepherd is forked before the event loop starts, leaves the terminal's session
// (so Ctrl-C does not take it down), and sleeps until the supervisor's end of a pipe closes. If
// the filter still has users then, it answers the notifications the supervisor had received but
// not answered (OutstandingTable, plus the few ids just above the highest one recorded, which a
// receive in flight may have taken), then answers CONTINUE to every later notification until the
// last supervised process is gone. Programs keep running on plain TCP.
#ifndef SLIPSTREAM_SUPERVISOR_SHEPHERD_H_
#define SLIPSTREAM_SUPERVISOR_SHEPHERD_H_

#include <sys/types.h>

#include "base/result.h"
#include "base/unique_fd.h"
#include "supervisor/outstanding.h"

namespace slipstream::supervisor {

struct ShepherdHandle {
  pid_t pid = -1;
  UniqueFd alive;  // the supervisor's end of the pipe; closes when the supervisor dies
};

[[nodiscard]] Result<ShepherdHandle> StartShepherd(int notify_fd, const OutstandingTable& table);

// Ends the shepherd of a supervisor that finishes normally, and reaps it: an orphaned shepherd
// would exit as a zombie of init, and in a container init is often the program itself, which
// never reaps. The shepherd exits at once when no supervised task is left; should a task still use
// the filter, it takes over as if the supervisor had died and is left running (waited for at most
// `timeout_ms`).
void StopShepherd(ShepherdHandle& handle, int timeout_ms = 1000);

// The take-over itself, exposed for tests: answers every listed and recently received id, then
// CONTINUEs until the notification fd hangs up. Returns the number of notifications answered.
long ShepherdTakeOver(int notify_fd, const OutstandingTable& table);

}  // namespace slipstream::supervisor

#endif  // SLIPSTREAM_SUPERVISOR_SHEPHERD_H_
