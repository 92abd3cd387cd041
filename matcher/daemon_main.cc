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
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>

#include "matcher/daemon.h"
#include "matcher/paths.h"
#include "matcher/protocol.h"

namespace slipstream::matcher {
namespace {

struct Options {
  bool foreground = false;
  bool status = false;
  bool json = false;
  bool verbose = false;
  int idle_exit = 30;
  int ready_fd = -1;
};

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
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) return 1;
  printf(
      "slipstreamd pid %d, %zu supervisor(s), %zu listener(s), %llu switched connection(s), "
      "%d pending, %llu paired, %llu relayed since start\n",
      j["pid"].get<int>(), j["supervisors"].size(), j.value("listeners_total", size_t{0}),
      static_cast<unsigned long long>(j["connections_total"].get<uint64_t>()),
      j["pending"].get<int>(), static_cast<unsigned long long>(j["pairs_total"].get<uint64_t>()),
      static_cast<unsigned long long>(j["relays_total"].get<uint64_t>()));
  if (!j["connections"].empty()) {
    // NAMESPACES: the SO_NETNS_COOKIE of the client's and the server's network namespace.
    printf("%-8s %-28s %-8s %-28s %-16s %-12s %s\n", "CLIENT", "CLIENT ADDRESS", "SERVER",
           "SERVER ADDRESS", "UNIX INODES", "NAMESPACES", "PAIRED BY");
    for (const auto& c : j["connections"]) {
      std::string inodes = std::to_string(c["client_unix_inode"].get<uint64_t>()) + "<->" +
                           std::to_string(c["server_unix_inode"].get<uint64_t>());
      std::string namespaces = std::to_string(c.value("client_netns", uint64_t{0})) + "->" +
                               std::to_string(c.value("server_netns", uint64_t{0}));
      printf("%-8d %-28s %-8d %-28s %-16s %-12s %s\n", c["client_pid"].get<int>(),
             c["client"].get<std::string>().c_str(), c["server_pid"].get<int>(),
             c["server"].get<std::string>().c_str(), inodes.c_str(), namespaces.c_str(),
             c.value("evidence", std::string()) == "tcp-sequence-numbers" ? "tcp seq" : "4-tuple");
    }
    if (j["connections"].size() < j["connections_total"].get<size_t>()) {
      printf("(%zu of %llu listed)\n", j["connections"].size(),
             static_cast<unsigned long long>(j["connections_total"].get<uint64_t>()));
    }
  }
  return 0;
}

// Detaches from the caller: returns in the caller once the daemon listens (exit 0), or exits 1.
void Daemonize(const std::string& dir, Options* o) {
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
  Options o;
  CLI::App app("slipstreamd: the Slipstream matcher. slipstream-trace starts it on demand.",
               "slipstreamd");
  app.set_version_flag("--version", std::string("slipstreamd ") + SLIPSTREAM_VERSION);
  app.add_flag("--foreground", o.foreground, "stay in the foreground and log to stderr");
  app.add_flag("--status", o.status, "print the running daemon's switched connections and exit");
  app.add_flag("--json", o.json, "with --status: print JSON");
  app.add_option("--idle-exit", o.idle_exit, "leave after SECONDS without supervisors (30)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--ready-fd", o.ready_fd, "write a byte to FD once listening (internal)");
  app.add_flag("-v,--verbose", o.verbose, "debug logging");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    fprintf(stderr, "slipstreamd: %s\nTry 'slipstreamd --help'.\n", e.what());
    return 2;
  }
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
