#include "supervisor/options.h"

#include <CLI/CLI.hpp>
#include <cstdio>

namespace slipstream::supervisor {

namespace {

constexpr const char* kDescription =
    "Runs PROGRAM under a seccomp user-notification supervisor that sees its TCP socket calls\n"
    "(and those of every descendant), including static and Go binaries.";

constexpr const char* kFooter =
    "Environment:\n"
    "  SLIPSTREAM_LOG=trace|debug|info|warn|error|off   log level (default: warn)\n"
    "\n"
    "Exit status: that of PROGRAM (a death by signal is reproduced); 126/127 when PROGRAM\n"
    "cannot be executed or found; 2 for a usage error.";

}  // namespace

std::optional<Options> ParseOptions(int argc, char** argv, int* exit_code) {
  Options o;
  CLI::App app(
      std::string(kDescription) + "\n\nUsage: slipstream-trace [OPTIONS] [--] PROGRAM [ARGS...]",
      "slipstream-trace");
  app.footer(kFooter);
  app.set_version_flag("--version", std::string("slipstream-trace ") + SLIPSTREAM_VERSION);
  app.add_flag("--trace", o.trace, "print one line per trapped socket call");
  app.add_option("-o,--output", o.output, "write --trace and --stats output to FILE")
      ->type_name("FILE");
  app.add_flag("--stats", o.stats, "print a summary of calls and connections at exit");
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
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    *exit_code = app.exit(e);
    return std::nullopt;
  } catch (const CLI::CallForVersion& e) {
    *exit_code = app.exit(e);
    return std::nullopt;
  } catch (const CLI::ParseError& e) {
    fprintf(stderr, "slipstream-trace: %s\nTry 'slipstream-trace --help'.\n", e.what());
    *exit_code = 2;
    return std::nullopt;
  }
  o.command = app.remaining();
  if (!o.command.empty() && o.command.front() == "--") {
    o.command.erase(o.command.begin());
  } else if (!o.command.empty() && o.command.front().size() > 1 && o.command.front()[0] == '-') {
    fprintf(stderr, "slipstream-trace: unknown option %s\nTry 'slipstream-trace --help'.\n",
            o.command.front().c_str());
    *exit_code = 2;
    return std::nullopt;
  }
  if (o.command.empty()) {
    fprintf(stderr, "slipstream-trace: no PROGRAM given\nTry 'slipstream-trace --help'.\n");
    *exit_code = 2;
    return std::nullopt;
  }
  o.wait_killable = !no_wait_killable;
  o.switching = !no_switch;
  o.preload = !no_preload;
  return o;
}

}  // namespace slipstream::supervisor
