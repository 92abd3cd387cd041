#include "supervisor/options.h"

#include <CLI/CLI.hpp>
#include <cstdio>

#include "matcher/cli_man.h"

namespace slipstream::supervisor {

namespace {

constexpr const char* kDescription =
    "Runs PROGRAM under a seccomp user-notification supervisor that sees its TCP socket calls\n"
    "(and those of every descendant), including static and Go binaries.";

// EXIT STATUS and ENVIRONMENT of --help and of slipstream-trace(1).
const std::vector<matcher::ManEntry> kExitStatus = {
    {"PROGRAM's status",
     "slipstream-trace exits with the exit status of PROGRAM; when PROGRAM was killed by a "
     "signal, slipstream-trace kills itself with the same signal (no core dump)."},
    {"126", "PROGRAM was found but could not be executed, or supervision could not be set up."},
    {"127", "PROGRAM was not found."},
    {"2", "usage error (an unknown option, no PROGRAM), or -o FILE cannot be opened."},
};

const std::vector<matcher::ManEntry> kEnvironment = {
    {"SLIPSTREAM_LOG",
     "log level of slipstream-trace and of the slipstreamd it starts: trace, debug, info, warn "
     "(the default), error or off. -v is the same as debug."},
    {"SLIPSTREAM_RUNTIME_DIR",
     "the runtime directory shared with slipstreamd (its socket, lock, log and listeners.table). "
     "Supervisors pair connections only through one daemon, that is one runtime directory. It "
     "must be this user's and closed to others, or root's and writable by root alone (a "
     "system-wide slipstreamd --all-users, which slipstream-trace never starts itself)."},
    {"XDG_RUNTIME_DIR",
     "when SLIPSTREAM_RUNTIME_DIR is unset: the runtime directory is $XDG_RUNTIME_DIR/slipstream "
     "if XDG_RUNTIME_DIR is writable, else /tmp/slipstream-UID."},
    {"SLIPSTREAMD",
     "the slipstreamd binary to start on demand. Default: slipstreamd beside slipstream-trace "
     "(the installed layout), then ../matcher/slipstreamd (the build tree), then slipstreamd in "
     "PATH."},
    {"SLIPSTREAM_COOKIE, SLIPSTREAM_LISTENER_TABLE, SLIPSTREAM_PRELOAD_STATS",
     "set by slipstream-trace for libslipstream-preload.so in the programs it starts (hybrid "
     "mode); not meant to be set by hand."},
};

}  // namespace

std::optional<Options> ParseOptions(int argc, char** argv, int* exit_code) {
  Options o;
  CLI::App app(
      std::string(kDescription) + "\n\nUsage: slipstream-trace [OPTIONS] [--] PROGRAM [ARGS...]",
      "slipstream-trace");
  matcher::CommandLine command_line(app, kExitStatus, kEnvironment,
                                    "See slipstream-trace(1) for files and kernel requirements.");
  app.add_flag("--trace", o.trace, "print one line per trapped socket call");
  app.add_option("-o,--output", o.output, "write --trace and --stats output to FILE")
      ->type_name("FILE");
  std::string stats_format;
  app.add_flag("--stats", stats_format,
               "print a summary of calls and connections at exit; FORMAT is text (the default) or "
               "json (one object, schema in docs/stats-schema.md)")
      ->type_name("[=FORMAT]");
  app.add_flag("-v,--verbose", o.verbose, "debug logging (same as SLIPSTREAM_LOG=debug)");
  bool no_wait_killable = false;
  app.add_flag("--no-wait-killable", no_wait_killable,
               "do not use SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (Linux 5.19+)");
  app.add_flag("--allow-io-uring", o.allow_io_uring,
               "let io_uring_setup succeed (io_uring I/O bypasses seccomp and Slipstream)");
  bool no_switch = false;
  app.add_flag("--no-switch", no_switch,
               "observe only: never switch connections to Unix sockets (no slipstreamd)");
  bool no_preload = false;
  app.add_flag("--no-preload", no_preload,
               "do not load libslipstream-preload.so into dynamically linked programs (every "
               "socket call then goes through the supervisor)");
  app.prefix_command();  // everything from PROGRAM on belongs to PROGRAM
  if (!command_line.Parse(argc, argv, exit_code)) return std::nullopt;
  if (stats_format == "true" || stats_format == "text") {
    o.stats = true;
  } else if (stats_format == "json") {
    o.stats = o.stats_json = true;
  } else if (!stats_format.empty()) {
    command_line.UsageError("--stats=" + stats_format + ": FORMAT is text or json", exit_code);
    return std::nullopt;
  }
  o.command = app.remaining();
  if (!o.command.empty() && o.command.front() == "--") {
    o.command.erase(o.command.begin());
  } else if (!o.command.empty() && o.command.front().size() > 1 && o.command.front()[0] == '-') {
    command_line.UsageError("unknown option " + o.command.front(), exit_code);
    return std::nullopt;
  }
  if (o.command.empty()) {
    command_line.UsageError("no PROGRAM given", exit_code);
    return std::nullopt;
  }
  o.wait_killable = !no_wait_killable;
  o.switching = !no_switch;
  o.preload = !no_preload;
  return o;
}

}  // namespace slipstream::supervisor
