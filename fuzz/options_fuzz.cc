// Command lines: slipstream-trace's ParseOptions and slipstreamd's ParseDaemonOptions. CLI11
// reports usage errors with exceptions, which the parsers turn into exit code 2; any exception
// that escapes, or a result that breaks the parsers' contract, is a crash.
//
// Input: byte 0 bit 0 chooses the parser; the rest is argv[1..] separated by NUL bytes.
#include <string>
#include <vector>

#include "matcher/daemon_options.h"
#include "supervisor/options.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > 4096) return 0;
  bool daemon = (data[0] & 1) != 0;
  std::vector<std::string> args{daemon ? "slipstreamd" : "slipstream-trace"};
  std::string current;
  for (size_t i = 1; i < size; ++i) {
    if (data[i] == '\0') {
      args.push_back(current);
      current.clear();
    } else {
      current.push_back(static_cast<char>(data[i]));
    }
  }
  if (size > 1) args.push_back(current);
  if (args.size() > 64) return 0;
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int argc = static_cast<int>(args.size());
  int exit_code = -1;
  if (daemon) {
    auto o = slipstream::matcher::ParseDaemonOptions(argc, argv.data(), &exit_code);
    if (o ? (o->idle_exit < 0 || exit_code != -1) : (exit_code != 0 && exit_code != 2)) abort();
  } else {
    auto o = slipstream::supervisor::ParseOptions(argc, argv.data(), &exit_code);
    if (o ? (o->command.empty() || exit_code != -1) : (exit_code != 0 && exit_code != 2)) abort();
  }
  return 0;
}
