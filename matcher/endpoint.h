// ConnKey: the kernel identity of one end of a TCP connection, as the matcher pairs them.
//
// Within one network namespace the kernel keeps the established 4-tuple unique, so the end whose
// (netns, local, remote) is the mirror of another's is its peer: an exact pairing, no guessing.
#ifndef SLIPSTREAM_MATCHER_ENDPOINT_H_
#define SLIPSTREAM_MATCHER_ENDPOINT_H_

#include <cstdint>
#include <string>

#include "base/sockaddr.h"

namespace slipstream::matcher {

struct ConnKey {
  uint64_t netns = 0;  // inode of the socket's network namespace
  SockAddr local;
  SockAddr remote;
  // Paired by TCP sequence numbers instead (the client's send << 32 | receive, at byte 0): then
  // netns, local and remote are empty.
  uint64_t seqs = 0;
  static ConnKey BySeq(uint64_t seqs) { return ConnKey{0, SockAddr(), SockAddr(), seqs}; }
  bool by_seq() const { return seqs != 0; }

  ConnKey Mirror() const { return ConnKey{netns, remote, local}; }
  std::string ToString() const;
};

// Normalises v4-mapped IPv6 addresses to IPv4 so both spellings of one connection compare equal.
SockAddr Canonical(const SockAddr& addr);

bool operator==(const ConnKey& a, const ConnKey& b);
bool operator<(const ConnKey& a, const ConnKey& b);

}  // namespace slipstream::matcher

#endif  // SLIPSTREAM_MATCHER_ENDPOINT_H_
