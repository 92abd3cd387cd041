#include "matcher/daemon_options.h"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "matcher/cli_man.h"

namespace slipstream::matcher {
namespace {

// EXIT STATUS and ENVIRONMENT of --help and of slipstreamd(8).
const std::vector<ManEntry> kExitStatus = {
    {"0",
     "the daemon stopped on SIGTERM, SIGINT or SIGHUP or after --idle-exit seconds without "
     "supervisors, or found another slipstreamd serving its runtime directory; --status printed "
     "(also when no daemon runs); --status --watch was ended by Ctrl-C (SIGINT) or SIGTERM."},
    {"1",
     "the daemon could not start (runtime directory, lock, socket, a socket passed by systemd "
     "that is not a listening SOCK_SEQPACKET socket named matcher.sock), or --status got no "
     "answer within 5 s, or an unreadable one."},
    {"2", "usage error."},
};

const std::vector<ManEntry> kEnvironment = {
    {"SLIPSTREAM_RUNTIME_DIR",
     "the runtime directory (socket, lock, log, listeners.table); it must be a directory of "
     "this user with mode 0700 (created so when missing), or, with --all-users, one writable by "
     "this user alone (created 0755)."},
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

}  // namespace

std::optional<DaemonOptions> ParseDaemonOptions(int argc, char** argv, int* exit_code) {
  DaemonOptions o;
  CLI::App app("slipstreamd: the Slipstream matcher. slipstream-trace starts it on demand.",
               "slipstreamd");
  CommandLine command_line(app, kExitStatus, kEnvironment,
                           "See slipstreamd(8) for files, systemd units and kernel requirements.");
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
  app.add_flag("--all-users", o.all_users,
               "serve the supervisors of every user, not only this user's (a system-wide daemon, "
               "run as root): the runtime directory is then 0755, matcher.sock 0666 and "
               "listeners.table 0644");
  app.add_flag("-v,--verbose", o.verbose, "debug logging");
  if (!command_line.Parse(argc, argv, exit_code)) return std::nullopt;
  if ((o.json || o.watch) && !o.status) {
    command_line.UsageError("--json and --watch go with --status", exit_code);
    return std::nullopt;
  }
  return o;
}

}  // namespace slipstream::matcher
