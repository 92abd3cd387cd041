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

#include <cstdio>

#include "matcher/daemon.h"
#include "matcher/daemon_options.h"
#include "matcher/paths.h"
#include "matcher/protocol.h"
#include "matcher/status_text.h"

namespace slipstream::matcher {
namespace {

int PrintStatus(const std::string& dir, bool json) {
  UniqueFd fd(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::string path = SocketPath(dir);
  path.copy(addr.sun_path, sizeof(addr.sun_path) - 1);
  if (connect(fd.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0) {
    if (json) {
      printf("{\"running\":false}\n");
      return 0;
    }
    printf("slipstreamd is not running (%s)\n", path.c_str());
    return 0;
  }
  // A daemon that is stopped or wedged must not hang the caller.
  timeval timeout{5, 0};
  setsockopt(fd.Get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  if (!SendMessage(fd.Get(), MsgType::kStatus, 1, getpid(), {})) return 1;
  // A new session is first told the supervised listeners (kListener): skip to our reply.
  auto reply = ReceiveMessage(fd.Get());
  while (reply && reply->type() != MsgType::kStatusReply) reply = ReceiveMessage(fd.Get());
  if (!reply || reply->type() != MsgType::kStatusReply) {
    fprintf(stderr, "slipstreamd: no status reply from %s%s\n", path.c_str(),
            reply ? "" : " within 5 s");
    return 1;
  }
  std::string text(reply->body.begin(), reply->body.end());
  if (json) {
    printf("%s\n", text.c_str());
    return 0;
  }
  auto status = StatusText(text);
  if (!status) {
    fprintf(stderr, "slipstreamd: unreadable status reply from %s\n", path.c_str());
    return 1;
  }
  fputs(status->c_str(), stdout);
  return 0;
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
  auto dir = RuntimeDir();
  if (!dir) {
    fprintf(stderr, "slipstreamd: runtime directory: %s\n", dir.error().ToString().c_str());
    return 1;
  }
  if (o.status) return PrintStatus(*dir, o.json);
  if (!o.foreground) Daemonize(*dir, &o);

  auto logger = spdlog::stderr_logger_st("slipstreamd");
  logger->set_pattern("%Y-%m-%d %H:%M:%S.%e slipstreamd[%P] %l: %v");
  logger->set_level(o.verbose ? spdlog::level::debug : spdlog::level::info);
  if (const char* env = getenv("SLIPSTREAM_LOG")) logger->set_level(spdlog::level::from_str(env));
  spdlog::set_default_logger(logger);

  DaemonConfig config;
  config.dir = *dir;
  config.idle_exit = std::chrono::seconds(o.idle_exit);
  config.ready_fd = o.ready_fd;
  auto daemon = Daemon::Create(config);
  if (!daemon) {
    if (daemon.error().err == EWOULDBLOCK) {
      spdlog::info("another slipstreamd already serves {}", *dir);
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
