// sock_diag (netlink) replies: diag_parse::WalkReplies and the message parsers, with any bytes as
// one received datagram. The kernel writes these; the fuzzer checks that no length in a reply can
// make the parser read outside the datagram.
//
// Input: byte 0: bit 0 dump or lookup, bits 1-2 the request sequence number; the rest: the
// datagram, copied to a buffer of exactly its size (ASan sees any read past it).
#include <cstring>
#include <memory>

#include "base/sock_diag.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace slipstream;
  if (size < 1) return 0;
  bool dump = (data[0] & 1) != 0;
  uint32_t seq = (data[0] >> 1) & 3;
  size_t len = size - 1;
  // operator new aligns to 16, as the receive buffer is aligned for nlmsghdr.
  std::unique_ptr<uint8_t[]> buf(new uint8_t[len == 0 ? 1 : len]);
  if (len > 0) std::memcpy(buf.get(), data + 1, len);
  int messages = 0;
  auto done = diag_parse::WalkReplies({buf.get(), len}, seq, dump, [&](const nlmsghdr* h) {
    ++messages;
    if (auto info = diag_parse::ParseInet(h)) {
      (void)info->local.ToString();
      (void)info->remote.port();
    }
    (void)diag_parse::ParseUnixInode(h);
    (void)diag_parse::ParseUnixPeer(h);
  });
  if (done && !*done && !dump && messages > 0) abort();  // a lookup ends with its one answer
  return 0;
}
