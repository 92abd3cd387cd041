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
  uint64_t held = 0;         // completed asynchronously (blocking accept/connect)

  // Connections: every connect() to an IP address (attempted) and every accepted connection.
  uint64_t connects = 0;
  uint64_t accepts = 0;
  uint64_t switched = 0;     // moved to an AF_UNIX socketpair
  uint64_t relayed = 0;      // switched client whose peer end was never claimed: relayed to TCP
  uint64_t left_on_tcp = 0;  // seen, not switched

  uint64_t connections_seen() const { return connects + accepts; }
  std::string Format() const;
};

}  // namespace slipstream::supervisor

#endif  // SLIPSTREAM_SUPERVISOR_STATS_H_
