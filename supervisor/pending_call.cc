#include "supervisor/pending_call.h"

#include <string>
#include <utility>

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

void PendingCall::Finish(const Status& sent, TraceRecord::Outcome outcome) {
  answered_ = true;
  delivered_ = sent.has_value();
  sinks_->outstanding.Remove(std::exchange(slot_, -1));
  if (!sent) {
    // ENOENT: the target was interrupted or died between our receive and our answer.
    ++sinks_->stats.interrupted;
    outcome = TraceRecord::Outcome::kAbandoned;
  }
  record_.outcome = outcome;
  if (sinks_->trace.enabled()) sinks_->trace.Write(record_);
}

void PendingCall::SetFallback(int32_t fallback) {
  sinks_->outstanding.SetFallback(slot_, fallback);
}

void PendingCall::SetConnectProbe(pid_t pid, int fd) {
  sinks_->outstanding.SetConnectProbe(slot_, pid, fd);
}

// Every call ends in exactly one of continued, emulated or interrupted.
void PendingCall::Continue() {
  Status sent = sinks_->notifier.Continue(n_.id);
  if (sent) ++sinks_->stats.continued;
  Finish(sent, TraceRecord::Outcome::kKernel);
}

bool PendingCall::Return(int64_t value) {
  record_.value = value;
  Status sent = sinks_->notifier.Return(n_.id, value);
  if (sent) ++sinks_->stats.emulated;
  Finish(sent, TraceRecord::Outcome::kValue);
  return sent.has_value();
}

bool PendingCall::Fail(int err) {
  record_.err = err;
  Status sent = sinks_->notifier.Fail(n_.id, err);
  if (sent) ++sinks_->stats.emulated;
  Finish(sent, TraceRecord::Outcome::kError);
  return sent.has_value();
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
    return Finish({}, TraceRecord::Outcome::kError);
  }
  record_.value = 0;
  Finish({}, TraceRecord::Outcome::kValue);
}

void PendingCall::Abandon() {
  Finish(Error(ENOENT, "abandoned"), TraceRecord::Outcome::kAbandoned);
}

}  // namespace slipstream::supervisor
