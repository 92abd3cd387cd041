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

#include <csignal>
#include <cstdio>
#include <ctime>
#include <optional>
#include <vector>

#include "matcher/cli_man.h"
#include "matcher/daemon.h"
#include "matcher/paths.h"
#include "matcher/protocol.h"
#include "matcher/socket_activation.h"
#include "slipstream_version.h"

namespace slipstream::matcher {
namespace {

struct Options {
  bool foreground = false;
  bool status = false;
  bool json = false;
  bool watch = false;
  bool verbose = false;
  int idle_exit = 30;
  int ready_fd = -1;
};

// EXIT STATUS and ENVIRONMENT of --help and of slipstreamd(8).
const std::vector<ManEntry> kExitStatus = {
    {"0",
     "the daemon stopped on SIGTERM, SIGINT or SIGHUP or after --idle-exit seconds without "
     "supervisors, or found another slipstreamd serving its runtime directory; --status printed "
     "(also when no daemon runs); --status --watch was ended by Ctrl-C (SIGINT) or SIGTERM."},
    {"1",
     "the daemon could not start (runtime directory, lock, socket, a socket passed by systemd "
     "that is not a listening SOCK_SEQPACKET socket named matcher.sock), or --status got no "
     "answer within 5 s."},
    {"2", "usage error."},
};

const std::vector<ManEntry> kEnvironment = {
    {"SLIPSTREAM_RUNTIME_DIR",
     "the runtime directory (socket, lock, log, listeners.table); it must be a directory of "
     "this user with mode 0700 (created so when missing)."},
    {"XDG_RUNTIME_DIR",
     "when SLIPSTREAM_RUNTIME_DIR is unset: the runtime directory is $XDG_RUNTIME_DIR/slipstream "
     "if XDG_RUNTIME_DIR is writable, else /tmp/slipstream-UID."},
    {"SLIPSTREAM_LOG",
     "log level: trace, debug, info (the default of the daemon), warn, error or off; -v is "
     "debug."},
    {"LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES",
     "socket activation (sd_listen_fds(3)): when LISTEN_PID is slipstreamd's pid, the listening "
     "socket is fd 3 (LISTEN_FDS must be 1) and the runtime directory is the directory it is "
     "bound in; slipstreamd then stays in the foreground. Set by systemd (slipstreamd.socket)."},
};

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

// The human table of --status.
std::string FormatStatus(const std::string& dir, const StatusReply& r) {
  if (!r.running) return "slipstreamd is not running (" + SocketPath(dir) + ")\n";
  auto j = nlohmann::json::parse(r.json, nullptr, false);
  if (j.is_discarded()) return "slipstreamd: unreadable status reply\n";
  std::string out;
  char line[512];
  snprintf(line, sizeof(line),
           "slipstreamd pid %d, %zu supervisor(s), %zu listener(s), %llu switched connection(s), "
           "%d pending, %llu paired, %llu relayed since start\n",
           j["pid"].get<int>(), j["supervisors"].size(), j.value("listeners_total", size_t{0}),
           static_cast<unsigned long long>(j["connections_total"].get<uint64_t>()),
           j["pending"].get<int>(),
           static_cast<unsigned long long>(j["pairs_total"].get<uint64_t>()),
           static_cast<unsigned long long>(j["relays_total"].get<uint64_t>()));
  out += line;
  if (!j["connections"].empty()) {
    // NAMESPACES: the SO_NETNS_COOKIE of the client's and the server's network namespace.
    snprintf(line, sizeof(line), "%-8s %-28s %-8s %-28s %-16s %-12s %s\n", "CLIENT",
             "CLIENT ADDRESS", "SERVER", "SERVER ADDRESS", "UNIX INODES", "NAMESPACES",
             "PAIRED BY");
    out += line;
    for (const auto& c : j["connections"]) {
      std::string inodes = std::to_string(c["client_unix_inode"].get<uint64_t>()) + "<->" +
                           std::to_string(c["server_unix_inode"].get<uint64_t>());
      std::string namespaces = std::to_string(c.value("client_netns", uint64_t{0})) + "->" +
                               std::to_string(c.value("server_netns", uint64_t{0}));
      snprintf(
          line, sizeof(line), "%-8d %-28s %-8d %-28s %-16s %-12s %s\n", c["client_pid"].get<int>(),
          c["client"].get<std::string>().c_str(), c["server_pid"].get<int>(),
          c["server"].get<std::string>().c_str(), inodes.c_str(), namespaces.c_str(),
          c.value("evidence", std::string()) == "tcp-sequence-numbers" ? "tcp seq" : "4-tuple");
      out += line;
    }
    if (j["connections"].size() < j["connections_total"].get<size_t>()) {
      snprintf(line, sizeof(line), "(%zu of %llu listed)\n", j["connections"].size(),
               static_cast<unsigned long long>(j["connections_total"].get<uint64_t>()));
      out += line;
    }
  }
  return out;
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
  std::string text = json ? StatusJsonLine(*r) : FormatStatus(dir, *r);
  fwrite(text.data(), 1, text.size(), stdout);
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
                              : FormatStatus(dir, *r);
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
  app.footer(HelpEntries("Exit status", kExitStatus) + "\n" +
             HelpEntries("Environment", kEnvironment) +
             "\nSee slipstreamd(8) for files, systemd units and kernel requirements.");
  app.set_version_flag("--version", std::string("slipstreamd ") + SLIPSTREAM_VERSION + " (commit " +
                                        SLIPSTREAM_COMMIT + ")");
  bool help_man = false;
  app.add_flag("--help-man", help_man, "print the generated man page sections (build)")->group("");
  app.add_flag("--foreground", o.foreground, "stay in the foreground and log to stderr");
  app.add_flag("--status", o.status, "print the running daemon's switched connections and exit");
  app.add_flag("--json", o.json,
               "with --status: print one JSON object (schema in docs/stats-schema.md)");
  app.add_flag("--watch", o.watch,
               "with --status: print the status every second (redrawn on a terminal) until "
               "Ctrl-C");
  app.add_option("--idle-exit", o.idle_exit, "leave after SECONDS without supervisors (30)")
      ->check(CLI::NonNegativeNumber)
      ->type_name("SECONDS");
  app.add_option("--ready-fd", o.ready_fd,
                 "write a byte to FD once listening (used by slipstream-trace)")
      ->type_name("FD");
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
  if (help_man) {
    std::string roff = RoffOptions(app) + RoffEntries("EXIT STATUS", kExitStatus, false) +
                       RoffEntries("ENVIRONMENT", kEnvironment, true);
    fwrite(roff.data(), 1, roff.size(), stdout);
    return 0;
  }
  if ((o.json || o.watch) && !o.status) {
    fprintf(stderr,
            "slipstreamd: --json and --watch go with --status\nTry 'slipstreamd --help'.\n");
    return 2;
  }
  // Started by systemd (slipstreamd.socket): the socket names the runtime directory.
  auto activated =
      o.status ? Result<std::optional<ActivatedSocket>>(std::nullopt) : TakeActivatedSocket();
  if (!activated) {
    fprintf(stderr, "slipstreamd: socket activation: %s\n", activated.error().ToString().c_str());
    return 1;
  }
  std::string dir;
  if (*activated) {
    dir = (*activated)->dir;
    o.foreground = true;  // systemd supervises the process it started: no detaching
  } else {
    auto runtime = RuntimeDir();
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
