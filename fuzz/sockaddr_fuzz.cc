// Socket addresses copied from a program's memory: SockAddr and everything that reads one
// (Canonical, KernelDestination, ListenerCanReceive, ConnKey ordering), CopySockAddrIn with any
// length (it reads our own memory as a tracee's: process_vm_readv on ourselves), and
// SockAddr::Parse of text.
//
// Input: byte 0: the length of the first address (the rest, if any, is the second address and the
// text to parse).
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "base/sockaddr.h"
#include "matcher/endpoint.h"
#include "matcher/policy.h"
#include "tracer/target.h"

namespace slipstream {
namespace {

void Exercise(const SockAddr& a) {
  if (a.len() > sizeof(sockaddr_storage)) abort();
  (void)a.family();
  bool inet = a.IsInet();
  uint16_t port = a.port();
  if (!inet && port != 0) abort();
  (void)a.MappedV4();
  if (a.IsLoopback() && !inet) abort();
  (void)a.IsAny();
  std::string text = a.ToString();
  SockAddr c = matcher::Canonical(a);
  if (c.port() != port) abort();
  (void)c.ToString();
  (void)matcher::KernelDestination(a, nullptr);
  (void)matcher::KernelDestination(a, &c);
  if (inet && (a.family() == AF_INET || !a.MappedV4())) {
    // Text round trip of a complete address: the same family, address and port.
    auto again = SockAddr::Parse(text);
    if (!again || again->port() != port || again->family() != a.family()) abort();
  }
}

}  // namespace
}  // namespace slipstream

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace slipstream;
  if (size < 1) return 0;
  size_t first = std::min<size_t>(data[0], size - 1);
  const uint8_t* rest = data + 1;
  SockAddr a = SockAddr::FromBytes({rest, first});
  SockAddr b = SockAddr::FromBytes({rest + first, size - 1 - first});
  Exercise(a);
  Exercise(b);
  TcpSocketInfo listener;
  listener.local = b;
  listener.v6only = (data[0] & 1) != 0;
  (void)matcher::ListenerCanReceive(listener, a);
  (void)matcher::DecideConnect({listener}, a, [](uint64_t) { return true; });
  matcher::ConnKey ka{1, a, b}, kb{1, b, a};
  if ((ka < kb) && (kb < ka)) abort();
  if ((ka == kb) != (!(ka < kb) && !(kb < ka))) abort();
  (void)ka.ToString();

  // The supervisor's copy from a tracee: any length the program passes, any bytes.
  static pid_t self = static_cast<pid_t>(syscall(SYS_gettid));
  auto target = tracer::TargetAccess::Borrow(self, -1);
  std::vector<uint8_t> memory(rest, rest + size - 1);
  int64_t addrlen = static_cast<int64_t>(first) - 8;  // negative lengths too
  auto copied = tracer::CopySockAddrIn(target, reinterpret_cast<uint64_t>(memory.data()), addrlen);
  if (copied) {
    if (addrlen < 0 || copied->len() != static_cast<socklen_t>(addrlen)) abort();
    if (addrlen > 0 &&
        std::memcmp(copied->get(), memory.data(), static_cast<size_t>(addrlen)) != 0) {
      abort();
    }
    Exercise(*copied);
  }

  std::string text(reinterpret_cast<const char*>(rest), size - 1);
  if (auto parsed = SockAddr::Parse(text)) {
    Exercise(*parsed);
    // What follows the last colon is the port: decimal digits, nothing else.
    std::string digits = text.substr(text.rfind(':') + 1);
    if (digits.empty() || digits.size() > 5 ||
        digits.find_first_not_of("0123456789") != std::string::npos ||
        std::stoi(digits) != parsed->port()) {
      abort();
    }
    auto again = SockAddr::Parse(parsed->ToString());
    if (!again || !(*again == *parsed)) abort();
  }
  return 0;
}
