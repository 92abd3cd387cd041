// Session: one run of slipstream-trace. Owns the event loop, the notification fd, the launched
// program's lifecycle, and the answer to every notification.
//
// Threading: one thread, one io_context. Everything below runs on it.
#ifndef SLIPSTREAM_SUPERVISOR_SESSION_H_
#define SLIPSTREAM_SUPERVISOR_SESSION_H_

#include <utility>  // before asio: awaitable.hpp needs std::exchange on g++ 12

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <memory>
#include <optional>

#include "fdinject/installer.h"
#include "supervisor/held_calls.h"
#include "supervisor/local_addrs.h"
#include "supervisor/outstanding.h"
#include "supervisor/socket_calls.h"
#include "supervisor/stats.h"
#include "supervisor/switcher.h"
#include "supervisor/trace_log.h"
#include "tracer/notifier.h"
#include "tracer/probe.h"

namespace slipstream::supervisor {

struct SessionConfig {
  tracer::KernelFeatures features;
  bool wait_killable = false;  // the filter was installed with WAIT_KILLABLE_RECV
  FILE* trace_out = nullptr;   // nullptr: no --trace
  bool switching = true;       // false: observe and emulate only (--no-switch)
};

class Session {
 public:
  // Takes the notification fd and the launched program's pid. `signal_fd` is a signalfd for SIGCHLD
  // and the forwarded signals, which the caller has blocked.
  Session(SessionConfig config, UniqueFd notify_fd, pid_t program, UniqueFd signal_fd,
          OutstandingTable& outstanding);
  ~Session();

  // Runs until the program and every supervised descendant are gone. Returns the program's wait
  // status.
  int Run();
  const Stats& stats() const { return stats_; }
  // Lowers the accept gates this session raised (switches awaiting a verdict, parked connections:
  // preload_abi.h). slipstream-trace ends with ExitLike, which runs no destructors, and a count
  // left raised would make every later accept on that port cost a notification.
  void LowerAcceptGates();

 private:
  void ArmNotifyFd();
  void OnNotifyFdReady();
  void Dispatch(const tracer::Notification& n);
  void ArmSignals();
  void OnSignals();
  void ReapChildren();
  void MaybeFinish();
  void SchedulePurge();

  SessionConfig config_;
  boost::asio::io_context io_;
  UniqueFd notify_fd_;
  tracer::KernelNotifier notifier_;
  fdinject::KernelFdInstaller installer_;
  boost::asio::posix::stream_descriptor notify_desc_;
  boost::asio::posix::stream_descriptor signals_;
  Stats stats_;
  TraceLog trace_;
  CallSinks sinks_;
  HeldCalls held_;
  LocalAddresses local_;
  std::unique_ptr<Switcher> switcher_;
  boost::asio::steady_timer purge_timer_;
  std::optional<SockDiag> diag_;
  SocketCalls calls_;

  pid_t program_;
  std::optional<int> program_status_;
  bool notify_hup_ = false;
};

}  // namespace slipstream::supervisor

#endif  // SLIPSTREAM_SUPERVISOR_SESSION_H_
