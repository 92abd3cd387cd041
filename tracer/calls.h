// The socket calls Slipstream traps, and their names.
#ifndef SLIPSTREAM_TRACER_CALLS_H_
#define SLIPSTREAM_TRACER_CALLS_H_

#include <cstdint>
#include <optional>

namespace slipstream::tracer {

enum class Call : uint8_t {
  kSocket,
  kConnect,
  kAccept,
  kAccept4,
  kBind,
  kListen,
  kGetsockname,
  kGetpeername,
  kGetsockopt,
  kSetsockopt,
  kShutdown,
  // Data-path calls, trapped only in their rare forms (tracer/filter.cc: a flag bit, an address).
  kSendto,
  kRecvfrom,
  kSendmsg,
  kRecvmsg,
  kSendmmsg,
  kRecvmmsg,
};
inline constexpr int kCallCount = static_cast<int>(Call::kRecvmmsg) + 1;  // the last one

// Native syscall number <-> Call. Syscalls of other ABIs (i386, x32) are never trapped.
std::optional<Call> CallFromNr(int nr);
int NrOf(Call call);
const char* CallName(Call call);

}  // namespace slipstream::tracer

#endif  // SLIPSTREAM_TRACER_CALLS_H_
