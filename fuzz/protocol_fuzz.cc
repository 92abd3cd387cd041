// The matcher protocol's decoder (ReceiveMessage) and body readers, fed one datagram over a real
// SOCK_SEQPACKET socketpair with up to 7 fds attached (kMaxFds is 2, kMaxPassedFds 4).
//
// Input: byte 0: bits 0-2 the number of fds to attach, bit 3 "pad the datagram past
// sizeof(Header) + kMaxBody" (a truncated message, beyond libFuzzer's -max_len); the rest: the
// datagram. Invariants: no crash, no fd leaked whether the message is accepted or rejected, an
// accepted message has a valid header, its body is exactly body_len bytes and it holds at most
// kMaxFds fds.
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "matcher/protocol.h"

namespace slipstream::matcher {
namespace {

struct Pair {
  int send = -1, receive = -1, null = -1, lowest = -1;
  Pair() {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) abort();
    // Room for an oversized datagram.
    int size = 1 << 20;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
    send = sv[0];
    receive = sv[1];
    null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    lowest = fuzz::LowestFreeFd();
  }
};

bool SendRaw(int sock, const std::vector<uint8_t>& bytes, int nfds, int fd) {
  iovec iov{const_cast<uint8_t*>(bytes.data()), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 8)] = {};
  if (nfds > 0) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    for (int i = 0; i < nfds; ++i) std::memcpy(CMSG_DATA(c) + i * sizeof(int), &fd, sizeof(int));
  }
  return sendmsg(sock, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0;
}

void ReadBodies(const Message& m) {
  (void)MsgTypeName(m.type());
  if (const auto* a = m.As<NetnsAddrs>()) {
    for (const SockAddr& s : NetnsAddrList(*a)) (void)s.ToString();
  }
  if (const auto* n = m.As<NetnsBody>()) {
    if (NetnsAddrList(n->addrs).size() > kMaxNetnsAddrs) abort();
  }
  if (const auto* p = m.As<PushBody>()) {
    SockAddr local, remote;
    if (PushAddrs(*p, &local, &remote)) {
      (void)local.ToString();
      (void)remote.port();
    }
  }
  if (const auto* r = m.As<RemoteListenerBody>()) {
    if (auto a = RemoteListenerAddr(*r)) (void)a->ToString();
  }
  if (const auto* e = m.As<ErrorBody>()) {
    if (ErrorText(*e).size() > sizeof(e->text)) abort();
  }
  if (const auto* c = m.As<ConnectedBody>()) (void)c->inode;
  if (const auto* i = m.As<InodeBody>()) (void)i->inode;
}

}  // namespace
}  // namespace slipstream::matcher

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace slipstream::matcher;
  static Pair pair;
  if (size < 1) return 0;
  int nfds = data[0] & 7;
  std::vector<uint8_t> bytes(data + 1, data + size);
  if (data[0] & 8) bytes.resize(sizeof(Header) + kMaxBody + 1 + bytes.size() % 64, 0);
  if (!SendRaw(pair.send, bytes, nfds, pair.null)) return 0;
  {
    auto m = ReceiveMessage(pair.receive, /*nonblocking=*/true);
    if (m) {
      if (m->header.magic != kMagic || m->header.version != kVersion ||
          m->body.size() != m->header.body_len || m->body.size() > kMaxBody ||
          m->fds.size() > static_cast<size_t>(kMaxFds) ||
          bytes.size() != sizeof(Header) + m->body.size()) {
        abort();
      }
      ReadBodies(*m);
    } else if (m.error().err == EAGAIN) {
      abort();  // a datagram was sent: there is always something to receive
    }
  }
  slipstream::fuzz::CheckNoFdLeak(pair.lowest, "ReceiveMessage");
  return 0;
}
