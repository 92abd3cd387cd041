#include "supervisor/pending_call.h"

#include <spdlog/spdlog.h>

#include <string>
#include <utility>

#include "base/errno_name.h"

namespace slipstream::supervisor {

PendingCall::PendingCall(CallSinks& sinks, const tracer::Notification& n, tracer::Call call)
    : sinks_(&sinks), n_(n), slot_(sinks.outstanding.Add(n.id)) {
  record_.when = std::chrono::system_clock::now();
  record_.call = call;
  record_.tid = n.tid;
  ++sinks.stats.calls[static_cast<size_t>(call)];
}

PendingCall::PendingCall(PendingCall&& other) noexcept
    : sinks_(other.sinks_),
      n_(other.n_),
      slot_(std::exchange(other.slot_, -1)),
      answered_(std::exchange(other.answered_, true)),
      process_(other.process_),
      record_(std::move(other.record_)) {}

PendingCall::~PendingCall() {
  if (!answered_) Continue();
}

bool PendingCall::Finish(const Status& sent, TraceRecord::Outcome outcome) {
  answered_ = true;
  delivered_ = sent.has_value();
  sinks_->outstanding.Remove(std::exchange(slot_, -1));
  if (!sent && sent.error().TargetGone()) {
    // ENOENT: the target was interrupted or died between our receive and our answer.
    ++sinks_->stats.interrupted;
    outcome = TraceRecord::Outcome::kAbandoned;
  } else if (!sent) {
    // Any other refusal is a defect of ours (EINPROGRESS: the call was answered already; EINVAL:
    // a malformed answer), not the program leaving: said loudly and counted apart. Another answer
    // (CONTINUE) is not tried: an emulation may have had its effect already (bytes sent), and the
    // kernel refuses a second answer anyway.
    spdlog::error("answer to notification {} refused: {}", n_.id, sent.error().ToString());
    ++sinks_->stats.unanswered;
    outcome = TraceRecord::Outcome::kAbandoned;
    if (sinks_->trace.enabled()) {
      if (!record_.note.empty()) record_.note += " ";
      record_.note += std::string("(answer refused: ") + ErrnoName(sent.error().err) + ")";
    }
  }
  record_.outcome = outcome;
  if (sinks_->trace.enabled()) sinks_->trace.Write(record_);
  return delivered_;
}

void PendingCall::SetFallback(int32_t fallback) {
  sinks_->outstanding.SetFallback(slot_, fallback);
}

void PendingCall::SetConnectProbe(pid_t pid, int fd) {
  sinks_->outstanding.SetConnectProbe(slot_, pid, fd);
}

// Every call ends in exactly one of continued, emulated, interrupted or unanswered.
void PendingCall::Continue() {
  Status sent = sinks_->notifier.Continue(n_.id);
  if (sent) ++sinks_->stats.continued;
  Finish(sent, TraceRecord::Outcome::kKernel);
}

bool PendingCall::Return(int64_t value) {
  record_.value = value;
  Status sent = sinks_->notifier.Return(n_.id, value);
  if (sent) ++sinks_->stats.emulated;
  return Finish(sent, TraceRecord::Outcome::kValue);
}

bool PendingCall::Fail(int err) {
  record_.err = err;
  Status sent = sinks_->notifier.Fail(n_.id, err);
  if (sent) ++sinks_->stats.emulated;
  return Finish(sent, TraceRecord::Outcome::kError);
}

void PendingCall::AnsweredWithFd(int fd) {
  ++sinks_->stats.emulated;
  record_.value = fd;
  Finish({}, TraceRecord::Outcome::kValue);
}

void PendingCall::AnsweredThroughLibrary(int fd, int err) {
  ++sinks_->stats.emulated;
  if (sinks_->trace.enabled()) {
    record_.note += " (its end sent as fd " + std::to_string(fd) + " to the preload library)";
  }
  if (err != 0) {
    record_.err = err;
    Finish({}, TraceRecord::Outcome::kError);
    return;
  }
  record_.value = 0;
  Finish({}, TraceRecord::Outcome::kValue);
}

void PendingCall::Abandon() {
  Finish(Error(ENOENT, "abandoned"), TraceRecord::Outcome::kAbandoned);
}

}  // namespace slipstream::supervisor
