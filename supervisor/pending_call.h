// PendingCall: the obligation to answer one notification.
//
// Fail open by construction: a PendingCall that is destroyed unanswered answers CONTINUE, so the
// kernel runs the call as if Slipstream were not there. Only a finished emulation or fd
// installation replaces that answer.
#ifndef SLIPSTREAM_SUPERVISOR_PENDING_CALL_H_
#define SLIPSTREAM_SUPERVISOR_PENDING_CALL_H_

#include <cstdint>

#include "supervisor/outstanding.h"
#include "supervisor/stats.h"
#include "supervisor/trace_log.h"
#include "tracer/notifier.h"

namespace slipstream::supervisor {

// What every PendingCall reports to. Owned by the Session; outlives every PendingCall.
struct CallSinks {
  tracer::Notifier& notifier;
  OutstandingTable& outstanding;
  TraceLog& trace;
  Stats& stats;
};

class PendingCall {
 public:
  PendingCall(CallSinks& sinks, const tracer::Notification& n, tracer::Call call);
  PendingCall(PendingCall&& other) noexcept;
  PendingCall& operator=(PendingCall&&) = delete;
  PendingCall(const PendingCall&) = delete;
  ~PendingCall();

  const tracer::Notification& notification() const { return n_; }
  uint64_t id() const { return n_.id; }
  pid_t tid() const { return n_.tid; }
  uint64_t arg(int i) const { return n_.args[static_cast<size_t>(i)]; }
  bool answered() const { return answered_; }
  // The answer reached the target (false also while unanswered).
  bool delivered() const { return delivered_; }
  TraceRecord& trace() { return record_; }
  // The caller's process, once someone has read it (0 until then): SocketCalls::ProcessOf.
  pid_t process() const { return process_; }
  pid_t set_process(pid_t process) { return process_ = process; }
  // Whether the record will be written (--trace): text that costs system calls is built only then.
  bool tracing() const { return sinks_->trace.enabled(); }

  // Each answers the call once; ENOENT (the target left the call) is recorded, not an error.
  // Return and Fail say whether the answer reached the target: a call whose answer was lost is
  // restarted (SA_RESTART) or failed with EINTR, and some callers must remember that.
  void Continue();
  bool Return(int64_t value);
  bool Fail(int err);
  // The call was answered by ADDFD with SECCOMP_ADDFD_FLAG_SEND, returning `fd`.
  void AnsweredWithFd(int fd);
  // The same for the preload library, which moves the new fd over the program's own and returns
  // 0 (`err` 0) or -1 with errno `err` to the program: --trace shows that answer and the fd.
  void AnsweredThroughLibrary(int fd, int err);
  // The target left the call: nothing can be answered any more.
  void Abandon();
  // What the shepherd answers for this call should the supervisor die before answering it
  // (OutstandingTable::kReturnZero or a negative errno; CONTINUE by default).
  void SetFallback(int32_t fallback);
  void SetConnectProbe(pid_t pid, int fd);

 private:
  // Records the outcome of an answer; returns `delivered_`.
  bool Finish(const Status& sent, TraceRecord::Outcome outcome);
  CallSinks* sinks_;
  tracer::Notification n_;
  int slot_;
  bool answered_ = false;
  bool delivered_ = false;
  pid_t process_ = 0;
  TraceRecord record_;
};

}  // namespace slipstream::supervisor

#endif  // SLIPSTREAM_SUPERVISOR_PENDING_CALL_H_
