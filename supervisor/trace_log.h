// TraceLog: one strace-like line per trapped socket call (--trace), to stderr or a file (-o).
//
//   12:00:01.123456 [4242] connect(3, 127.0.0.1:8080) = 0
//   12:00:01.123470 [4242] socket(AF_INET, SOCK_STREAM|SOCK_CLOEXEC, 0) = ? (kernel)
//   12:00:01.123502 [4243] accept4(3, SOCK_CLOEXEC) = 5 (peer 127.0.0.1:51234)
//   12:00:01.123519 [4242] connect(4, 127.0.0.1:9) = -1 ECONNREFUSED
//
// "= ? (kernel)" marks a call the supervisor let the kernel execute (FLAG_CONTINUE): the result is
// the kernel's and the supervisor does not see it.
#ifndef SLIPSTREAM_SUPERVISOR_TRACE_LOG_H_
#define SLIPSTREAM_SUPERVISOR_TRACE_LOG_H_

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

#include "tracer/calls.h"

namespace slipstream::supervisor {

struct TraceRecord {
  enum class Outcome { kKernel, kValue, kError, kAbandoned };
  std::chrono::system_clock::time_point when;
  tracer::Call call = tracer::Call::kSocket;
  pid_t tid = 0;
  std::string args;
  Outcome outcome = Outcome::kKernel;
  int64_t value = 0;
  int err = 0;
  std::string note;  // e.g. "peer 127.0.0.1:51234", "switched to unix (...)"
};

class TraceLog {
 public:
  // Borrows `out` (stderr or an opened -o file); nullptr disables tracing.
  explicit TraceLog(FILE* out) : out_(out) {}
  bool enabled() const { return out_ != nullptr; }
  void Write(const TraceRecord& record);
  static std::string Format(const TraceRecord& record);

 private:
  FILE* out_;
};

// Helpers for argument text.
std::string SocketTypeText(int type);
std::string AcceptFlagsText(int flags);
std::string SockoptText(int level, int name);
std::string ShutdownHowText(int how);

}  // namespace slipstream::supervisor

#endif  // SLIPSTREAM_SUPERVISOR_TRACE_LOG_H_
