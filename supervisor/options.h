// Command line of slipstream-trace.
#ifndef SLIPSTREAM_SUPERVISOR_OPTIONS_H_
#define SLIPSTREAM_SUPERVISOR_OPTIONS_H_

#include <optional>
#include <string>
#include <vector>

namespace slipstream::supervisor {

struct Options {
  bool trace = false;
  std::string output;       // -o FILE; empty: stderr
  bool stats = false;       // --stats or --stats=FORMAT
  bool stats_json = false;  // --stats=json: one JSON object (docs/stats-schema.md)
  bool verbose = false;
  bool wait_killable = true;  // --no-wait-killable turns it off
  bool allow_io_uring = false;
  bool switching = true;  // --no-switch: observe only
  bool preload = true;    // --no-preload: no libslipstream-preload.so, every call is trapped
  std::vector<std::string> command;
};

// Parses argv. On --help/--version/--help-man prints and returns exit code 0 in `exit_code`; on a
// usage error prints a message and returns 2. Otherwise returns the options.
std::optional<Options> ParseOptions(int argc, char** argv, int* exit_code);

}  // namespace slipstream::supervisor

#endif  // SLIPSTREAM_SUPERVISOR_OPTIONS_H_
