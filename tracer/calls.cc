#include "tracer/calls.h"

#include <sys/syscall.h>

#include <array>

namespace slipstream::tracer {
namespace {

struct CallInfo {
  Call call;
  int nr;
  const char* name;
};

constexpr std::array<CallInfo, kCallCount> kCalls = {{
    {Call::kSocket, SYS_socket, "socket"},
    {Call::kConnect, SYS_connect, "connect"},
    {Call::kAccept, SYS_accept, "accept"},
    {Call::kAccept4, SYS_accept4, "accept4"},
    {Call::kBind, SYS_bind, "bind"},
    {Call::kListen, SYS_listen, "listen"},
    {Call::kGetsockname, SYS_getsockname, "getsockname"},
    {Call::kGetpeername, SYS_getpeername, "getpeername"},
    {Call::kGetsockopt, SYS_getsockopt, "getsockopt"},
    {Call::kSetsockopt, SYS_setsockopt, "setsockopt"},
    {Call::kShutdown, SYS_shutdown, "shutdown"},
    {Call::kSendto, SYS_sendto, "sendto"},
    {Call::kRecvfrom, SYS_recvfrom, "recvfrom"},
    {Call::kSendmsg, SYS_sendmsg, "sendmsg"},
    {Call::kRecvmsg, SYS_recvmsg, "recvmsg"},
    {Call::kSendmmsg, SYS_sendmmsg, "sendmmsg"},
    {Call::kRecvmmsg, SYS_recvmmsg, "recvmmsg"},
}};

}  // namespace

std::optional<Call> CallFromNr(int nr) {
  for (const auto& info : kCalls) {
    if (info.nr == nr) return info.call;
  }
  return std::nullopt;
}

int NrOf(Call call) { return kCalls[static_cast<size_t>(call)].nr; }
const char* CallName(Call call) { return kCalls[static_cast<size_t>(call)].name; }

}  // namespace slipstream::tracer
