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
  if (unanswered != 0) {  // never seen: worth a line of its own (PendingCall::Finish)
    snprintf(line, sizeof(line), "  %-14s %10llu  (answers the kernel refused: see the log)\n",
             "unanswered", static_cast<unsigned long long>(unanswered));
    out += line;
  }
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

namespace {

// Call names are fixed identifiers (tracer/calls.h): no escaping needed.
std::string CallsObject(const std::array<uint64_t, tracer::kCallCount>& calls) {
  std::string out = "{";
  for (int i = 0; i < tracer::kCallCount; ++i) {
    if (i > 0) out += ",";
    out += "\"" + std::string(tracer::CallName(static_cast<tracer::Call>(i))) +
           "\":" + std::to_string(calls[i]);
  }
  return out + "}";
}

std::string Field(const char* name, uint64_t value) {
  return "\"" + std::string(name) + "\":" + std::to_string(value);
}

}  // namespace

std::string FormatJson(const Stats& s, const PreloadTotals* preload) {
  uint64_t total = 0;
  for (uint64_t n : s.calls) total += n;
  std::string out =
      "{\"schema\":" + std::to_string(kStatsSchema) + ",\"calls\":" + CallsObject(s.calls) + "," +
      Field("calls_total", total) + "," + Field("kernel", s.continued) + "," +
      Field("emulated", s.emulated) + "," + Field("interrupted", s.interrupted) + "," +
      Field("unanswered", s.unanswered) + "," + Field("held", s.held) + ",\"connections\":{" +
      Field("seen", s.connections_seen()) + "," + Field("connect", s.connects) + "," +
      Field("accept", s.accepts) + "," + Field("switched", s.switched) + "," +
      Field("relayed", s.relayed) + "," + Field("left_on_tcp", s.left_on_tcp) + "},\"preload\":";
  if (preload == nullptr) {
    out += "null";
  } else {
    out += "{\"in_process\":" + CallsObject(preload->in_process) +
           ",\"to_supervisor\":" + CallsObject(preload->to_supervisor) + "," +
           Field("tcp_connects", preload->tcp_connects) + "," +
           Field("tcp_accepts", preload->tcp_accepts) + "," + Field("claims", preload->claims) +
           "," + Field("claims_switched", preload->claims_switched) + "}";
  }
  return out + "}\n";
}

}  // namespace slipstream::supervisor
