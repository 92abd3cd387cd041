#include "supervisor/stats.h"

#include <cstdio>

namespace slipstream::supervisor {

std::string Stats::Format() const {
  std::string out = "slipstream-trace: socket calls seen\n";
  char line[128];
  uint64_t total = 0;
  for (int i = 0; i < tracer::kCallCount; ++i) {
    if (calls[i] == 0) continue;
    total += calls[i];
    snprintf(line, sizeof(line), "  %-14s %10llu\n", tracer::CallName(static_cast<tracer::Call>(i)),
             static_cast<unsigned long long>(calls[i]));
    out += line;
  }
  snprintf(line, sizeof(line), "  %-14s %10llu  (kernel %llu, emulated %llu, interrupted %llu)\n",
           "total", static_cast<unsigned long long>(total),
           static_cast<unsigned long long>(continued), static_cast<unsigned long long>(emulated),
           static_cast<unsigned long long>(interrupted));
  out += line;
  snprintf(line, sizeof(line),
           "slipstream-trace: connections seen %llu (connect %llu, accept %llu): switched %llu, "
           "relayed %llu, left on TCP %llu\n",
           static_cast<unsigned long long>(connections_seen()),
           static_cast<unsigned long long>(connects), static_cast<unsigned long long>(accepts),
           static_cast<unsigned long long>(switched), static_cast<unsigned long long>(relayed),
           static_cast<unsigned long long>(left_on_tcp));
  out += line;
  return out;
}

}  // namespace slipstream::supervisor
