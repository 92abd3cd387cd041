#include "matcher/endpoint.h"

#include <cstdio>
#include <cstring>
#include <tuple>

namespace slipstream::matcher {

SockAddr Canonical(const SockAddr& addr) {
  auto v4 = addr.MappedV4();
  if (!v4) return addr;
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(addr.port());
  sin.sin_addr = *v4;
  return SockAddr(&sin, sizeof(sin));
}

std::string ConnKey::ToString() const {
  if (by_seq()) {
    char text[64];
    snprintf(text, sizeof(text), "tcp seq %08x/%08x", static_cast<unsigned>(seqs >> 32),
             static_cast<unsigned>(seqs));
    return text;
  }
  return local.ToString() + " -> " + remote.ToString() + " (netns " + std::to_string(netns) + ")";
}

bool operator==(const ConnKey& a, const ConnKey& b) {
  return a.seqs == b.seqs && a.netns == b.netns && Canonical(a.local) == Canonical(b.local) &&
         Canonical(a.remote) == Canonical(b.remote);
}

namespace {
std::string Bytes(const SockAddr& a) {
  SockAddr c = Canonical(a);
  return std::string(reinterpret_cast<const char*>(c.get()), c.len());
}
}  // namespace

bool operator<(const ConnKey& a, const ConnKey& b) {
  return std::make_tuple(a.seqs, a.netns, Bytes(a.local), Bytes(a.remote)) <
         std::make_tuple(b.seqs, b.netns, Bytes(b.local), Bytes(b.remote));
}

}  // namespace slipstream::matcher
