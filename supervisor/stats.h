// Stats: counters behind --stats, printed when slipstream-trace exits.
#ifndef SLIPSTREAM_SUPERVISOR_STATS_H_
#define SLIPSTREAM_SUPERVISOR_STATS_H_

#include <array>
#include <cstdint>
#include <string>

#include "tracer/calls.h"

namespace slipstream::supervisor {

struct Stats {
  std::array<uint64_t, tracer::kCallCount> calls{};  // trapped calls by kind
  uint64_t continued = 0;    // answered with FLAG_CONTINUE (the kernel ran the call)
  uint64_t emulated = 0;     // run by the supervisor on a copy of the target's fd
  uint64_t interrupted = 0;  // the target left the call (signal, exit) before the answer
  // The kernel refused the answer for another reason than the target leaving (a defect of ours:
  // never seen; logged as an error).
  uint64_t unanswered = 0;
  uint64_t held = 0;  // completed asynchronously (blocking accept/connect)

  // Connections: every connect() to an IP address (attempted) and every accepted connection.
  uint64_t connects = 0;
  uint64_t accepts = 0;
  uint64_t switched = 0;     // moved to an AF_UNIX socketpair
  uint64_t relayed = 0;      // switched client whose peer end was never claimed: relayed to TCP
  uint64_t left_on_tcp = 0;  // seen, not switched

  uint64_t connections_seen() const { return connects + accepts; }
  std::string Format() const;
};

// What libslipstream-preload.so counted in the programs (hybrid mode), read at exit.
struct PreloadTotals {
  std::array<uint64_t, tracer::kCallCount> in_process{};     // served with the cookie
  std::array<uint64_t, tracer::kCallCount> to_supervisor{};  // interposed, then trapped
  uint64_t tcp_connects = 0;                                 // connects left on TCP in-process
  uint64_t tcp_accepts = 0;  // accepts of TCP connections in-process, no claim
  uint64_t claims = 0;       // accepts offered to the supervisor
  uint64_t claims_switched = 0;
};

// --stats=json: one line holding one JSON object, schema version kStatsSchema
// (docs/stats-schema.md; a field's meaning never changes within a version, fields may be added).
// `preload` is null when no program was preloaded.
constexpr int kStatsSchema = 1;
std::string FormatJson(const Stats& stats, const PreloadTotals* preload);

}  // namespace slipstream::supervisor

#endif  // SLIPSTREAM_SUPERVISOR_STATS_H_
