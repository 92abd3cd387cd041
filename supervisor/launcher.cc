#include "supervisor/launcher.h"

#include "base/fd_passing.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace slipstream::supervisor {
namespace {

// What the child reports on its error pipe before it gives up.
struct ChildFailure {
  int stage;  // 0: filter install, 1: notification fd hand-over, 2: execvp
  int err;
};

Status SendFd(int sock, int fd) {
  char byte = 0;
  iovec iov{&byte, 1};
  return SendWithFds(sock, {&iov, 1}, {&fd, 1});
}

Result<UniqueFd> ReceiveFd(int sock) {
  char byte;
  iovec iov{&byte, 1};
  auto r = ReceiveWithFds(sock, {&iov, 1});
  if (!r) return tl::unexpected(r.error());
  if (r->bytes != 1 || r->fds.size() != 1) return Error(EPROTO, "recvmsg(notification fd)");
  return std::move(r->fds[0]);
}

[[noreturn]] void Fail(int err_pipe, int stage, int err) {
  ChildFailure f{stage, err};
  (void)!write(err_pipe, &f, sizeof(f));
  _exit(ExitCodeForExecError(err));
}

[[noreturn]] void RunChild(const LaunchSpec& spec, char* const* argv, char* const* envp,
                           int parent_end, int hand_over, int err_pipe) {
  close(parent_end);  // so that the read of the supervisor's go sees EOF if it dies
  spec.signals->RestoreInChild();
  if (spec.limits != nullptr) spec.limits->RestoreInChild();
  if (spec.program != nullptr) {
    // NO_NEW_PRIVS only without CAP_SYS_ADMIN (not by uid: root in a container lacks it).
    tracer::AllowFilterInstall();
    int notify_fd = tracer::InstallFilter(*spec.program, spec.filter_flags);
    if (notify_fd < 0) Fail(err_pipe, 0, -notify_fd);
    if (!SendFd(hand_over, notify_fd)) Fail(err_pipe, 1, errno);
    close(notify_fd);
    // The supervisor's go: EOF means it died before its shepherd was there (read, not recv: the
    // filter traps only socket calls, and this one must not wait for a notification answer).
    char go = 0;
    ssize_t n;
    while ((n = read(hand_over, &go, 1)) < 0 && errno == EINTR) {
    }
    if (n != 1) Fail(err_pipe, 1, n < 0 ? errno : EPIPE);
  }
  close(hand_over);
  if (envp != nullptr) {
    execvpe(argv[0], argv, envp);
  } else {
    execvp(argv[0], argv);
  }
  Fail(err_pipe, 2, errno);
}

}  // namespace

int ExitCodeForExecError(int err) { return err == ENOENT ? 127 : 126; }

InheritedLimits InheritedLimits::CaptureAndRaise() {
  InheritedLimits l;
  getrlimit(RLIMIT_NOFILE, &l.nofile);
  rlimit raised = l.nofile;
  raised.rlim_cur = raised.rlim_max;
  setrlimit(RLIMIT_NOFILE, &raised);
  return l;
}

void InheritedLimits::RestoreInChild() const { setrlimit(RLIMIT_NOFILE, &nofile); }

InheritedSignals InheritedSignals::Capture() {
  InheritedSignals s;
  sigprocmask(SIG_SETMASK, nullptr, &s.mask);
  for (int sig = 1; sig < NSIG; ++sig) sigaction(sig, nullptr, &s.actions[sig]);
  return s;
}

void InheritedSignals::RestoreInChild() const {
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    // Handlers of the supervisor would be reset by exec anyway; ignored signals would not, and
    // the program must see exactly the dispositions slipstream-trace was started with.
    sigaction(sig, &actions[sig], nullptr);
  }
  sigprocmask(SIG_SETMASK, &mask, nullptr);
}

Result<Launched> Launch(const LaunchSpec& spec) {
  std::vector<char*> argv;
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  // Built before the fork: the child may only make async-signal-safe calls.
  std::vector<char*> envp;
  if (spec.env != nullptr) {
    for (const auto& e : *spec.env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
  }

  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0) return Errno("socketpair");
  UniqueFd ours(pair[0]), theirs(pair[1]);
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) < 0) return Errno("pipe2");
  UniqueFd err_read(pipe_fds[0]), err_write(pipe_fds[1]);

  pid_t pid = fork();
  if (pid < 0) return Errno("fork");
  if (pid == 0)
    RunChild(spec, argv.data(), spec.env ? envp.data() : nullptr, ours.Get(), theirs.Get(),
             err_write.Get());
  theirs.Reset();
  err_write.Reset();

  Launched launched;
  launched.pid = pid;
  if (spec.program != nullptr) {
    auto notify_fd = ReceiveFd(ours.Get());
    if (notify_fd) {
      launched.notify_fd = std::move(*notify_fd);
      if (spec.before_exec) spec.before_exec(launched.notify_fd.Get());
      char go = 1;
      (void)!write(ours.Get(), &go, 1);
    }
  }
  // EOF: exec succeeded (the pipe is close-on-exec). Otherwise the child says why it gave up.
  ChildFailure failure{};
  ssize_t n;
  while ((n = read(err_read.Get(), &failure, sizeof(failure))) < 0 && errno == EINTR) {
  }
  if (n == sizeof(failure)) {
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    static const char* const kStage[] = {"seccomp(SET_MODE_FILTER)", "hand over notification fd",
                                         "execvp"};
    return Error(failure.err, kStage[failure.stage < 0 || failure.stage > 2 ? 2 : failure.stage]);
  }
  if (spec.program != nullptr && !launched.notify_fd)
    return Error(EPROTO, "hand over notification fd");
  return launched;
}

}  // namespace slipstream::supervisor
