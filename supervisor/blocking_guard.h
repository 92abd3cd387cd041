// BlockingGuard: bounds a socket call on a *blocking* fd that should complete at once (accept on
// a listener that polled readable, connect to a local listener) with a one-shot ITIMER_REAL.
//
// Why: the supervisor's copy of a target fd shares the open file description, so its O_NONBLOCK
// cannot be changed without the target seeing it. If the call would wait after all (a connection
// taken by a process outside supervision, a full SYN queue), SIGALRM, whose handler is installed
// without SA_RESTART, turns the wait into EINTR and the caller holds the call asynchronously.
#ifndef SLIPSTREAM_SUPERVISOR_BLOCKING_GUARD_H_
#define SLIPSTREAM_SUPERVISOR_BLOCKING_GUARD_H_

namespace slipstream::supervisor {

class BlockingGuard {
 public:
  // Installs the no-op SIGALRM handler once (supervisor start-up). The launched program gets its
  // original disposition back before exec.
  static void InstallHandler();

  BlockingGuard();   // arms the timer
  ~BlockingGuard();  // disarms it
  BlockingGuard(const BlockingGuard&) = delete;
  BlockingGuard& operator=(const BlockingGuard&) = delete;
};

}  // namespace slipstream::supervisor

#endif  // SLIPSTREAM_SUPERVISOR_BLOCKING_GUARD_H_
