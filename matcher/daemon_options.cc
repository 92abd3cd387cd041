#include "matcher/daemon_options.h"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

namespace slipstream::matcher {

std::optional<DaemonOptions> ParseDaemonOptions(int argc, char** argv, int* exit_code) {
  DaemonOptions o;
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
    *exit_code = app.exit(e);
    return std::nullopt;
  } catch (const CLI::CallForVersion& e) {
    *exit_code = app.exit(e);
    return std::nullopt;
  } catch (const CLI::ParseError& e) {
    fprintf(stderr, "slipstreamd: %s\nTry 'slipstreamd --help'.\n", e.what());
    *exit_code = 2;
    return std::nullopt;
  }
  return o;
}

}  // namespace slipstream::matcher
