// Hybrid mode set-up in slipstream-trace (docs/design.md, "Hybrid mode"): the run's cookie, where
// libslipstream-preload.so is, the program's environment that loads it, and the run's counters.
#ifndef SLIPSTREAM_SUPERVISOR_PRELOAD_H_
#define SLIPSTREAM_SUPERVISOR_PRELOAD_H_

#include <cstdint>
#include <string>
#include <vector>

#include "base/result.h"
#include "preload-fallback/preload_abi.h"
#include "supervisor/stats.h"

namespace slipstream::supervisor {

// A random non-zero 64-bit value (getrandom); 0 if the kernel gives none.
uint64_t NewCookie();

// libslipstream-preload.so next to slipstream-trace's own executable, in ../lib/slipstream
// (installed) or ../preload-fallback (build tree); empty if none is found. A path the loader
// cannot take in LD_PRELOAD (a space or colon in it) counts as none.
std::string FindPreloadLibrary();

struct PreloadEnv {
  std::string library;
  uint64_t cookie = 0;
  std::string table;  // empty: nothing is switched (--no-switch), every connect may run in-process
  std::string stats;  // empty: no counters
};

// `environ` with `library` last in LD_PRELOAD (after a user's libraries, which may interpose the
// same calls and must see them first) and the
// variables the library reads; any of them already there (a nested run) is replaced.
std::vector<std::string> PreloadEnvironment(char** environ, const PreloadEnv& p);

// The run's counters: a 0600 file in the runtime directory that the library maps, removed again
// when this object goes.
class PreloadCounters {
 public:
  [[nodiscard]] static Result<PreloadCounters> Create(const std::string& dir);
  PreloadCounters(PreloadCounters&& other) noexcept;
  PreloadCounters& operator=(PreloadCounters&&) = delete;
  ~PreloadCounters();

  const std::string& path() const { return path_; }
  // --trace: the library records each call it serves in-process.
  void EnableTrace() { __atomic_store_n(&stats_->trace, 1u, __ATOMIC_RELEASE); }
  // Those records as --trace lines, each starting with "preload: " (they are not in the
  // supervisor's own order), and a line for records the ring had no room for.
  std::string TraceLines() const;
  // "slipstream-trace: served in-process by ...: ..." lines for --stats/--trace.
  std::string Format() const;
  // The same counts, for --stats=json.
  PreloadTotals Totals() const;

 private:
  PreloadCounters(std::string path, slipstream_preload_stats* stats)
      : path_(std::move(path)), stats_(stats) {}
  std::string path_;
  slipstream_preload_stats* stats_;
};

}  // namespace slipstream::supervisor

#endif  // SLIPSTREAM_SUPERVISOR_PRELOAD_H_
