#include "supervisor/session.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/wait.h>

#include <spdlog/spdlog.h>

#include "tracer/calls.h"

namespace slipstream::supervisor {
namespace asio = boost::asio;

namespace {

// Notifications handled per wake-up before other events get a turn.
constexpr int kBatch = 64;

bool NotifyFdHungUp(int fd, bool* readable) {
  pollfd p{fd, POLLIN, 0};
  poll(&p, 1, 0);
  *readable = (p.revents & POLLIN) != 0;
  return !*readable && (p.revents & (POLLHUP | POLLERR)) != 0;
}

}  // namespace

Session::Session(SessionConfig config, UniqueFd notify_fd, pid_t program, UniqueFd signal_fd,
                 OutstandingTable& outstanding)
    : config_(std::move(config)),
      notify_fd_(std::move(notify_fd)),
      notifier_(notify_fd_.Get()),
      installer_(notify_fd_.Get()),
      // asio gets its own dup: it closes what it holds, and the notifier keeps using the original.
      notify_desc_(io_, fcntl(notify_fd_.Get(), F_DUPFD_CLOEXEC, 0)),
      signals_(io_, signal_fd.Release()),
      trace_(config_.trace_out),
      sinks_{notifier_, outstanding, trace_, stats_},
      held_(io_, notifier_, config_.wait_killable),
      switcher_(config_.switching && config_.features.CanEmulate()
                    ? std::make_unique<Switcher>(io_, stats_)
                    : nullptr),
      purge_timer_(io_),
      calls_({config_.features, notifier_, installer_, held_, local_, stats_, switcher_.get()}),
      program_(program) {}

Session::~Session() {
  // Handlers posted but not run (a daemon's answer, a wake of held calls) may own pending calls,
  // whose destructors answer through notifier_: run them while every member lives. The targets
  // are gone by now, so the answers fail harmlessly.
  io_.restart();
  io_.poll();
}

int Session::Run() {
  if (config_.features.sync_wakeup && !tracer::SetSyncWakeup(notify_fd_.Get())) {
    spdlog::debug("SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP refused");
  }
  if (switcher_) switcher_->Start();
  ArmNotifyFd();
  ArmSignals();
  SchedulePurge();
  io_.run();
  return program_status_.value_or(0);
}

void Session::ArmNotifyFd() {
  notify_desc_.async_wait(asio::posix::descriptor_base::wait_read,
                          [this](const boost::system::error_code& ec) {
                            if (!ec) OnNotifyFdReady();
                          });
}

void Session::OnNotifyFdReady() {
  for (int i = 0; i < kBatch; ++i) {
    bool readable;
    if (NotifyFdHungUp(notify_fd_.Get(), &readable)) {
      // Every supervised task has been reaped: nothing can trap any more.
      notify_hup_ = true;
      return MaybeFinish();
    }
    if (!readable) break;
    auto n = notifier_.Receive();
    if (!n) {
      // ENOENT: the notification was withdrawn (signal, exit) before we took it.
      if (!n.error().TargetGone()) spdlog::warn("receive failed: {}", n.error().ToString());
      continue;
    }
    Dispatch(*n);
  }
  ArmNotifyFd();
}

void Session::SchedulePurge() {
  purge_timer_.expires_after(std::chrono::seconds(5));
  purge_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    if (calls_.parked() > 0) {
      if (!diag_) {
        if (auto d = SockDiag::Open()) diag_.emplace(std::move(*d));
      }
      if (diag_) calls_.PurgeParked(*diag_);
    }
    SchedulePurge();
  });
}

void Session::Dispatch(const tracer::Notification& n) {
  auto call = tracer::CallFromNr(n.nr);
  if (!call) {
    // Not one of ours (cannot happen with our filter); let it run.
    (void)notifier_.Continue(n.id);
    return;
  }
  calls_.Handle(PendingCall(sinks_, n, *call));
}

void Session::ArmSignals() {
  signals_.async_wait(asio::posix::descriptor_base::wait_read,
                      [this](const boost::system::error_code& ec) {
                        if (!ec) OnSignals();
                      });
}

void Session::OnSignals() {
  signalfd_siginfo info;
  while (read(signals_.native_handle(), &info, sizeof(info)) == sizeof(info)) {
    int sig = static_cast<int>(info.ssi_signo);
    if (sig == SIGCHLD) continue;  // reaped below
    // A signal from the terminal (SI_KERNEL) reached the program's process group directly;
    // forward only what someone sent (kill, sigqueue). A kill of the whole process group cannot be
    // told apart from a kill of our pid, so the program gets such a signal twice.
    if (info.ssi_code <= 0 && !program_status_) {
      spdlog::debug("forwarding signal {} to pid {}", sig, program_);
      kill(program_, sig);
    }
  }
  ReapChildren();
  ArmSignals();
}

void Session::ReapChildren() {
  for (;;) {
    int status;
    pid_t pid = waitpid(-1, &status, WNOHANG | __WALL);
    if (pid <= 0) break;
    if (pid == program_) {
      program_status_ = status;
      spdlog::debug("program {} ended, status {:#x}", pid, status);
    }
  }
  MaybeFinish();
}

void Session::MaybeFinish() {
  // Both are needed: the notification fd hangs up only once every supervised task has been reaped,
  // and the program's status is what we exit with.
  if (program_status_ && notify_hup_) io_.stop();
}

void Session::LowerAcceptGates() {
  held_.DropAll();
  if (switcher_) switcher_->LowerAcceptGates();
  calls_.LowerAcceptGates();
  // Any count whose holder the exit will not destroy (ExitLike does not unwind) is lowered too.
  if (switcher_) switcher_->gate().LowerAll();
}

}  // namespace slipstream::supervisor
