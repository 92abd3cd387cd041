// HeldCalls: calls the supervisor completes asynchronously while the target stays blocked in them
// (a blocking accept() with an empty queue, a blocking connect() still in its handshake).
//
// While a call is held, a sweep every 10 ms keeps signal semantics native:
//  - without WAIT_KILLABLE_RECV a signal withdraws the notification (NOTIF_ID_VALID -> ENOENT); the
//    held call is dropped, and a restarted call arrives as a new notification;
//  - with WAIT_KILLABLE_RECV (5.19) the kernel would delay the signal until we answer, so when a
//    signal is pending for the thread we answer -ERESTARTSYS: the kernel then runs the handler and
//    restarts the call (SA_RESTART) or returns EINTR, exactly as for a native blocking call.
#ifndef SLIPSTREAM_SUPERVISOR_HELD_CALLS_H_
#define SLIPSTREAM_SUPERVISOR_HELD_CALLS_H_

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <utility>  // before asio: awaitable.hpp needs std::exchange on g++ 12

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include "base/sweep_timer.h"
#include "base/syscalls.h"
#include "base/unique_fd.h"
#include "supervisor/pending_call.h"

namespace slipstream::supervisor {

// ERESTARTSYS, kernel-internal (include/linux/errno.h): the answer for a call a signal interrupts.
inline constexpr int kErestartSys = 512;

class HeldCalls {
 public:
  // kReadMore: edge-triggered, for a call that waits for more bytes than are queued (a peek with
  // MSG_WAITALL): the retry runs each time data arrives, not while data merely sits there.
  enum class Wait { kRead, kWrite, kReadMore };
  // Runs when `fd` is ready. Returns true once the call is answered (or handed on), false to wait
  // again. A retry, like an interrupt, must not hold or drop other calls (HeldCalls walks its
  // calls while they run); what it hands on, it posts.
  using Retry = std::function<bool(PendingCall& call, int fd)>;
  // How a held call's wait ended early: the socket's SO_RCVTIMEO/SO_SNDTIMEO expired, a signal is
  // pending (WAIT_KILLABLE_RECV: the call must be answered), or the call was withdrawn (a signal
  // without WAIT_KILLABLE_RECV, or the thread died: nothing can be answered any more).
  enum class End { kTimeout, kSignal, kWithdrawn };
  // For calls that may have made progress (a send that sent part), which the kernel reports
  // instead of an error: answers the call (kTimeout, kSignal) or records the progress
  // (kWithdrawn).
  using Interrupt = std::function<void(PendingCall& call, int fd, End end)>;

  HeldCalls(boost::asio::io_context& io, tracer::Notifier& notifier, bool killable);
  ~HeldCalls();

  // `key` names what the call waits for beyond its fd (an accept: its listener), for Wake and
  // HeldWith.
  void Hold(PendingCall call, UniqueFd fd, Wait wait, Retry retry, Interrupt interrupt = nullptr,
            std::optional<FileId> key = std::nullopt);
  size_t size() const { return held_.size(); }
  // How many calls are held with `key`: counted off however a held call ends (answered,
  // withdrawn, timed out, dropped at exit).
  int HeldWith(const FileId& key) const;
  // Runs, soon (posted: never inside another retry), the retries of the calls held with `key`, as
  // if their fds were ready: for what arrives by another way than the fd (a connection parked
  // for a listener after its accept was withdrawn).
  void Wake(const FileId& key);
  // At exit, once every supervised task is gone: drops the calls still held (their notifications
  // are void), and with them what their retries own (an accept gate's count).
  void DropAll();
  // `tid` is making a new call, so every call it had held was withdrawn (a thread is in one
  // syscall at a time): ends them as withdrawn now rather than at the next sweep, so that what
  // they did is known before the new call runs.
  void ThreadMovedOn(pid_t tid);
  // Does a held call survive a signal (WAIT_KILLABLE_RECV), so that progress it made can still
  // be reported? Without it a signal withdraws the call and the program never learns of it.
  bool killable() const { return killable_; }

 private:
  struct Entry;
  static uint32_t EventsOf(Wait wait);
  void Arm(Entry* entry);
  void ArmWaits();
  void OnWaitsReady();
  void Drop(Entry* entry);
  void ScheduleSweep();
  void Sweep();

  boost::asio::io_context& io_;
  tracer::Notifier& notifier_;
  bool killable_;
  // The program's fds are watched through an epoll instance of our own, never handed to Asio
  // directly: Asio switches every descriptor it waits on to O_NONBLOCK, and a copy shares the
  // program's open file description, so the program would see its blocking socket turn
  // non-blocking.
  UniqueFd waits_fd_;
  boost::asio::posix::stream_descriptor waits_;
  SweepTimer sweep_timer_;
  // The held calls, by the thread blocked in each, so that a thread's new call finds its own in
  // O(log n) (ThreadMovedOn runs on every trapped call). A thread is in one call at a time, but a
  // call withdrawn by a signal stays here until it is found out, so a thread can have several.
  std::multimap<pid_t, std::unique_ptr<Entry>> held_;
  // An index of the held calls that have a key (Hold's `key`): HeldWith and Wake look up only
  // those.
  std::multimap<FileId, Entry*> keyed_;
};

// True when a signal is pending that the kernel would deliver to thread `tid` if it were in an
// interruptible wait (its own pending set, or the process-wide set when no other thread of the
// group could take the signal).
bool SignalPendingFor(pid_t tid);

}  // namespace slipstream::supervisor

#endif  // SLIPSTREAM_SUPERVISOR_HELD_CALLS_H_
