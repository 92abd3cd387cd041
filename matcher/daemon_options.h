// Command line of slipstreamd.
#ifndef SLIPSTREAM_MATCHER_DAEMON_OPTIONS_H_
#define SLIPSTREAM_MATCHER_DAEMON_OPTIONS_H_

#include <optional>

namespace slipstream::matcher {

struct DaemonOptions {
  bool foreground = false;
  bool status = false;
  bool json = false;
  bool watch = false;
  bool verbose = false;
  bool all_users = false;  // serve the supervisors of every user (docs/design.md)
  int idle_exit = 30;
  int ready_fd = -1;
};

// Parses argv. On --help, --version or --help-man (the man page's generated sections) prints and
// sets `exit_code` 0; on a usage error prints a message and sets it to 2; both return nullopt.
std::optional<DaemonOptions> ParseDaemonOptions(int argc, char** argv, int* exit_code);

}  // namespace slipstream::matcher

#endif  // SLIPSTREAM_MATCHER_DAEMON_OPTIONS_H_
