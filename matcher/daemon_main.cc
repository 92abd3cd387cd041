// slipstreamd: the per-user Slipstream matcher daemon.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdio>
#include <ctime>
#include <optional>
#include <vector>

#include "matcher/daemon.h"
#include "matcher/daemon_options.h"
#include "matcher/paths.h"
#include "matcher/protocol.h"
#include "matcher/socket_activation.h"
#include "matcher/status_text.h"

namespace slipstream::matcher {
namespace {

// What the running daemon answers to kStatus: its JSON, nullopt when none runs, or an error
// already printed.
struct StatusReply {
  bool running = false;
  std::string json;  // the daemon's answer when running
};

std::optional<StatusReply> FetchStatus(const std::string& dir) {
  UniqueFd fd(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::string path = SocketPath(dir);
  path.copy(addr.sun_path, sizeof(addr.sun_path) - 1);
  if (connect(fd.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0) {
    return StatusReply{};
  }
  // A daemon that is stopped or wedged must not hang the caller.
  timeval timeout{5, 0};
  setsockopt(fd.Get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  if (!SendMessage(fd.Get(), MsgType::kStatus, 1, getpid(), {})) return std::nullopt;
  // A new session is first told the supervised listeners (kListener): skip to our reply.
  auto reply = ReceiveMessage(fd.Get());
  while (reply && reply->type() != MsgType::kStatusReply) reply = ReceiveMessage(fd.Get());
  if (!reply || reply->type() != MsgType::kStatusReply) {
    fprintf(stderr, "slipstreamd: no status reply from %s%s\n", path.c_str(),
            reply ? "" : " within 5 s");
    return std::nullopt;
  }
  return StatusReply{true, std::string(reply->body.begin(), reply->body.end())};
}

// The human table of --status; nullopt when the reply is unreadable (status_text.h).
std::optional<std::string> FormatStatus(const std::string& dir, const StatusReply& r) {
  if (!r.running) return "slipstreamd is not running (" + SocketPath(dir) + ")\n";
  return StatusText(r.json);
}

// --json: the daemon's object (it carries "schema"), or the same schema's answer for no daemon.
std::string StatusJsonLine(const StatusReply& r) {
  if (!r.running) {
    return "{\"schema\":" + std::to_string(kStatusSchema) + ",\"running\":false}\n";
  }
  return r.json + "\n";
}

int PrintStatus(const std::string& dir, bool json) {
  auto r = FetchStatus(dir);
  if (!r) return 1;
  std::optional<std::string> text = json ? StatusJsonLine(*r) : FormatStatus(dir, *r);
  if (!text) {
    fprintf(stderr, "slipstreamd: unreadable status reply from %s\n", SocketPath(dir).c_str());
    return 1;
  }
  fwrite(text->data(), 1, text->size(), stdout);
  return 0;
}

// --status --watch: a snapshot every second until SIGINT/SIGTERM/SIGHUP, then exit 0. On a
// terminal the screen is cleared and redrawn (like watch(1)); otherwise each snapshot follows a
// "--- TIME" line (JSON: one object per line).
int WatchStatus(const std::string& dir, bool json) {
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGHUP);
  // Blocked, the signals wait while a snapshot is fetched and end the one-second pause below.
  sigprocmask(SIG_BLOCK, &stop, nullptr);
  bool tty = isatty(STDOUT_FILENO) == 1;
  for (;;) {
    auto r = FetchStatus(dir);
    // No answer (FetchStatus said so on stderr): JSON readers get no line for that second.
    std::string body = !r     ? (json ? "" : "slipstreamd: no answer\n")
                       : json ? StatusJsonLine(*r)
                              : FormatStatus(dir, *r).value_or("slipstreamd: unreadable answer\n");
    time_t now = time(nullptr);
    char when[64];
    strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", localtime(&now));
    std::string frame;
    if (tty) {
      frame = "\033[H\033[2J" + std::string("Every 1.0s: slipstreamd --status") +
              (json ? " --json" : "") + "    " + when + "\n\n" + body;
    } else {
      frame = json ? body : "--- " + std::string(when) + "\n" + body;
    }
    fwrite(frame.data(), 1, frame.size(), stdout);
    fflush(stdout);
    timespec second{1, 0};
    int sig = sigtimedwait(&stop, nullptr, &second);
    if (sig > 0) return 0;
  }
}

// Detaches from the caller: returns in the caller once the daemon listens (exit 0), or exits 1.
void Daemonize(const std::string& dir, DaemonOptions* o) {
  int ready[2];
  if (pipe2(ready, O_CLOEXEC) < 0) exit(1);
  pid_t child = fork();
  if (child < 0) exit(1);
  if (child > 0) {
    close(ready[1]);
    char byte;
    ssize_t n = read(ready[0], &byte, 1);
    int status;
    waitpid(child, &status, 0);
    exit(n == 1 ? 0 : 1);
  }
  close(ready[0]);
  setsid();
  if (fork() != 0) _exit(0);  // not a session leader: can never reacquire a terminal
  int null = open("/dev/null", O_RDWR | O_CLOEXEC);
  dup2(null, 0);
  dup2(null, 1);
  int log = open(LogPath(dir).c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  dup2(log >= 0 ? log : null, 2);
  if (chdir("/") < 0) {
  }
  o->ready_fd = ready[1];
}

int Main(int argc, char** argv) {
  int exit_code = 0;
  auto parsed = ParseDaemonOptions(argc, argv, &exit_code);
  if (!parsed) return exit_code;
  DaemonOptions o = *parsed;
  // Started by systemd (slipstreamd.socket): the socket names the runtime directory.
  auto activated = o.status ? Result<std::optional<ActivatedSocket>>(std::nullopt)
                            : TakeActivatedSocket(o.all_users);
  if (!activated) {
    fprintf(stderr, "slipstreamd: socket activation: %s\n", activated.error().ToString().c_str());
    return 1;
  }
  std::string dir;
  if (*activated) {
    dir = (*activated)->dir;
    o.foreground = true;  // systemd supervises the process it started: no detaching
  } else {
    // --status is a client like slipstream-trace: it also asks a system-wide daemon.
    auto runtime = o.status ? RuntimeDir() : DaemonRuntimeDir(o.all_users);
    if (!runtime) {
      fprintf(stderr, "slipstreamd: runtime directory: %s\n", runtime.error().ToString().c_str());
      return 1;
    }
    dir = *runtime;
  }
  if (o.status) return o.watch ? WatchStatus(dir, o.json) : PrintStatus(dir, o.json);
  if (!o.foreground) Daemonize(dir, &o);

  auto logger = spdlog::stderr_logger_st("slipstreamd");
  logger->set_pattern("%Y-%m-%d %H:%M:%S.%e slipstreamd[%P] %l: %v");
  logger->set_level(o.verbose ? spdlog::level::debug : spdlog::level::info);
  if (const char* env = getenv("SLIPSTREAM_LOG")) logger->set_level(spdlog::level::from_str(env));
  spdlog::set_default_logger(logger);

  DaemonConfig config;
  config.dir = dir;
  if (*activated) {
    config.listen_fd = (*activated)->fd.Release();
    spdlog::info("socket activation: listening on {}", SocketPath(dir));
  }
  config.idle_exit = std::chrono::seconds(o.idle_exit);
  config.ready_fd = o.ready_fd;
  config.all_users = o.all_users;
  auto daemon = Daemon::Create(config);
  if (!daemon) {
    if (daemon.error().err == EWOULDBLOCK) {
      spdlog::info("another slipstreamd already serves {}", dir);
      if (o.ready_fd >= 0) (void)!write(o.ready_fd, "1", 1);
      return 0;
    }
    spdlog::error("cannot start: {}", daemon.error().ToString());
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  // Two TCP sockets per live switched connection and one per pending pair: use the hard limit.
  rlimit nofile{};
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0) {
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }
  (*daemon)->Run();
  return 0;
}

}  // namespace
}  // namespace slipstream::matcher

int main(int argc, char** argv) { return slipstream::matcher::Main(argc, argv); }
