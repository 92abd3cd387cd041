#include "matcher/protocol.h"

#include "base/fd_passing.h"

#include <poll.h>

#include <cerrno>
#include <cstring>

namespace slipstream::matcher {

Status SendMessage(int sock, MsgType type, uint64_t seq, int32_t pid, std::span<const uint8_t> body,
                   std::span<const int> fds, bool wait) {
  if (body.size() > kMaxBody || fds.size() > static_cast<size_t>(kMaxFds)) {
    return Error(EMSGSIZE, "matcher send");
  }
  Header header;
  header.type = static_cast<uint16_t>(type);
  header.seq = seq;
  header.pid = pid;
  header.body_len = static_cast<uint32_t>(body.size());
  iovec iov[2] = {{&header, sizeof(header)}, {const_cast<uint8_t*>(body.data()), body.size()}};
  std::span<const iovec> data(iov, body.empty() ? 1 : 2);
  // The socket may be non-blocking (an Asio descriptor): a full buffer means the peer is busy, not
  // gone, so wait for room, boundedly.
  constexpr int kSendTimeoutMs = 5000;
  for (;;) {
    auto st = SendWithFds(sock, data, fds);
    if (st || st.error().err != EAGAIN || !wait) return st;
    pollfd p{sock, POLLOUT, 0};
    int n = poll(&p, 1, kSendTimeoutMs);
    if (n == 0) return Error(ETIMEDOUT, "matcher sendmsg");
    if (n < 0 && errno != EINTR) return Errno("matcher poll");
  }
}

Result<Message> ReceiveMessage(int sock, bool nonblocking) {
  Message m;
  // Bodies are small except status replies: receive into one scratch buffer per thread rather
  // than clearing kMaxBody bytes for every message.
  thread_local std::vector<uint8_t> scratch(kMaxBody);
  iovec iov[2] = {{&m.header, sizeof(m.header)}, {scratch.data(), scratch.size()}};
  auto r = ReceiveWithFds(sock, iov, nonblocking ? MSG_DONTWAIT : 0);
  if (!r) return tl::unexpected(r.error());
  m.fds = std::move(r->fds);  // owned from here on: no rejection below can leak one
  if (r->bytes == 0) {
    // recvmsg() returns 0 at EOF and for an empty datagram alike (SOCK_SEQPACKET keeps zero-length
    // records): only a peer that closed or shut down is EOF; an empty message is malformed.
    pollfd p{sock, POLLRDHUP, 0};
    if (m.fds.empty() && poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP))) {
      return Error(0, "eof");
    }
    return Error(EPROTO, "empty matcher message");
  }
  if ((r->msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || m.fds.size() > static_cast<size_t>(kMaxFds)) {
    return Error(EPROTO, "matcher message truncated or too many fds");
  }
  if (r->bytes < sizeof(Header) || m.header.magic != kMagic || m.header.version != kVersion ||
      m.header.body_len != r->bytes - sizeof(Header)) {
    return Error(EPROTO, "malformed matcher message");
  }
  m.body.assign(scratch.begin(), scratch.begin() + m.header.body_len);
  return m;
}

std::vector<SockAddr> NetnsAddrList(const NetnsAddrs& body) {
  std::vector<SockAddr> out;
  for (uint32_t i = 0; i < body.count && i < kMaxNetnsAddrs; ++i) {
    sockaddr_in6 sin6{};
    sin6.sin6_family = AF_INET6;
    sin6.sin6_addr = body.addrs[i];
    out.emplace_back(&sin6, sizeof(sin6));
  }
  return out;
}

bool PushAddrs(const PushBody& body, SockAddr* local, SockAddr* remote) {
  if (body.local_len > sizeof(sockaddr_storage) || body.remote_len > sizeof(sockaddr_storage)) {
    return false;
  }
  *local = SockAddr(&body.local, body.local_len);
  *remote = SockAddr(&body.remote, body.remote_len);
  return true;
}

std::optional<SockAddr> RemoteListenerAddr(const RemoteListenerBody& body) {
  if (body.addr_len > sizeof(sockaddr_storage)) return std::nullopt;
  return SockAddr(&body.addr, body.addr_len);
}

std::string ErrorText(const ErrorBody& body) {
  return std::string(body.text, strnlen(body.text, sizeof(body.text)));
}

const char* MsgTypeName(MsgType type) {
  switch (type) {
    case MsgType::kRegisterListener:
      return "register-listener";
    case MsgType::kIntent:
      return "intent";
    case MsgType::kConnected:
      return "connected";
    case MsgType::kAbort:
      return "abort";
    case MsgType::kClaim:
      return "claim";
    case MsgType::kInstalled:
      return "installed";
    case MsgType::kStatus:
      return "status";
    case MsgType::kDisown:
      return "disown";
    case MsgType::kRegistered:
      return "registered";
    case MsgType::kHello:
      return "hello";
    case MsgType::kHelloReply:
      return "hello-reply";
    case MsgType::kAdopt:
      return "adopt";
    case MsgType::kAdoptReply:
      return "adopt-reply";
    case MsgType::kSweep:
      return "sweep";
    case MsgType::kSwept:
      return "swept";
    case MsgType::kPeerPid:
      return "peer-pid";
    case MsgType::kGateLedger:
      return "gate-ledger";
    case MsgType::kCommitted:
      return "committed";
    case MsgType::kPeerPidReply:
      return "peer-pid-reply";
    case MsgType::kPeerGone:
      return "peer-gone";
    case MsgType::kPeerGoneReply:
      return "peer-gone-reply";
    case MsgType::kIntentReply:
      return "intent-reply";
    case MsgType::kClaimReply:
      return "claim-reply";
    case MsgType::kStatusReply:
      return "status-reply";
    case MsgType::kError:
      return "error";
    case MsgType::kRelease:
      return "release";
    case MsgType::kRelay:
      return "relay";
    case MsgType::kListener:
      return "listener";
    case MsgType::kPush:
      return "push";
    case MsgType::kNetns:
      return "netns";
    case MsgType::kRemoteListener:
      return "remote-listener";
    case MsgType::kEndClosed:
      return "end-closed";
  }
  return "unknown";
}

}  // namespace slipstream::matcher
