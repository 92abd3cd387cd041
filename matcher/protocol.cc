#include "matcher/protocol.h"

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
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)] = {};
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = body.empty() ? 1 : 2;
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
  }
  // The socket may be non-blocking (an Asio descriptor): a full buffer means the peer is busy, not
  // gone, so wait for room, boundedly.
  constexpr int kSendTimeoutMs = 5000;
  while (sendmsg(sock, &msg, MSG_NOSIGNAL) < 0) {
    if (errno == EINTR) continue;
    if (errno != EAGAIN || !wait) return Errno("matcher sendmsg");
    pollfd p{sock, POLLOUT, 0};
    int n = poll(&p, 1, kSendTimeoutMs);
    if (n == 0) return Error(ETIMEDOUT, "matcher sendmsg");
    if (n < 0 && errno != EINTR) return Errno("matcher poll");
  }
  return {};
}

Result<Message> ReceiveMessage(int sock, bool nonblocking) {
  Message m;
  // Bodies are small except status replies: receive into one scratch buffer per thread rather
  // than clearing kMaxBody bytes for every message.
  thread_local std::vector<uint8_t> scratch(kMaxBody);
  iovec iov[2] = {{&m.header, sizeof(m.header)}, {scratch.data(), scratch.size()}};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * (kMaxFds + 1))] = {};
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = 2;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  int flags = MSG_CMSG_CLOEXEC | (nonblocking ? MSG_DONTWAIT : 0);
  while ((n = recvmsg(sock, &msg, flags)) < 0) {
    if (errno != EINTR) return Errno("matcher recvmsg");
  }
  // Take ownership of every fd first, so that no rejection path below can leak one.
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      m.fds.emplace_back(fd);
    }
  }
  if (n == 0) return Error(0, "eof");
  if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || m.fds.size() > static_cast<size_t>(kMaxFds)) {
    return Error(EPROTO, "matcher message truncated or too many fds");
  }
  if (static_cast<size_t>(n) < sizeof(Header) || m.header.magic != kMagic ||
      m.header.version != kVersion ||
      m.header.body_len != static_cast<size_t>(n) - sizeof(Header)) {
    return Error(EPROTO, "malformed matcher message");
  }
  m.body.assign(scratch.begin(), scratch.begin() + m.header.body_len);
  return m;
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
  }
  return "unknown";
}

}  // namespace slipstream::matcher
