#include "supervisor/shepherd.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "tracer/notifier.h"

namespace slipstream::supervisor {
namespace {

// Ids a receive in flight may have taken when the supervisor died, beyond the highest recorded.
constexpr uint64_t kProbeAhead = 64;

// Is the socket behind fd `fd` of process `pid` connected (a TCP connection made, or an AF_UNIX
// end installed)? pidfd_getfd: Linux 5.6.
bool SocketConnected(pid_t pid, int fd) {
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) return false;
  int copy = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, fd, 0));
  close(pidfd);
  if (copy < 0) return false;
  sockaddr_storage peer{};
  socklen_t len = sizeof(peer);
  bool connected = getpeername(copy, reinterpret_cast<sockaddr*>(&peer), &len) == 0;
  close(copy);
  return connected;
}

bool AnswerIfSent(tracer::KernelNotifier& notifier, const OutstandingTable::Entry& e) {
  if (!notifier.IdValid(e.id)) return false;
  int32_t fallback = e.fallback;
  if (fallback == OutstandingTable::kConnectProbe) {
    fallback = SocketConnected(e.probe_pid, e.probe_fd) ? OutstandingTable::kReturnZero
                                                        : OutstandingTable::kContinue;
  }
  uint64_t id = e.id;
  if (fallback == OutstandingTable::kReturnZero) return notifier.Return(id, 0).has_value();
  if (fallback < 0) return notifier.Fail(id, -fallback).has_value();
  return notifier.Continue(id).has_value();
}

}  // namespace

long ShepherdTakeOver(int notify_fd, const OutstandingTable& table) {
  tracer::KernelNotifier notifier(notify_fd);
  long answered = 0;
  for (const auto& e : table.Entries()) answered += AnswerIfSent(notifier, e);
  if (table.any_received()) {
    for (uint64_t id = table.highest_id() + 1; id <= table.highest_id() + kProbeAhead; ++id) {
      answered += AnswerIfSent(notifier, {id, OutstandingTable::kContinue, 0, -1});
    }
  }
  for (;;) {
    pollfd p{notify_fd, POLLIN, 0};
    if (poll(&p, 1, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (p.revents & POLLIN) {
      auto n = notifier.Receive();
      if (n && notifier.Continue(n->id)) ++answered;
      continue;
    }
    if (p.revents & (POLLHUP | POLLERR | POLLNVAL)) break;  // no supervised process is left
  }
  return answered;
}

}  // namespace slipstream::supervisor

namespace slipstream::supervisor {

Result<ShepherdHandle> StartShepherd(int notify_fd, const OutstandingTable& table) {
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) < 0) return Errno("pipe2");
  UniqueFd watch(pipe_fds[0]), alive(pipe_fds[1]);
  pid_t pid = fork();
  if (pid < 0) return Errno("fork");
  if (pid == 0) {
    alive.Reset();
    setsid();  // out of the terminal's session: Ctrl-C and hang-ups are for the program
    prctl(PR_SET_NAME, "slipstream-shep", 0, 0, 0);
    for (int sig : {SIGINT, SIGQUIT, SIGHUP, SIGTERM, SIGPIPE, SIGTSTP}) signal(sig, SIG_IGN);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    // Keep only the notification fd and the pipe; the supervisor's other fds are none of our
    // business.
    int lo = std::min(notify_fd, watch.Get()), hi = std::max(notify_fd, watch.Get());
    syscall(SYS_close_range, 3, lo - 1, 0);  // Linux 5.9
    syscall(SYS_close_range, lo + 1, hi - 1, 0);
    syscall(SYS_close_range, hi + 1, ~0U, 0);
    pollfd p{watch.Get(), POLLIN, 0};
    while (poll(&p, 1, -1) < 0 && errno == EINTR) {
    }
    pollfd l{notify_fd, POLLIN, 0};
    poll(&l, 1, 0);
    if (!(l.revents & POLLHUP) || (l.revents & POLLIN)) ShepherdTakeOver(notify_fd, table);
    _exit(0);
  }
  return ShepherdHandle{pid, std::move(alive)};
}

void StopShepherd(ShepherdHandle& handle, int timeout_ms) {
  if (handle.pid <= 0) return;
  // pidfd_open (Linux 5.3) lets us wait for the exit with a bound; the shepherd is our child, so
  // its pid cannot be reused before we reap it.
  UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, handle.pid, 0)));
  handle.alive.Reset();
  if (pidfd) {
    pollfd p{pidfd.Get(), POLLIN, 0};
    while (poll(&p, 1, timeout_ms) < 0 && errno == EINTR) {
    }
  }
  int status;
  if (waitpid(handle.pid, &status, WNOHANG) == handle.pid) handle.pid = -1;
}

}  // namespace slipstream::supervisor
